using FastVideo.Models.Dits;
using FastVideo.Models.Layers;

namespace FastVideo.Train.Models.Hunyuan;

/// <summary>
/// Rough activations a trainable HunyuanVideo transformer keeps for backward on one micro-batch, for the dry-run
/// plan, for N video tokens and L = text_len - 1 text tokens: a dual-stream block about (N + L)·(12·D + 2·F) values
/// (two norms and modulations, q/k/v, attention output and projection, the MLP's input, hidden and activation) plus
/// the heads·(N + L)² attention probabilities of an eager attention; a single-stream block (N + L)·(8·D + 3·F) (norm,
/// q/k/v, attention output, MLP hidden and activation, the concatenation, projection) plus the probabilities. With
/// activation checkpointing a checkpointed block keeps its input ((N + L)·D) instead and backward holds one block's
/// activations while it recomputes; ops keeps about half of a block's values (its attention output and every other
/// linear output). The refiner (L tokens, 2 layers) is left out. Null when the data shape is not set.
/// </summary>
public static class HunyuanActivations
{
    public static long? Estimate(ActivationQuery q)
    {
        var c = HunyuanVideoTransformerConfig.FromJson(q.TransformerConfig, "transformer config");
        var d = q.Training.Data;
        if (d.NumLatentT <= 0 || d.NumHeight <= 0 || d.NumWidth <= 0) return null;
        int s = Math.Max(1, q.Vae.SpatialCompressionRatio);   // num_height/num_width are in pixels
        long batch = d.TrainBatchSize;
        long image = (long)(d.NumLatentT / c.PatchSizeT) * (d.NumHeight / s / c.PatchSize) * (d.NumWidth / s / c.PatchSize);
        long text = HunyuanModel.Family.Defaults.TextLen - 1;   // the family's text_len: small next to the video tokens
        long n = image + text;
        long dim = c.InnerDim, f = c.MlpDim;
        long probabilities = (long)c.NumAttentionHeads * n * n;
        long dual = n * (12 * dim + 2 * f) + probabilities;
        long single = n * (8 * dim + 3 * f) + probabilities;
        var perBlock = Enumerable.Repeat(dual, c.NumLayers).Concat(Enumerable.Repeat(single, c.NumSingleLayers)).ToList();
        long largest = perBlock.Count == 0 ? 0 : perBlock.Max();
        long values = CheckpointingPolicy.FromRecipe(q.Checkpointing) switch
        {
            null => perBlock.Sum(),
            { Mode: CheckpointingMode.Ops } => perBlock.Sum(v => n * dim + (v - probabilities) / 2) + largest,
            var p => perBlock.Select((v, i) => p.Checkpoints(i) ? n * dim : v).Sum() + largest,
        };
        return values * batch * q.BytesPerValue;
    }
}

using FastVideo.Models.Dits;
using FastVideo.Models.Layers;

namespace FastVideo.Train.Models.Wan;

/// <summary>
/// Rough activations a trainable Wan transformer keeps for backward on one micro-batch, for the dry-run plan: per
/// layer about N·(14·D + 2·F) values (norms, q/k/v/out, cross-attention, FFN) plus the heads·N² attention
/// probabilities of an eager attention, for N video tokens (text-sized terms are left out). With activation
/// checkpointing a checkpointed layer keeps its input (N·D) instead, and backward holds one layer's activations at a
/// time while it recomputes: full = L·N·D + one layer; block_skip (n) = the layers it skips in full plus the
/// checkpointed ones' inputs plus one layer; ops = L·N·(6·D + F) (input, self- and cross-attention q and output,
/// self-attention v, FFN up-projection) plus one layer. Null when the data shape (num_latent_t, num_height,
/// num_width) is not set.
/// </summary>
public static class WanActivations
{
    public static long? Estimate(ActivationQuery q)
    {
        var c = WanTransformerConfig.FromJson(q.TransformerConfig, "transformer config");
        var d = q.Training.Data;
        if (d.NumLatentT <= 0 || d.NumHeight <= 0 || d.NumWidth <= 0) return null;
        int s = Math.Max(1, q.Vae.SpatialCompressionRatio);   // num_height/num_width are in pixels
        long tokens = (long)d.TrainBatchSize * (d.NumLatentT / c.PatchSize[0]) * (d.NumHeight / s / c.PatchSize[1]) * (d.NumWidth / s / c.PatchSize[2]);
        long perLayer = tokens * (14L * c.InnerDim + 2L * c.FfnDim) + (long)c.NumAttentionHeads * tokens * tokens / Math.Max(1, d.TrainBatchSize);
        long layers = c.NumLayers;
        long values = CheckpointingPolicy.FromRecipe(q.Checkpointing) switch
        {
            null => perLayer * layers,
            { Mode: CheckpointingMode.Ops } => layers * tokens * (6L * c.InnerDim + c.FfnDim) + perLayer,
            var p => Enumerable.Range(0, c.NumLayers).Sum(i => p.Checkpoints(i) ? tokens * c.InnerDim : perLayer) + perLayer,
        };
        return values * q.BytesPerValue;
    }
}

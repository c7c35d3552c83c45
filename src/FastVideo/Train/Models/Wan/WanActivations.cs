using FastVideo.Models.Dits;

namespace FastVideo.Train.Models.Wan;

/// <summary>
/// Rough activations a trainable Wan transformer keeps for backward on one micro-batch, for the dry-run plan: per
/// layer about N·(14·D + 2·F) values (norms, q/k/v/out, cross-attention, FFN) plus the heads·N² attention
/// probabilities of an eager attention. Null when the data shape (num_latent_t, num_height, num_width) is not set.
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
        return perLayer * c.NumLayers * q.BytesPerValue;
    }
}

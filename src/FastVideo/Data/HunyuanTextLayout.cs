using static TorchSharp.torch;

namespace FastVideo.Data;

/// <summary>
/// FastVideo's HunyuanVideo layout of <c>text_embedding</c> (reference spec 2.1): row 0 holds the pooled CLIP vector
/// zero-padded to the LLaMA width, rows 1.. the LLaMA token embeddings. The loader pads the rows to text_len with a
/// mask like any text; the hunyuan plugin splits them here into its two channels.
/// </summary>
public static class HunyuanTextLayout
{
    /// <summary>
    /// One row's text_embedding [1 + L, D] (row-major floats) from <paramref name="tokens"/> [L, D] and
    /// <paramref name="pooled"/> [P], P &lt;= D.
    /// </summary>
    public static float[] Pack(ReadOnlySpan<float> tokens, int width, ReadOnlySpan<float> pooled)
    {
        if (pooled.Length > width) throw new ArgumentException($"the pooled vector ({pooled.Length}) is wider than the token embeddings ({width})");
        if (tokens.Length % width != 0) throw new ArgumentException($"token embeddings of {tokens.Length} values are not rows of width {width}");
        var packed = new float[width + tokens.Length];
        pooled.CopyTo(packed);
        tokens.CopyTo(packed.AsSpan(width));
        return packed;
    }

    /// <summary>
    /// Splits packed text [B, 1 + L, D] with its mask [B, 1 + L] (null: every row) into the <see cref="Conditioning.Text"/>
    /// channel (tokens [B, L, D], mask [B, L]) and the <see cref="Conditioning.PooledText"/> channel ([B, P], the first
    /// <paramref name="pooledDim"/> values of row 0). Row 0 must be zero beyond them: text that was not written this
    /// way is refused, naming <paramref name="what"/>. New tensors.
    /// </summary>
    public static Conditioning Split(Tensor packed, Tensor? mask, int pooledDim, string what)
    {
        if (packed.dim() != 3 || packed.shape[1] < 2 || packed.shape[2] < pooledDim)
            throw new UserError($"{what}: [{string.Join(", ", packed.shape)}] is not HunyuanVideo text [B, 1 + L, D] (a pooled row of at least " +
                                $"{pooledDim} values, then L >= 1 token rows)");
        using var scope = NewDisposeScope();
        long b = packed.shape[0], rows = packed.shape[1], d = packed.shape[2];
        var row0 = packed.select(1, 0);   // [B, D]
        if (d > pooledDim)
        {
            var tail = row0.narrow(1, pooledDim, d - pooledDim).abs().amax([1L]);   // [B]
            var bad = tail.gt(0).nonzero();
            if (bad.shape[0] > 0)
            {
                long i = bad[0, 0].item<long>();
                throw new UserError($"{what}: row 0 of sample {i} has non-zero values after its first {pooledDim} (max {tail[i].item<float>():G4}): " +
                                    $"hunyuan text is [pooled CLIP vector zero-padded to {d}, LLaMA tokens...] (FastVideo's HunyuanVideo preprocessing; " +
                                    "the synthetic dataset writes it with --text-layout hunyuan)");
            }
        }
        var tokens = packed.narrow(1, 1, rows - 1).contiguous();
        var tokenMask = (mask ?? ones(b, rows)).narrow(1, 1, rows - 1).contiguous();
        var pooled = row0.narrow(1, 0, pooledDim).contiguous();
        return new Conditioning([
            new(Conditioning.Text, new ConditioningChannel(tokens, tokenMask)),
            new(Conditioning.PooledText, new ConditioningChannel(pooled)),
        ]).MoveToOuterDisposeScope();
    }
}

using static TorchSharp.torch;

namespace FastVideo.Distributed;

/// <summary>
/// Random draws in a data-parallel run. Every rank's method generator starts from the recipe seed and draws what one
/// process training on the global batch would draw: per-sample tensors (noise, timesteps) for all
/// <c>ranks x batch</c> samples, of which each rank keeps the rows of the samples its loader shard holds (rows
/// <c>rank, rank + ranks, ...</c>, as the sampler deals them); draws not per sample (a step's denoising index) are
/// the same on every rank, as in one process. So N ranks of batch B train exactly like one process of batch N x B,
/// the generators stay equal on every rank (the weight check compares them too), and one process is unchanged.
/// A method draws a per-sample tensor as <c>Local(randn([Global(b), ...], generator))</c>.
/// </summary>
public static class DataParallelDraws
{
    /// <summary>The number of samples to draw for: the local batch times the ranks of <see cref="World.Current"/>.</summary>
    public static long Global(long localBatch) => Global(localBatch, World.Current);

    /// <summary>This rank's rows of a per-sample draw for the global batch ([ranks x b, ...] -> [b, ...]).</summary>
    public static Tensor Local(Tensor global) => Local(global, World.Current);

    /// <summary>The global shape of a per-sample draw whose local shape is <paramref name="localShape"/>.</summary>
    public static long[] Global(long[] localShape) => [Global(localShape[0]), .. localShape[1..]];

    public static long Global(long localBatch, ProcessGroup group) => localBatch * group.Size;

    public static long[] Global(long[] localShape, ProcessGroup group) => [Global(localShape[0], group), .. localShape[1..]];

    public static Tensor Local(Tensor global, ProcessGroup group)
    {
        if (!group.IsDistributed) return global;
        long n = group.Size, g = global.shape[0];
        if (g % n != 0) throw new ArgumentException($"a per-sample draw of {g} rows cannot be dealt to {n} ranks");
        using var scope = NewDisposeScope();
        // Row i*n + r of the global draw is sample i of rank r.
        return global.unflatten(0, [g / n, n]).select(1, group.Rank).contiguous().MoveToOuterDisposeScope();
    }
}

using System.Globalization;
using FastVideo.Distributed;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using static TorchSharp.torch;

namespace FastVideo.Train;

/// <summary>
/// What a training step of a multi-process (data-parallel) run adds to a one-process step, with the collectives in
/// a fixed order on every rank: after the micro-batches, agree that every rank got through them (<c>time/sync</c>:
/// mostly waiting for the slowest rank) and average the gradients (<c>time/allreduce</c>), before clipping and the
/// optimizer step; after the optimizer step, average the step's losses and
/// metrics and, every <c>weight_check_steps</c>, compare a checksum of every rank's weights and generators. In one
/// process every call is free and changes nothing.
/// </summary>
internal sealed class DataParallelSync : IDisposable
{
    private readonly GradientAverager _averager;

    public DataParallelSync(ProcessGroup group, int weightCheckSteps)
    {
        Group = group;
        WeightCheckSteps = weightCheckSteps;
        _averager = new GradientAverager(group);
    }

    public ProcessGroup Group { get; }
    public int WeightCheckSteps { get; }
    public bool IsMain => Group.IsMain;

    /// <summary>
    /// Ends the micro-batches of <paramref name="step"/> (waiting for every rank): if any rank failed
    /// (<paramref name="failure"/>), every rank throws (<see cref="ProcessGroup.Agree"/>); the ranks must hold
    /// gradients for the same parameters. Returns the gradients of the optimizers stepping now.
    /// </summary>
    public List<Tensor> AgreeOnGradients(TrainingMethod method, int step, Exception? failure)
    {
        var grads = method.GetOptimizers(step).SelectMany(o => o.Optimizer.Parameters)
            .Select(p => p.Param.grad).Where(g => g is not null).Select(g => g!).ToList();
        var layout = Group.Agree(failure, grads.Count, grads.Sum(g => g.numel()));
        if (layout.Any(l => l[0] != layout[0][0] || l[1] != layout[0][1]))
            throw Everywhere(new InvalidOperationException($"step {step}: the processes hold gradients for different parameters (" +
                string.Join(", ", layout.Select((l, r) => $"rank {r}: {l[0]} tensors, {l[1]} values")) + "); the method's step differs between ranks"));
        return grads;
    }

    /// <summary>Averages <paramref name="grads"/> over the ranks, in place (the same list on every rank).</summary>
    public void AverageGradients(IReadOnlyList<Tensor> grads) => _averager.Average(grads);

    /// <summary>Bytes and MPI calls of the last gradient average.</summary>
    public (long Bytes, int Calls) LastAverage => (_averager.LastBytes, _averager.LastCalls);

    /// <summary>
    /// Replaces the values of <paramref name="keys"/> in <paramref name="log"/> by their mean over the ranks (summed
    /// in rank order, so every rank gets the same number) and, when <paramref name="step"/> is due (or is null: the
    /// start), compares the weight checksums; a mismatch stops every rank.
    /// </summary>
    public void AverageMetrics(TrainingMethod method, int? step, StepLog? log, IReadOnlyList<string> keys, string? lastCheckpoint)
    {
        if (!Group.IsDistributed) return;
        bool check = step is null || (WeightCheckSteps > 0 && step % WeightCheckSteps == 0);
        var mine = new long[keys.Count + 1];
        for (int i = 0; i < keys.Count; i++) mine[i] = BitConverter.DoubleToInt64Bits(log!.Values[keys[i]]);
        mine[^1] = check ? (long)Checksum(method) : 0;
        var all = Group.AllGather(mine);
        for (int i = 0; i < keys.Count; i++)
        {
            double sum = 0;
            foreach (var rank in all) sum += BitConverter.Int64BitsToDouble(rank[i]);
            log!.Values[keys[i]] = sum / Group.Size;
        }
        if (check && all.Any(r => r[^1] != all[0][^1]))
            throw Everywhere(new WeightsDivergedError(step, all.Select(r => (ulong)r[^1]).ToList(), lastCheckpoint));
    }

    /// <summary>Every trainable weight of the method's roles and every generator state, in a fixed order.</summary>
    public static ulong Checksum(TrainingMethod method)
    {
        using var scope = NewDisposeScope();
        var tensors = method.TrainableRoles.SelectMany(m => m.Transformer.parameters().Where(p => p.requires_grad).Cast<Tensor>())
            .Concat(method.Generators.OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => g.Value.get_state()));
        return WeightChecksum.Of(tensors);
    }

    /// <summary>
    /// A failure every rank raises at the same point from the same numbers: rank 0 reports it; the others stop
    /// quietly with its exit code (they all know, so they end normally).
    /// </summary>
    public Exception Everywhere(Exception e)
    {
        if (!Group.IsDistributed) return e;
        if (!Group.IsMain) return new PeerFailedError(Group.Ranks[0], ExitCodes.For(e));
        Agreement.MarkAgreed(e);
        return e;
    }

    public void Dispose() => _averager.Dispose();
}

/// <summary>The processes of a data-parallel run no longer hold the same weights (or generator states).</summary>
public sealed class WeightsDivergedError : UserError
{
    public WeightsDivergedError(int? step, IReadOnlyList<ulong> checksums, string? lastCheckpoint)
        : base($"{(step is null ? "at the start" : $"step {step}")}: the processes hold different weights or generator states " +
               $"(checksums: {string.Join(", ", checksums.Select((c, r) => $"rank {r} {c.ToString("x16", CultureInfo.InvariantCulture)}"))}); the run stopped. " +
               (lastCheckpoint is null ? "No checkpoint was written." : $"The last checkpoint is '{lastCheckpoint}' (rank 0's weights; resuming gives every process those)."))
    {
    }

    public override int ExitCode => ExitCodes.Distributed;
}

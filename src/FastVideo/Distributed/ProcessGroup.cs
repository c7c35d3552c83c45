using static TorchSharp.torch;

namespace FastVideo.Distributed;

/// <summary>One process of a run: its rank, process id and host (what a user needs to find it).</summary>
public sealed record RankInfo(int Rank, long Pid, string Host)
{
    public override string ToString() => $"rank {Rank} (pid {Pid} on {Host})";
}

/// <summary>
/// The processes of one training run and the collectives the trainer uses: an in-place sum of memory, a gather of
/// small byte records and a broadcast. <see cref="Single"/> is the one-process run, whose collectives are identities;
/// <see cref="MpiProcessGroup"/> runs them through MPI.
/// </summary>
public abstract class ProcessGroup
{
    public static ProcessGroup Single { get; } = new SingleProcessGroup();

    public abstract int Rank { get; }
    public abstract int Size { get; }
    public bool IsDistributed => Size > 1;
    /// <summary>Rank 0: the process that writes the run folder (metrics, TensorBoard, checkpoints) and prints.</summary>
    public bool IsMain => Rank == 0;
    /// <summary>Every process, by rank.</summary>
    public abstract IReadOnlyList<RankInfo> Ranks { get; }

    /// <summary>Sums <paramref name="count"/> elements of <paramref name="dtype"/> (float32, float64 or int64) at
    /// <paramref name="data"/> over every rank, in place: afterwards every rank holds the same sums.</summary>
    public abstract unsafe void AllReduceSum(void* data, long count, ScalarType dtype);

    /// <summary>Every rank's <paramref name="mine"/> (all of one length), concatenated by rank.</summary>
    public abstract byte[] AllGather(ReadOnlySpan<byte> mine);

    /// <summary>Root's bytes on every rank (the others pass anything, e.g. null).</summary>
    public abstract byte[] Broadcast(byte[]? fromRoot, int root = 0);

    public abstract void Barrier();

    /// <summary>The long values of every rank: [rank][i].</summary>
    public long[][] AllGather(long[] mine)
    {
        var bytes = AllGather(System.Runtime.InteropServices.MemoryMarshal.AsBytes(mine.AsSpan()));
        var all = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(bytes).ToArray();
        return Enumerable.Range(0, Size).Select(r => all.AsSpan(r * mine.Length, mine.Length).ToArray()).ToArray();
    }

    /// <summary>
    /// Ends a stretch of work that any rank may fail on its own (rank 0's file writes, one rank's data): each rank
    /// passes its failure or null, and if any failed every rank throws: the failing rank its own error, the others a
    /// quiet <see cref="PeerFailedError"/> naming the first failing rank, all with that rank's exit code. With
    /// <paramref name="extra"/>, also returns every rank's extra values ([rank][i]) gathered in the same call.
    /// </summary>
    public long[][] Agree(Exception? local, params long[] extra)
    {
        if (!IsDistributed)
        {
            if (local is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(local);
            return [extra];
        }
        var all = AllGather([local is null ? 0 : ExitCodes.For(local), .. extra]);
        int failed = Array.FindIndex(all, a => a[0] != 0);
        if (failed < 0) return all.Select(a => a[1..]).ToArray();
        if (local is null) throw new PeerFailedError(Ranks[failed], (int)all[failed][0]);
        Agreement.MarkAgreed(local);
        System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(local);
        return null!;
    }

    public override string ToString() => IsDistributed ? $"{Size} processes" : "one process";
}

internal sealed class SingleProcessGroup : ProcessGroup
{
    private readonly RankInfo[] _ranks = [new(0, Environment.ProcessId, Environment.MachineName)];
    public override int Rank => 0;
    public override int Size => 1;
    public override IReadOnlyList<RankInfo> Ranks => _ranks;
    public override unsafe void AllReduceSum(void* data, long count, ScalarType dtype) { }
    public override byte[] AllGather(ReadOnlySpan<byte> mine) => mine.ToArray();
    public override byte[] Broadcast(byte[]? fromRoot, int root = 0) => fromRoot ?? [];
    public override void Barrier() { }
}

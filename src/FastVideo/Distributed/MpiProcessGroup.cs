using System.Text;
using static TorchSharp.torch;

namespace FastVideo.Distributed;

/// <summary>
/// MPI_COMM_WORLD of an initialised MPI run. Collectives go straight to MPICH on the caller's memory (no managed
/// copies); counts above MPI's int range are sent in pieces. Only the training thread calls it (MPI_THREAD_FUNNELED).
/// </summary>
public sealed class MpiProcessGroup : ProcessGroup
{
    private const int HostBytes = 120;
    private readonly RankInfo[] _ranks;

    internal MpiProcessGroup()
    {
        Rank = Mpi.Rank;
        Size = Mpi.Size;
        // Every rank's pid and host, so messages can name the process (and the trainer can count ranks per host).
        var mine = new byte[8 + HostBytes];
        BitConverter.TryWriteBytes(mine, (long)Environment.ProcessId);
        var host = Encoding.UTF8.GetBytes(Environment.MachineName);
        host.AsSpan(0, Math.Min(host.Length, HostBytes)).CopyTo(mine.AsSpan(8));
        var all = AllGather(mine);
        _ranks = Enumerable.Range(0, Size).Select(r =>
        {
            var rec = all.AsSpan(r * mine.Length, mine.Length);
            return new RankInfo(r, BitConverter.ToInt64(rec[..8]), Encoding.UTF8.GetString(rec[8..]).TrimEnd('\0'));
        }).ToArray();
    }

    public override int Rank { get; }
    public override int Size { get; }
    public override IReadOnlyList<RankInfo> Ranks => _ranks;

    public override unsafe void AllReduceSum(void* data, long count, ScalarType dtype)
    {
        var (type, size) = dtype switch
        {
            ScalarType.Float32 => (Mpi.Float, 4),
            ScalarType.Float64 => (Mpi.Double, 8),
            ScalarType.Int64 => (Mpi.Int64, 8),
            _ => throw new ArgumentException($"all-reduce of {dtype} is not supported (float32, float64, int64)"),
        };
        const int piece = 1 << 30;
        for (long done = 0; done < count; done += piece)
            Mpi.AllReduceSumInPlace((byte*)data + done * size, (int)Math.Min(piece, count - done), type);
    }

    public override unsafe byte[] AllGather(ReadOnlySpan<byte> mine)
    {
        var all = new byte[mine.Length * Size];
        fixed (byte* s = mine) fixed (byte* r = all) Mpi.AllGather(s, mine.Length, Mpi.Byte, r);
        return all;
    }

    public override unsafe byte[] Broadcast(byte[]? fromRoot, int root = 0)
    {
        long length = Rank == root ? fromRoot!.Length : 0;
        Mpi.Broadcast(&length, 1, Mpi.Int64, root);
        var data = Rank == root ? fromRoot! : new byte[length];
        if (length > 0) fixed (byte* p = data) Mpi.Broadcast(p, (int)length, Mpi.Byte, root);
        return data;
    }

    public override void Barrier() => Mpi.Barrier();
}

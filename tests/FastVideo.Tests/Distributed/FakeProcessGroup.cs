using FastVideo.Distributed;
using static TorchSharp.torch;

namespace FastVideo.Tests.Distributed;

/// <summary>
/// Rank <see cref="Rank"/> of a pretend run of <see cref="Size"/> processes inside one process: its collectives act
/// as if every other rank held <see cref="Peer"/> of this rank's values (sum = own + (size - 1) x peer), and a gather
/// returns <see cref="Gathered"/> for the other ranks (default: this rank's own record).
/// </summary>
internal sealed class FakeProcessGroup : ProcessGroup
{
    public FakeProcessGroup(int rank, int size) { Rank = rank; Size = size; }

    public override int Rank { get; }
    public override int Size { get; }
    public override IReadOnlyList<RankInfo> Ranks => Enumerable.Range(0, Size).Select(r => new RankInfo(r, 1000 + r, "host")).ToList();

    /// <summary>What another rank holds for a value this rank holds (float32 sums only).</summary>
    public Func<float, float> Peer { get; init; } = v => v;
    /// <summary>Another rank's record for this rank's record in a gather.</summary>
    public Func<int, byte[], byte[]> Gathered { get; init; } = (rank, mine) => mine;
    public int Calls { get; private set; }

    public override unsafe void AllReduceSum(void* data, long count, ScalarType dtype)
    {
        Calls++;
        if (dtype != ScalarType.Float32) throw new NotSupportedException();
        var p = (float*)data;
        for (long i = 0; i < count; i++) p[i] += (Size - 1) * Peer(p[i]);
    }

    public override byte[] AllGather(ReadOnlySpan<byte> mine)
    {
        var own = mine.ToArray();
        return Enumerable.Range(0, Size).SelectMany(r => r == Rank ? own : Gathered(r, own)).ToArray();
    }

    public override byte[] Broadcast(byte[]? fromRoot, int root = 0) => fromRoot ?? [];
    public override void Barrier() { }
}

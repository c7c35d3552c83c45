using FastVideo.Models.Layers;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Models;

/// <summary>
/// The streaming KV cache behind <see cref="IKvCache"/>: what a chunk reads for each window, rolling, growing, reset and
/// snapshots. Keys hold their token position and values its negative, so a read shows which tokens it returned.
/// </summary>
public class KvCacheTests
{
    private static (Tensor Keys, Tensor Values) Chunk(long start, long n, int batch = 1)
    {
        var positions = arange(start, start + n, dtype: ScalarType.Float32).reshape(1, 1, n, 1).expand(batch, 2, n, 3).contiguous();
        return (positions, -positions);
    }

    private static long[] Tokens((Tensor Keys, Tensor Values)? read)
    {
        if (read is not { } r) return [];
        Assert.True(r.Values.equal(-r.Keys).all().item<bool>(), "values do not belong to their keys");
        return r.Keys.select(0, 0).select(0, 0).select(-1, 0).data<float>().Select(v => (long)v).ToArray();
    }

    private static void Write(IKvCache cache, long start, long n)
    {
        var (k, v) = Chunk(start, n);
        cache.Append(start, k, v);
    }

    private static long[] Range(long a, long b) => Enumerable.Range((int)a, (int)(b - a)).Select(i => (long)i).ToArray();

    [Fact]
    public void GlobalWindowReadsEveryEarlierTokenAndGrows()
    {
        using var scope = NewDisposeScope();
        using var cache = new KvCache(AttentionWindow.Global, capacityTokens: 3);
        Assert.Null(cache.ReadWindow(0, 2));
        for (long s = 0; s < 10; s += 2)
        {
            Assert.Equal(Range(0, s), Tokens(cache.ReadWindow(s, s + 2)));
            Write(cache, s, 2);
        }
        Assert.Equal(10, cache.End);
        Assert.True(cache.Capacity >= 10);
        Assert.Equal(Range(0, 10), Tokens(cache.ReadWindow(10, 12)));
    }

    [Fact]
    public void LocalWindowWithSinkRollsWithinItsCapacity()
    {
        using var scope = NewDisposeScope();
        var window = new AttentionWindow(SinkTokens: 2, RecentTokens: 4);
        using var cache = new KvCache(window, capacityTokens: 6);
        for (long s = 0; s < 20; s += 2)
        {
            // The chunk [s, s+2) sees tokens 0, 1 and the 4 - 2 tokens before it (all earlier tokens while they fit).
            long[] expected = s + 2 <= 6 ? Range(0, s) : [0, 1, .. Range(s - 2, s)];
            Assert.Equal(expected, Tokens(cache.ReadWindow(s, s + 2)));
            Write(cache, s, 2);
            Assert.Equal(6, cache.Capacity);
        }
        var e = Assert.Throws<InvalidOperationException>(() => Write(cache, 20, 5));
        Assert.Contains("longer than the window's 4 recent tokens", e.Message);
    }

    [Fact]
    public void WritingAChunkAgainReplacesItAndWhatFollowed()
    {
        using var scope = NewDisposeScope();
        using var cache = new KvCache(new AttentionWindow(0, 4), capacityTokens: 4);
        for (long s = 0; s < 8; s += 2) Write(cache, s, 2);
        var (k, v) = Chunk(100, 2);
        cache.Append(6, k, v);   // the last chunk again, other values
        Assert.Equal(8, cache.End);
        Assert.Equal(new long[] { 100, 101 }, Tokens(cache.ReadWindow(8, 10)));
        (k, v) = Chunk(200, 2);
        cache.Append(4, k, v);   // an earlier chunk still in the window: the later one is dropped
        Assert.Equal(6, cache.End);
        Assert.Equal(new long[] { 200, 201 }, Tokens(cache.ReadWindow(6, 8)));
        var e = Assert.Throws<InvalidOperationException>(() => Write(cache, 0, 2));
        Assert.Contains("the window rolled past token", e.Message);
        e = Assert.Throws<InvalidOperationException>(() => Write(cache, 8, 2));
        Assert.Contains("leaves a gap after the 6 tokens written", e.Message);
    }

    [Fact]
    public void ResetForgetsEveryToken()
    {
        using var scope = NewDisposeScope();
        using var cache = new KvCache(AttentionWindow.Global, capacityTokens: 8);
        for (long s = 0; s < 6; s += 2) Write(cache, s, 2);
        cache.Reset();
        Assert.Equal(0, cache.End);
        Assert.Null(cache.ReadWindow(0, 2));
        Assert.Throws<InvalidOperationException>(() => cache.ReadWindow(2, 4));
        var (k, v) = Chunk(50, 2);
        cache.Append(0, k, v);
        Assert.Equal(new long[] { 50, 51 }, Tokens(cache.ReadWindow(2, 4)));
    }

    [Fact]
    public void ABatchOfAnotherSizeIsRefused()
    {
        using var scope = NewDisposeScope();
        using var cache = new KvCache(AttentionWindow.Global, capacityTokens: 8);
        Write(cache, 0, 2);
        var (k, v) = Chunk(2, 2, batch: 3);
        var e = Assert.Throws<InvalidOperationException>(() => cache.Append(2, k, v));
        Assert.Contains("rebuild it for another batch size", e.Message);
    }

    [Fact]
    public void SnapshotReadsWhatTheCacheHeldUntilTheCacheOverwritesIt()
    {
        using var scope = NewDisposeScope();
        using var cache = new KvCache(AttentionWindow.Global, capacityTokens: 16);
        for (long s = 0; s < 4; s += 2) Write(cache, s, 2);
        using var snapshot = cache.Snapshot();

        // Its appends change only its own end; the cache moving on (appending) does not touch what it reads.
        Write(snapshot, 4, 2);
        Assert.Equal(4, cache.End);
        Write(cache, 4, 2);
        Write(cache, 6, 2);
        Assert.Equal(Range(0, 4), Tokens(snapshot.ReadWindow(4, 6)));
        var e = Assert.Throws<InvalidOperationException>(() => snapshot.ReadWindow(6, 8));
        Assert.Contains("holds the 4 tokens cached when it was taken", e.Message);

        // Rewriting from token 2 overwrites what it reads: an error, not other keys.
        Write(cache, 2, 2);
        Assert.Equal(new long[] { 0, 1 }, Tokens(snapshot.ReadWindow(2, 4)));
        e = Assert.Throws<InvalidOperationException>(() => snapshot.ReadWindow(4, 6));
        Assert.Contains("overwritten by the cache since the snapshot was taken", e.Message);
    }

    [Fact]
    public void SnapshotOutlivesGrowthAndDisposalOfItsCache()
    {
        using var scope = NewDisposeScope();
        var cache = new KvCache(AttentionWindow.Global, capacityTokens: 4);
        for (long s = 0; s < 4; s += 2) Write(cache, s, 2);
        using var snapshot = cache.Snapshot();
        for (long s = 4; s < 12; s += 2) Write(cache, s, 2);   // grows: new buffers, the old ones stay the snapshot's
        Write(cache, 0, 2);                                    // writes the new buffers only
        cache.Dispose();
        Assert.Equal(Range(0, 4), Tokens(snapshot.ReadWindow(4, 6)));
    }

    [Fact]
    public void SnapshotOfARollingCacheFailsOnceTheWindowMoves()
    {
        using var scope = NewDisposeScope();
        using var cache = new KvCache(new AttentionWindow(0, 4), capacityTokens: 4);
        for (long s = 0; s < 4; s += 2) Write(cache, s, 2);
        using var snapshot = cache.Snapshot();
        Assert.Equal(Range(0, 4), Tokens(snapshot.ReadWindow(4, 4)));
        Write(cache, 4, 2);   // evicts tokens 0, 1 and moves 2, 3 down
        var e = Assert.Throws<InvalidOperationException>(() => snapshot.ReadWindow(4, 4));
        Assert.Contains("size the cache for the whole sequence", e.Message);
    }
}

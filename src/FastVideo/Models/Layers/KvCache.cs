using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>
/// An <see cref="IKvCache"/> in one key and one value buffer [B, H, slots, d], allocated on the first write. Held
/// tokens are a prefix [0, prefix) (the sink, once something has been evicted) and a run [runStart, end), stored at
/// slots [0, prefix) and [prefix, prefix + end - runStart). A write that does not fit first evicts the tokens no
/// later chunk can see (a local window rolls, as upstream's cache does), then grows the buffers: a global window never
/// evicts, so its cache grows with the sequence instead of truncating it.
/// </summary>
public sealed class KvCache : IKvCache
{
    private readonly AttentionWindow _window;
    private long _capacity;
    private Tensor? _keys, _values;
    private long _prefix, _runStart, _end;

    // A snapshot shares the buffers (aliases) and serves reads up to its frozen end while the buffers still hold them:
    // the cache (its root) tells the live snapshots of its current buffers (same generation) which slots it overwrites.
    private readonly KvCache? _root;
    private readonly long _frozenEnd;
    private long _generation;
    private long _overwrittenFrom = long.MaxValue;
    private readonly List<WeakReference<KvCache>> _snapshots = [];
    private bool IsSnapshot => _root is not null;

    /// <param name="window">What a chunk sees.</param>
    /// <param name="capacityTokens">Slots allocated on the first write (more are added when needed).</param>
    public KvCache(AttentionWindow window, long capacityTokens)
    {
        if (capacityTokens < 1) throw new ArgumentOutOfRangeException(nameof(capacityTokens), "a KV cache needs at least one slot");
        _window = window;
        _capacity = capacityTokens;
    }

    private KvCache(KvCache source)
    {
        _window = source._window;
        _capacity = source._capacity;
        _keys = source._keys?.alias().DetachFromDisposeScope();
        _values = source._values?.alias().DetachFromDisposeScope();
        (_prefix, _runStart, _end, _generation, _overwrittenFrom) = (source._prefix, source._runStart, source._end, source._generation, source._overwrittenFrom);
        _root = source._root ?? source;
        _frozenEnd = source.IsSnapshot ? Math.Min(source._frozenEnd, source._end) : source._end;
    }

    public long End => _end;

    public long Capacity => _keys is null ? _capacity : _keys.shape[2];

    public (Tensor Keys, Tensor Values)? ReadWindow(long start, long end)
    {
        if (start > _end) throw new InvalidOperationException($"KV cache: a chunk at token {start} reads tokens up to {start}, but only {_end} were written: chunks must come in order");
        if (IsSnapshot && start > _frozenEnd)
            throw new InvalidOperationException($"KV cache snapshot: it holds the {_frozenEnd} tokens cached when it was taken, a chunk at token {start} needs more");
        var (sinkEnd, recentStart) = _window.Visible(end);
        if (recentStart > start)
            throw new InvalidOperationException($"KV cache: a chunk of {end - start} tokens is longer than the window's {_window.RecentTokens} recent tokens");
        // Slot ranges of [0, sinkEnd) and [recentStart, start), or of [0, start) for the whole past; adjacent ones merge.
        var ranges = new List<(long Slot, long Length)>();
        void Add(long a, long b)
        {
            if (b <= a) return;
            long slot = Slot(a, b);
            if (ranges.Count > 0 && ranges[^1].Slot + ranges[^1].Length == slot) ranges[^1] = (ranges[^1].Slot, ranges[^1].Length + b - a);
            else ranges.Add((slot, b - a));
        }
        if (recentStart == 0) Add(0, start);
        else { Add(0, sinkEnd); Add(recentStart, start); }
        if (ranges.Count == 0) return null;
        Tensor Gather(Tensor buffer) => ranges.Count == 1
            ? buffer.narrow(2, ranges[0].Slot, ranges[0].Length)
            : cat(ranges.Select(r => buffer.narrow(2, r.Slot, r.Length)).ToArray(), 2);
        return (Gather(_keys!), Gather(_values!));
    }

    /// <summary>The slot of token <paramref name="a"/>, checking that [a, b) is held in consecutive slots.</summary>
    private long Slot(long a, long b)
    {
        long slot;
        if (b <= _prefix) slot = a;
        else if (a >= _runStart || _prefix == _runStart) slot = _prefix + a - _runStart;   // equal: nothing evicted, slot = token
        else throw new InvalidOperationException($"KV cache: tokens [{a}, {b}) are no longer held (the window rolled past token {_runStart}); a chunk can be written again only while its window is held");
        if (IsSnapshot && slot + (b - a) > _overwrittenFrom)
            throw new InvalidOperationException($"KV cache snapshot: tokens [{a}, {b}) were overwritten by the cache since the snapshot was taken " +
                                                "(it rolled or rewrote them); size the cache for the whole sequence so that recomputed calls read what they read first");
        return slot;
    }

    public void Append(long start, Tensor keys, Tensor values)
    {
        if (start > _end) throw new InvalidOperationException($"KV cache: a chunk at token {start} leaves a gap after the {_end} tokens written: chunks must come in order");
        long n = keys.shape[2], end = start + n;
        if (_window.RecentTokens is { } recent && n > recent)
            throw new InvalidOperationException($"KV cache: a chunk of {n} tokens is longer than the window's {recent} recent tokens");
        if (IsSnapshot) { _end = end; return; }
        if (start < _runStart)
        {
            if (_prefix != _runStart)
                throw new InvalidOperationException($"KV cache: cannot write from token {start} again: the window rolled past token {_runStart}");
            _prefix = _runStart = 0;   // nothing evicted: slot = token, so the layout restarts as one run
        }
        _end = start;
        if (_keys is not null && (!keys.shape.SequenceEqual(_keys.shape.Take(2).Append(n).Append(_keys.shape[3])) || keys.dtype != _keys.dtype
                                  || keys.device_type != _keys.device_type || keys.device_index != _keys.device_index))
            throw new InvalidOperationException($"KV cache: keys [{string.Join(",", keys.shape)}] {keys.dtype} do not match the cache's " +
                                                $"[{_keys.shape[0]},{_keys.shape[1]},*,{_keys.shape[3]}] {_keys.dtype}; reset or rebuild it for another batch size, dtype or device");
        if (_prefix + end - _runStart > Capacity) Evict(end);
        if (_keys is null || _prefix + end - _runStart > Capacity) Grow(_prefix + end - _runStart, keys);
        long slot = _prefix + start - _runStart;
        Overwriting(slot);
        using (no_grad())
        {
            _keys!.narrow(2, slot, n).copy_(keys);
            _values!.narrow(2, slot, n).copy_(values);
        }
        _end = end;
    }

    /// <summary>Drops the tokens a chunk ending at <paramref name="end"/> (and every later one) no longer sees.</summary>
    private void Evict(long end)
    {
        var (sinkEnd, recentStart) = _window.Visible(end);
        if (recentStart <= _runStart || _keys is null) return;
        long kept = Math.Max(0, _end - recentStart);
        if (kept > 0)
        {
            long from = _prefix + recentStart - _runStart;
            Overwriting(sinkEnd);
            using var _ = no_grad();
            // The ranges overlap when little is evicted: copy through a temporary.
            foreach (var buffer in new[] { _keys, _values! })
            {
                using var moved = buffer.narrow(2, from, kept).clone();
                buffer.narrow(2, sinkEnd, kept).copy_(moved);
            }
        }
        (_prefix, _runStart) = (sinkEnd, recentStart);
    }

    private void Grow(long needed, Tensor keys)
    {
        long capacity = _keys is null ? Math.Max(needed, _capacity) : Math.Max(needed, 2 * Capacity);
        using var _ = no_grad();
        Tensor Larger(Tensor? old)
        {
            var t = zeros([keys.shape[0], keys.shape[1], capacity, keys.shape[3]], dtype: keys.dtype, device: keys.device).DetachFromDisposeScope();
            if (old is null) return t;
            long used = _prefix + _end - _runStart;
            t.narrow(2, 0, used).copy_(old.narrow(2, 0, used));
            old.Dispose();   // snapshots keep their own aliases of it
            return t;
        }
        _keys = Larger(_keys);
        _values = Larger(_values);
        _generation++;   // snapshots taken so far read the old buffers, which nothing writes any more
    }

    /// <summary>Tells live snapshots that the slots from <paramref name="slot"/> on are about to change.</summary>
    private void Overwriting(long slot)
    {
        _snapshots.RemoveAll(w =>
        {
            if (!w.TryGetTarget(out var s) || s._keys is null || s._generation != _generation) return true;
            s._overwrittenFrom = Math.Min(s._overwrittenFrom, slot);
            return false;
        });
    }

    public void Reset()
    {
        _prefix = _runStart = 0;
        _end = 0;
    }

    public IKvCache Snapshot()
    {
        var s = new KvCache(this);
        s._root!._snapshots.Add(new WeakReference<KvCache>(s));
        return s;
    }

    public void Dispose()
    {
        _keys?.Dispose();
        _values?.Dispose();
        _keys = _values = null;
    }
}

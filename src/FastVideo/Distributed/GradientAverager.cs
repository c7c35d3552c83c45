using static TorchSharp.torch;

namespace FastVideo.Distributed;

/// <summary>
/// Averages gradients over the ranks of a data-parallel run, in place, before clipping and the optimizer step
/// (as DDP's bucketed all-reduce). Large float32 gradients are summed by MPI straight on their own memory, in pieces
/// of at most <see cref="BucketBytes"/>; small ones, and other dtypes, are packed into one float32 bucket so that a
/// few hundred tiny tensors cost a handful of calls. Every rank then holds the same sums, scaled by 1/ranks.
/// </summary>
public sealed class GradientAverager : IDisposable
{
    private readonly ProcessGroup _group;
    private Tensor? _bucket;
    private readonly List<(Tensor Grad, long Offset)> _packed = new();
    private long _fill;

    /// <param name="bucketBytes">Size of one all-reduce call (DDP's default is 25 MB).</param>
    public GradientAverager(ProcessGroup group, long bucketBytes = 16L << 20)
    {
        if (bucketBytes < 1024) throw new ArgumentException("bucket must hold at least 1 KiB");
        _group = group;
        BucketBytes = bucketBytes;
    }

    public long BucketBytes { get; }
    private long BucketElements => BucketBytes / 4;

    /// <summary>Bytes reduced by the last <see cref="Average"/> (as float32) and how many MPI calls it took.</summary>
    public long LastBytes { get; private set; }
    public int LastCalls { get; private set; }

    /// <summary>Averages <paramref name="grads"/> in place across ranks (the same list, in the same order, on every rank).</summary>
    public void Average(IReadOnlyList<Tensor> grads)
    {
        LastBytes = 0;
        LastCalls = 0;
        if (!_group.IsDistributed || grads.Count == 0) return;
        using var noGrad = no_grad();
        double scale = 1.0 / _group.Size;
        foreach (var g in grads)
        {
            long n = g.numel();
            LastBytes += 4 * n;
            if (n == 0) continue;
            if (g.dtype == ScalarType.Float32 && g.device_type == TorchSharp.DeviceType.CPU && g.is_contiguous() && n >= BucketElements / 4)
            {
                ReduceInPlace(g, n);
                g.mul_(scale);
                continue;
            }
            if (n > BucketElements - _fill) Flush(scale);
            if (n > BucketElements)
            {
                // Too big for the bucket and not float32 memory MPI can sum directly: through a float32 copy of its own.
                using var copy = g.to(ScalarType.Float32, CPU).contiguous();
                ReduceInPlace(copy, n);
                copy.mul_(scale);
                g.copy_(copy.view(g.shape));
                continue;
            }
            _bucket ??= empty(BucketElements, ScalarType.Float32, CPU).DetachFromDisposeScope();   // reused across steps
            using (var slot = _bucket.narrow(0, _fill, n)) slot.copy_(g.reshape(-1));
            _packed.Add((g, _fill));
            _fill += n;
        }
        Flush(scale);
    }

    private unsafe void ReduceInPlace(Tensor t, long n)
    {
        var p = Weights.TensorStreamer.DataPointer(t);
        for (long done = 0; done < n; done += BucketElements)
        {
            _group.AllReduceSum(p + done * 4, Math.Min(BucketElements, n - done), ScalarType.Float32);
            LastCalls++;
        }
    }

    private void Flush(double scale)
    {
        if (_fill == 0) return;
        using (var used = _bucket!.narrow(0, 0, _fill))
        {
            ReduceInPlace(used, _fill);
            used.mul_(scale);
        }
        foreach (var (g, offset) in _packed)
            using (var slot = _bucket.narrow(0, offset, g.numel())) g.copy_(slot.view(g.shape));
        _packed.Clear();
        _fill = 0;
    }

    public void Dispose()
    {
        _bucket?.Dispose();
        _bucket = null;
    }
}

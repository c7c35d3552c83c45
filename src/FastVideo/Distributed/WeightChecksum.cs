using System.Numerics;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace FastVideo.Distributed;

/// <summary>
/// A cheap 64-bit checksum of tensors' bytes (any dtype), to check that every rank of a data-parallel run holds the
/// same weights: per tensor the wrapping sum of its 64-bit words (vectorised, one pass over the memory), folded with
/// the tensor's position and size. Any differing bit changes it; a collision needs differences that cancel exactly.
/// </summary>
public static class WeightChecksum
{
    public static ulong Of(IEnumerable<Tensor> tensors)
    {
        ulong h = 14695981039346656037UL;
        ulong index = 0;
        foreach (var t in tensors)
        {
            h = (h ^ Sum(t) ^ (ulong)t.numel() * 0x9E3779B97F4A7C15UL ^ index++) * 1099511628211UL;
        }
        return h;
    }

    private static unsafe ulong Sum(Tensor t)
    {
        using var scope = NewDisposeScope();
        var c = t.device_type == TorchSharp.DeviceType.CPU && t.is_contiguous() ? t : t.cpu().contiguous();
        long bytes = c.numel() * c.element_size();
        if (bytes == 0) return 0;
        var p = Weights.TensorStreamer.DataPointer(c);
        ulong sum = 0;
        const long chunk = 1L << 30;
        for (long done = 0; done < bytes; done += chunk)
        {
            int n = (int)Math.Min(chunk, bytes - done);
            var words = MemoryMarshal.Cast<byte, ulong>(new ReadOnlySpan<byte>(p + done, n));
            var acc = Vector<ulong>.Zero;
            var vectors = MemoryMarshal.Cast<ulong, Vector<ulong>>(words);
            foreach (var v in vectors) acc += v;
            sum += Vector.Sum(acc);
            for (int i = vectors.Length * Vector<ulong>.Count; i < words.Length; i++) sum += words[i];
            for (int i = words.Length * 8; i < n; i++) sum += (ulong)p[done + i] << (8 * (i % 8));
        }
        return sum;
    }
}

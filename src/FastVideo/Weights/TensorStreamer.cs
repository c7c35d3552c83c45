using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Weights;

/// <summary>
/// Streams safetensors bytes straight into tensors' own memory. The file is read with positional reads
/// (<see cref="RandomAccess"/>, pread) in chunks spread over all cores: a chunk whose dtype matches its destination is
/// read directly into the destination; one that needs converting (bf16/fp16 -> fp32, fp32 -> bf16) is read into a
/// small per-worker staging buffer and converted from there into the destination. Nothing else is allocated: no
/// managed arrays, no second copy of a tensor, and no memory map (mapped file pages would count in the process's
/// resident set). Conversions this class has no kernel for go through one temporary tensor of the source dtype and
/// torch's copy_, a tensor at a time.
/// </summary>
internal static class TensorStreamer
{
    /// <summary>Source bytes per work item (and per staging buffer). Settable so tests can make small tensors span
    /// several chunks; any positive value gives the same bytes.</summary>
    internal static long ChunkBytes { get; set; } = 4L << 20;

    /// <summary>Threads used; settable so tests and the benchmark can compare with one.</summary>
    internal static int MaxWorkers { get; set; } = Environment.ProcessorCount;

    /// <summary>Fill <paramref name="Destination"/> (same shape as the source) from <paramref name="Source"/>.</summary>
    internal readonly record struct Job(string Key, WeightEntry Source, Tensor Destination);

    internal enum Conversion { Copy, Bf16ToF32, F16ToF32, F32ToBf16 }

    /// <summary>The kernel that turns <paramref name="src"/> bytes into <paramref name="dst"/> bytes, or null if torch must.</summary>
    internal static Conversion? Kernel(ScalarType src, ScalarType dst) => (src, dst) switch
    {
        _ when src == dst => Conversion.Copy,
        (ScalarType.BFloat16, ScalarType.Float32) => Conversion.Bf16ToF32,
        (ScalarType.Float16, ScalarType.Float32) => Conversion.F16ToF32,
        (ScalarType.Float32, ScalarType.BFloat16) => Conversion.F32ToBf16,
        _ => null,
    };

    readonly record struct Direct(int Job, nint Dst, Conversion Conv, int SrcSize, int DstSize);
    readonly record struct WorkItem(int Direct, long FirstElement, long Count);

    /// <summary>
    /// Fills every destination from its source. Destinations must have the source's shape (callers check) and
    /// may be of any dtype of the same kind. A file shorter than its header says is a <see cref="UserError"/>.
    /// </summary>
    public static unsafe void Fill(IReadOnlyList<Job> jobs)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("Safetensors reading assumes a little-endian machine.");

        // Forward through each file: the disk sees (nearly) one sequential pass.
        var ordered = jobs.OrderBy(j => j.Source.File, StringComparer.Ordinal).ThenBy(j => j.Source.FileOffset).ToList();
        var handles = new Dictionary<string, SafeFileHandle>(StringComparer.Ordinal);
        try
        {
            foreach (var file in ordered.Select(j => j.Source.File).Distinct())
                handles[file] = OpenHandle(file);

            var direct = new List<Direct>();
            var viaTorch = new List<Job>();
            for (int i = 0; i < ordered.Count; i++)
            {
                var (_, src, dst) = ordered[i];
                if (dst.numel() == 0) continue;
                if (dst.device_type == DeviceType.CPU && dst.is_contiguous() && Kernel(src.ScalarType, dst.dtype) is Conversion conv)
                    direct.Add(new Direct(i, (nint)DataPointer(dst), conv, SafeTensors.ElementSize(src.Info.Dtype)!.Value, (int)dst.element_size()));
                else
                    viaTorch.Add(ordered[i]);
            }
            if (direct.Any(d => d.Conv == Conversion.F16ToF32)) _ = HalfToFloat.Value;   // built here, on a torch-safe thread

            RunDirect(ordered, direct, handles);

            foreach (var (key, src, dst) in viaTorch)
            {
                using var scope = NewDisposeScope();
                var tmp = empty(src.Shape, dtype: src.ScalarType, device: CPU);
                ReadExactly(handles[src.File], src.FileOffset, DataPointer(tmp), src.ByteLength, src.File, key);
                using var noGrad = no_grad();
                dst.copy_(tmp);
            }
        }
        finally
        {
            foreach (var h in handles.Values) h.Dispose();
        }
    }

    static SafeFileHandle OpenHandle(string path)
    {
        try { return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read); }
        catch (FileNotFoundException e) { throw new UserError($"Safetensors file '{path}' does not exist (it was there when its header was read).", e); }
        catch (DirectoryNotFoundException e) { throw new UserError($"Safetensors file '{path}' does not exist (it was there when its header was read).", e); }
    }

    static unsafe void RunDirect(List<Job> jobs, List<Direct> direct, Dictionary<string, SafeFileHandle> handles)
    {
        // Read once: the staging buffers must hold the largest item whatever a test sets meanwhile.
        long chunkBytes = Math.Max(1, ChunkBytes);
        var items = new List<WorkItem>();
        long largest = 0;
        for (int d = 0; d < direct.Count; d++)
        {
            long n = jobs[direct[d].Job].Destination.numel();
            long perItem = Math.Max(1, chunkBytes / direct[d].SrcSize);
            largest = Math.Max(largest, Math.Min(perItem, n) * direct[d].SrcSize);
            for (long first = 0; first < n; first += perItem)
                items.Add(new WorkItem(d, first, Math.Min(perItem, n - first)));
        }
        if (items.Count == 0) return;

        int workers = Math.Max(1, Math.Min(MaxWorkers, items.Count));
        long stagingBytes = Math.Max(1, largest);
        int next = 0;
        int failed = 0;
        // Taken from a shared counter (not pre-split ranges) so the workers read neighbouring chunks.
        void Worker()
        {
            byte* staging = null;
            try
            {
                while (Volatile.Read(ref failed) == 0)
                {
                    int i = Interlocked.Increment(ref next) - 1;
                    if (i >= items.Count) break;
                    var item = items[i];
                    var d = direct[item.Direct];
                    var (key, src, _) = jobs[d.Job];
                    long offset = src.FileOffset + item.FirstElement * d.SrcSize;
                    long bytes = item.Count * d.SrcSize;
                    byte* dst = (byte*)d.Dst + item.FirstElement * d.DstSize;
                    var handle = handles[src.File];
                    if (d.Conv == Conversion.Copy)
                    {
                        ReadExactly(handle, offset, dst, bytes, src.File, key);
                        continue;
                    }
                    if (staging is null) staging = (byte*)NativeMemory.AlignedAlloc((nuint)stagingBytes, 64);
                    ReadExactly(handle, offset, staging, bytes, src.File, key);
                    Convert(d.Conv, staging, dst, item.Count);
                }
            }
            catch
            {
                Interlocked.Exchange(ref failed, 1);
                throw;
            }
            finally
            {
                if (staging is not null) NativeMemory.AlignedFree(staging);
            }
        }

        try
        {
            if (workers == 1) Worker();
            else Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, _ => Worker());
        }
        catch (AggregateException ae)
        {
            var first = ae.Flatten().InnerExceptions.OrderBy(e => e is UserError ? 0 : 1).First();
            ExceptionDispatchInfo.Capture(first).Throw();
        }
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes at <paramref name="offset"/>; a short file is a <see cref="UserError"/>.</summary>
    internal static unsafe void ReadExactly(SafeFileHandle handle, long offset, byte* dst, long count, string path, string key)
    {
        long done = 0;
        while (done < count)
        {
            int want = (int)Math.Min(int.MaxValue, count - done);
            int got = RandomAccess.Read(handle, new Span<byte>(dst + done, want), offset + done);
            if (got == 0)
                throw new UserError(
                    $"Safetensors file '{path}' ended while reading tensor '{key}' (truncated?): it needs bytes up to " +
                    $"{offset + count} but the file has {RandomAccess.GetLength(handle)}.");
            done += got;
        }
    }

    /// <summary>
    /// Pointer to the first element of a contiguous CPU tensor, for any size (a span over the whole tensor would be
    /// limited to 2 GB). Valid while the tensor lives.
    /// </summary>
    internal static unsafe byte* DataPointer(Tensor t)
    {
        if (t.device_type != DeviceType.CPU || !t.is_contiguous())
            throw new ArgumentException("expected a contiguous CPU tensor");
        if (t.numel() == 0) return null;
        using var first = t.reshape(-1).narrow(0, 0, 1);   // a view: same storage, its data pointer is the tensor's
        fixed (byte* p = first.bytes) return p;
    }

    // ------------------------------------------------------------------------------------------------ kernels

    /// <summary>Converts <paramref name="n"/> elements between spans (tests drive the kernels through this).</summary>
    internal static unsafe void Convert(Conversion conv, ReadOnlySpan<byte> src, Span<byte> dst, long n)
    {
        fixed (byte* s = src) fixed (byte* d = dst) Convert(conv, s, d, n);
    }

    internal static unsafe void Convert(Conversion conv, byte* src, byte* dst, long n)
    {
        switch (conv)
        {
            case Conversion.Bf16ToF32: Bf16ToF32((ushort*)src, (uint*)dst, n); break;
            case Conversion.F16ToF32: F16ToF32((ushort*)src, (uint*)dst, n); break;
            case Conversion.F32ToBf16: F32ToBf16((uint*)src, (ushort*)dst, n); break;
            default: throw new ArgumentOutOfRangeException(nameof(conv));
        }
    }

    /// <summary>bf16 is the top half of an fp32: widening is a 16-bit shift, exact for every value.</summary>
    internal static unsafe void Bf16ToF32(ushort* src, uint* dst, long n)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= n; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(src + i));
                Vector256.Store(lo << 16, dst + i);
                Vector256.Store(hi << 16, dst + i + 8);
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            for (; i + 8 <= n; i += 8)
            {
                var (lo, hi) = Vector128.Widen(Vector128.Load(src + i));
                Vector128.Store(lo << 16, dst + i);
                Vector128.Store(hi << 16, dst + i + 4);
            }
        }
        for (; i < n; i++) dst[i] = (uint)src[i] << 16;
    }

    /// <summary>
    /// fp32 -> bf16 as libtorch's CPU kernel does it: round to nearest, ties to even; every NaN becomes 0xFFFF
    /// (what libtorch's vectorised conversion writes).
    /// </summary>
    internal static unsafe void F32ToBf16(uint* src, ushort* dst, long n)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var one = Vector256.Create(1u);
            var bias = Vector256.Create(0x7FFFu);
            var nan = Vector256.Create(0xFFFFu);
            for (; i + 16 <= n; i += 16)
            {
                var a = Vector256.Load(src + i);
                var b = Vector256.Load(src + i + 8);
                var ra = (a + bias + ((a >> 16) & one)) >> 16;
                var rb = (b + bias + ((b >> 16) & one)) >> 16;
                var fa = a.AsSingle();
                var fb = b.AsSingle();
                ra = Vector256.ConditionalSelect(Vector256.Equals(fa, fa).AsUInt32(), ra, nan);
                rb = Vector256.ConditionalSelect(Vector256.Equals(fb, fb).AsUInt32(), rb, nan);
                Vector256.Store(Vector256.Narrow(ra, rb), dst + i);
            }
        }
        for (; i < n; i++) dst[i] = F32ToBf16(src[i]);
    }

    internal static ushort F32ToBf16(uint bits)
    {
        if (float.IsNaN(BitConverter.UInt32BitsToSingle(bits))) return 0xFFFF;
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>fp16 -> fp32 through a table of all 65536 halves converted by libtorch itself, so the result is
    /// libtorch's by construction (subnormals, infinities, NaN payloads as its vectorised kernel gives them).</summary>
    internal static unsafe void F16ToF32(ushort* src, uint* dst, long n)
    {
        var table = HalfToFloat.Value;
        fixed (uint* t = table)
        {
            for (long i = 0; i < n; i++) dst[i] = t[src[i]];
        }
    }

    static readonly Lazy<uint[]> HalfToFloat = new(() =>
    {
        using var scope = NewDisposeScope();
        var halves = empty(65536, dtype: ScalarType.Float16);
        var bits = MemoryMarshal.Cast<byte, ushort>(halves.bytes);
        for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)i;
        var floats = halves.to(ScalarType.Float32);
        return MemoryMarshal.Cast<byte, uint>(floats.bytes).ToArray();
    }, LazyThreadSafetyMode.ExecutionAndPublication);

    // ------------------------------------------------------------------------------------------------ allocation

    [DllImport("libc", EntryPoint = "madvise", SetLastError = true)]
    static extern int Madvise(nint addr, nuint length, int advice);

    const int MadvHugepage = 14;
    const long HugePage = 2L << 20;

    /// <summary>
    /// Asks Linux to back a fresh, not yet written tensor with transparent huge pages (where the system allows them
    /// on request). First writes into new memory are page faults; with 2 MB pages there are 512 times fewer of them,
    /// which on a virtual machine more than halves the time to fill a multi-GB model. A hint only: ignored elsewhere.
    /// </summary>
    internal static unsafe void AdviseHugePages(Tensor t)
    {
        if (!OperatingSystem.IsLinux() || t.device_type != DeviceType.CPU || !t.is_contiguous()) return;
        long bytes = t.numel() * t.element_size();
        if (bytes < 2 * HugePage) return;
        long start = (long)DataPointer(t);
        long first = (start + HugePage - 1) & ~(HugePage - 1);
        long end = (start + bytes) & ~(HugePage - 1);
        if (end > first)
        {
            try { _ = Madvise((nint)first, (nuint)(end - first), MadvHugepage); }
            catch (DllNotFoundException) { }
            catch (EntryPointNotFoundException) { }
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace FastVideo.Data;

/// <summary>Direct access to a CPU tensor's memory, so big rows are decoded in place instead of through arrays.</summary>
internal static class TensorMemory
{
    /// <summary>Pointer to the first element of a contiguous float32 CPU tensor (valid while the tensor lives).</summary>
    public static unsafe float* FloatPointer(Tensor t)
    {
        if (t.dtype != ScalarType.Float32 || t.device_type != TorchSharp.DeviceType.CPU || !t.is_contiguous())
            throw new ArgumentException("expected a contiguous float32 CPU tensor");
        if (t.numel() == 0) return null;
        if (t.numel() * 4L > int.MaxValue)
            throw new ArgumentException($"tensor of {t.numel()} floats exceeds the 2 GiB a single buffer may span");
        return (float*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
    }
}

using TorchSharp;

namespace FastVideo.Models.Layers;

/// <summary>
/// Scalars that live for the whole process. An implicit number-to-Scalar conversion inside tensor arithmetic
/// (<c>1 + t</c>) makes a temporary that the GC may finalize while the native op still reads it; TorchSharp 0.107
/// keeps no reference alive across the call. On Linux the Scalar guard (FastVideo.Native.ScalarGuard) covers every
/// Scalar; where it is not built (no C compiler, other systems) the hot paths (every block, every step) still use
/// these rooted ones.
/// </summary>
public static class ScalarConstants
{
    public static readonly Scalar One = 1.0.ToScalar();
}

using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;

namespace FastVideo.Native;

/// <summary>
/// Keeps the GC from freeing a TorchSharp Scalar while libtorch still reads it.
/// TorchSharp hands a Scalar's native handle to libtorch and keeps nothing alive across the call, so the finalizer
/// thread may free it mid-call (an intermittent "toFloat" error, or a wrong value). The build puts
/// <c>libfv_scalar_guard.so</c> (build/scalar_guard.c) beside TorchSharp's wrapper; here a DllImport resolver
/// makes TorchSharp bind to it instead. It forwards every symbol to the real wrapper except the Scalar disposal,
/// which it defers by a grace period. Set FASTVIDEO_SCALAR_GUARD=off to run without it (for the race benchmark).
/// </summary>
public static class ScalarGuard
{
    private const string GuardFile = "libfv_scalar_guard.so";
    private static IntPtr _handle;

    /// <summary>True when TorchSharp's wrapper is bound through the guard.</summary>
    public static bool IsActive => _handle != IntPtr.Zero;

    /// <summary>Why the guard is off, when it is.</summary>
    public static string? InactiveReason { get; private set; }

    /// <param name="nativeDir">The folder of TorchSharp's native wrapper, where the build puts the guard.</param>
    internal static void Install(string? nativeDir)
    {
        if (!OperatingSystem.IsLinux()) { InactiveReason = "only built on Linux"; return; }
        if (string.Equals(Environment.GetEnvironmentVariable("FASTVIDEO_SCALAR_GUARD"), "off", StringComparison.OrdinalIgnoreCase))
        { InactiveReason = "FASTVIDEO_SCALAR_GUARD=off"; return; }
        var path = nativeDir is null ? null : Path.Combine(nativeDir, GuardFile);
        if (path is null || !File.Exists(path)) { InactiveReason = $"{GuardFile} not found beside TorchSharp's native wrapper (no C compiler at build time?)"; return; }
        if (!NativeLibrary.TryLoad(path, out var handle)) { InactiveReason = $"could not load {path}"; return; }
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(torch).Assembly,
                (name, _, _) => name == "LibTorchSharp" ? handle : IntPtr.Zero);
        }
        catch (InvalidOperationException)
        {
            InactiveReason = "another DllImport resolver is already set for TorchSharp";
            return;
        }
        _handle = handle;
    }

    /// <summary>Scalars parked so far, freed so far, and still waiting out the grace period.</summary>
    public static (long Parked, long Freed, long Waiting) Stats()
    {
        if (!IsActive) return (0, 0, 0);
        long parked, freed, waiting;
        unsafe
        {
            var fn = (delegate* unmanaged<long*, long*, long*, void>)NativeLibrary.GetExport(_handle, "fv_scalar_guard_stats");
            fn(&parked, &freed, &waiting);
        }
        return (parked, freed, waiting);
    }
}

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
        if (!Bind(typeof(torch).Assembly, handle, out var reason)) { InactiveReason = reason; return; }
        _handle = handle;
    }

    /// <summary>
    /// Points the assembly's "LibTorchSharp" imports at the guard. .NET gives each assembly one resolver slot; if
    /// another component took it first, the guard goes in front of that resolver (found through the runtime's
    /// private resolver table, the only way to read the slot) instead of replacing it, and every other library
    /// name still goes to it.
    /// </summary>
    internal static bool Bind(Assembly assembly, IntPtr guard, out string? reason)
    {
        reason = null;
        try
        {
            NativeLibrary.SetDllImportResolver(assembly, (name, _, _) => name == "LibTorchSharp" ? guard : IntPtr.Zero);
            return true;
        }
        catch (InvalidOperationException) { }
        var table = typeof(NativeLibrary).GetField("s_nativeDllResolveMap", BindingFlags.NonPublic | BindingFlags.Static)?.GetValue(null)
            as System.Runtime.CompilerServices.ConditionalWeakTable<Assembly, DllImportResolver>;
        if (table is null || !table.TryGetValue(assembly, out var earlier))
        {
            reason = "another DllImport resolver is already set for TorchSharp and cannot be chained";
            return false;
        }
        table.AddOrUpdate(assembly, Chain(guard, earlier));
        return true;
    }

    /// <summary>The guard for TorchSharp's wrapper, <paramref name="earlier"/> for everything else.</summary>
    internal static DllImportResolver Chain(IntPtr guard, DllImportResolver earlier) =>
        (name, assembly, path) => name == "LibTorchSharp" ? guard : earlier(name, assembly, path);

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

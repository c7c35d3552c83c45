using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FastVideo.Native;

/// <summary>
/// Prepares TorchSharp's native wrapper before the first torch call. The build (build/torchsharp-native-fixes.sh)
/// drops two helpers beside <c>libLibTorchSharp.so</c>:
/// <list type="bullet">
/// <item><c>libstdcxx_compat.so</c> where the system libstdc++ predates GLIBCXX_3.4.32 (Debian 12): loaded globally
/// here so the wrapper's one symbol from that version resolves. Newer systems have none.</item>
/// <item><c>libfv_scalar_guard.so</c>: installed by <see cref="ScalarGuard"/>, which must be in place before
/// TorchSharp binds its first call.</item>
/// </list>
/// </summary>
public static class TorchSharpLoader
{
    private const int RTLD_NOW = 0x2, RTLD_GLOBAL = 0x100;
    private const string WrapperFile = "libLibTorchSharp.so", ShimFile = "libstdcxx_compat.so";
    private static int _done;

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern IntPtr DlOpen(string path, int flags);

    [ModuleInitializer]
    internal static void Init() => EnsureLoaded();

    public static void EnsureLoaded()
    {
        if (Interlocked.Exchange(ref _done, 1) == 1 || !OperatingSystem.IsLinux()) return;
        var nativeDir = FindNativeDirectory();
        var shim = nativeDir is null ? null : Path.Combine(nativeDir, ShimFile);
        if (shim is not null && File.Exists(shim)) DlOpen(shim, RTLD_NOW | RTLD_GLOBAL);
        ScalarGuard.Install(nativeDir);
    }

    /// <summary>The folder of TorchSharp's native wrapper in this app's output (it differs between Debug, Release
    /// and publish layouts), or null when none is found.</summary>
    private static string? FindNativeDirectory()
    {
        foreach (var root in new[] { AppContext.BaseDirectory, Path.GetDirectoryName(typeof(TorchSharpLoader).Assembly.Location) })
        {
            if (string.IsNullOrEmpty(root) || !Directory.Exists(root)) continue;
            var wrapper = Directory.EnumerateFiles(root, WrapperFile, SearchOption.AllDirectories).FirstOrDefault();
            if (wrapper is not null) return Path.GetDirectoryName(wrapper);
        }
        return null;
    }
}

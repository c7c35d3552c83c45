using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FastVideo.Native;

/// <summary>
/// Makes TorchSharp's native wrapper loadable on systems whose libstdc++ predates GLIBCXX_3.4.32 (Debian 12).
/// The build (build/torchsharp-debian12-fix.sh) marks that version requirement weak and drops
/// <c>libstdcxx_compat.so</c> beside <c>libLibTorchSharp.so</c>; here we load the shim globally before the first
/// torch call so its one symbol resolves. Where no shim was built (newer systems) that part does nothing.
/// Then it installs the <see cref="ScalarGuard"/>, which must be in place before TorchSharp binds its first call.
/// </summary>
public static class TorchSharpLoader
{
    private const int RTLD_NOW = 0x2, RTLD_GLOBAL = 0x100;
    private static int _done;

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern IntPtr DlOpen(string path, int flags);

    [ModuleInitializer]
    internal static void Init() => EnsureLoaded();

    public static void EnsureLoaded()
    {
        if (Interlocked.Exchange(ref _done, 1) == 1 || !OperatingSystem.IsLinux()) return;
        LoadLibstdcxxShim();
        ScalarGuard.Install();
    }

    private static void LoadLibstdcxxShim()
    {
        foreach (var root in new[] { AppContext.BaseDirectory, Path.GetDirectoryName(typeof(TorchSharpLoader).Assembly.Location) })
        {
            if (string.IsNullOrEmpty(root) || !Directory.Exists(root)) continue;
            foreach (var shim in Directory.EnumerateFiles(root, "libstdcxx_compat.so", SearchOption.AllDirectories))
            {
                DlOpen(shim, RTLD_NOW | RTLD_GLOBAL);
                return;
            }
        }
    }
}

using System.Runtime.CompilerServices;

namespace FastVideo.Tests;

internal static class NativeSetup
{
    // Tests may touch torch before any library type; load the libstdc++ shim first (see build/).
    [ModuleInitializer]
    internal static void Init() => FastVideo.Native.TorchSharpLoader.EnsureLoaded();
}

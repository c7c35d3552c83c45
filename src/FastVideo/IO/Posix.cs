using System.Runtime.InteropServices;

namespace FastVideo.IO;

/// <summary>
/// The few POSIX calls .NET does not offer: fsync of a folder, reading a file without .NET's own flock (which
/// a held lock would refuse), and ending the process without exit-time destructors. Linux values of the flags, the same on x86-64 and arm64.
/// </summary>
internal static class Posix
{
    public const int O_RDONLY = 0, O_CLOEXEC = 0x80000;

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    public static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "read", SetLastError = true)]
    public static extern nint Read(int fd, byte[] buf, nint count);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    public static extern int Fsync(int fd);

    [DllImport("libc", EntryPoint = "close", SetLastError = true)]
    public static extern int Close(int fd);

    /// <summary>_exit(2): ends the process now, without exit handlers or destructors.</summary>
    [DllImport("libc", EntryPoint = "_exit")]
    public static extern void Exit(int status);
}

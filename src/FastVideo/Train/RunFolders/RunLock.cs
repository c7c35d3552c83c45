using System.Text;

namespace FastVideo.Train.RunFolders;

/// <summary>
/// An exclusive lock on a folder for one run's lifetime: <c>&lt;dir&gt;/run.lock</c> opened with
/// <see cref="FileShare.None"/>, which .NET implements on Unix as <c>flock(LOCK_EX)</c>. The kernel drops the lock
/// when the process dies, so a killed run never leaves a folder locked. The holder's process id, host and start
/// time are written into the file so a refused run can name them.
/// </summary>
public sealed class RunLock : IDisposable
{
    public const string FileName = "run.lock";
    private FileStream? _stream;

    private RunLock(FileStream stream, string folder) { _stream = stream; Folder = folder; }

    public string Folder { get; }

    /// <summary>Takes the lock or throws <see cref="RunFolderError"/> naming the holder. The folder must exist.</summary>
    public static RunLock Acquire(string folder, string what = "training.checkpoint.output_dir")
    {
        var path = Path.Combine(folder, FileName);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e) when (IsSharingViolation(e))
        {
            throw new RunFolderError($"{what}: '{folder}' is in use by another run ({Holder(path)}). " +
                                     "Wait for it to finish, stop it, or choose another folder.");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StorageError($"{what}: cannot create the lock file '{path}': {e.Message}", e);
        }
        try
        {
            var info = $"pid {Environment.ProcessId} on {Environment.MachineName}, started {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC\n";
            stream.SetLength(0);
            stream.Write(Encoding.UTF8.GetBytes(info));
            stream.Flush();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stream.Dispose();
            throw new StorageError($"{what}: cannot write the lock file '{path}': {e.Message}", e);
        }
        return new RunLock(stream, folder);
    }

    /// <summary>Whether another process (or another run in this one) holds the folder's lock right now.</summary>
    public static bool IsHeld(string folder)
    {
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path)) return false;
        try { using var probe = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None); return false; }
        catch (IOException e) when (IsSharingViolation(e)) { return true; }
    }

    public void Dispose()
    {
        _stream?.Dispose();   // closing the descriptor releases the flock
        _stream = null;
    }

    // A held lock: on Unix .NET's IOException carries flock's errno EWOULDBLOCK (11), on Windows HRESULT 0x80070020.
    private static bool IsSharingViolation(IOException e) =>
        OperatingSystem.IsWindows() ? (e.HResult & 0xFFFF) == 32 : e.HResult == 11;

    /// <summary>
    /// The holder's line from the lock file. Read with plain POSIX calls: a .NET open for reading would itself ask
    /// for a shared flock and fail while the holder keeps its exclusive one.
    /// </summary>
    private static string Holder(string path)
    {
        const string unknown = "holder unknown";
        if (OperatingSystem.IsWindows()) return unknown;
        try
        {
            int fd = IO.Posix.Open(path, IO.Posix.O_RDONLY | IO.Posix.O_CLOEXEC);
            if (fd < 0) return unknown;
            try
            {
                var buf = new byte[256];
                long n = IO.Posix.Read(fd, buf, buf.Length);
                var text = n > 0 ? Encoding.UTF8.GetString(buf, 0, (int)n).Trim() : "";
                return text.Length > 0 ? text : unknown;
            }
            finally { IO.Posix.Close(fd); }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return unknown; }
    }
}

using System.Runtime.InteropServices;
using System.Text;

namespace FastVideo.IO;

/// <summary>
/// Writes that survive a crash or a power loss: a file is written to a temporary name, fsynced, renamed into place,
/// and its folder fsynced, so a reader sees the old file or the whole new one. .NET has no directory fsync, so the
/// POSIX calls are made directly; on Windows (where NTFS journals renames) the folder step is skipped.
/// </summary>
public static class Durable
{
    /// <summary>Replaces <paramref name="path"/> with <paramref name="text"/> (UTF-8, no BOM) atomically and durably.</summary>
    public static void WriteAllText(string path, string text) =>
        Write(path, s => s.Write(new UTF8Encoding(false).GetBytes(text)));

    /// <summary>Replaces <paramref name="path"/> with what <paramref name="write"/> puts into the stream, atomically and durably.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
        SyncDirectory(dir);
    }

    /// <summary>fsync of a file written earlier (possibly by another component).</summary>
    public static void SyncFile(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
            fs.Flush(flushToDisk: true);
            return;
        }
        using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        if (Posix.Fsync((int)h.DangerousGetHandle()) != 0) throw Failure("fsync", path);
    }

    /// <summary>fsync of a folder: makes the names created, renamed or deleted in it durable.</summary>
    public static void SyncDirectory(string path)
    {
        if (OperatingSystem.IsWindows()) return;
        int fd = Posix.Open(path, Posix.O_RDONLY | Posix.O_CLOEXEC);   // a folder opens read-only like a file
        if (fd < 0) throw Failure("open", path);
        try { if (Posix.Fsync(fd) != 0) throw Failure("fsync", path); }
        finally { Posix.Close(fd); }
    }

    /// <summary>Every file, then every folder bottom-up, of a tree about to be published by a rename.</summary>
    public static void SyncTree(string root)
    {
        foreach (var file in Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)) SyncFile(file);
        foreach (var dir in Directory.EnumerateDirectories(root, "*", SearchOption.AllDirectories)
                     .OrderByDescending(d => d.Length)) SyncDirectory(dir);
        SyncDirectory(root);
    }

    private static IOException Failure(string call, string path)
    {
        int errno = Marshal.GetLastPInvokeError();
        return new IOException($"{call} '{path}' failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
    }
}

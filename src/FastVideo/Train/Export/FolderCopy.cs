using System.Runtime.InteropServices;

namespace FastVideo.Train.Export;

/// <summary>
/// Copies a folder tree file by file, hard-linking where the file system allows it (same volume) and copying
/// otherwise. Symbolic links (as in a Hugging Face cache snapshot) are followed, so the copy holds real files.
/// </summary>
public static partial class FolderCopy
{
    /// <summary>What a copy did.</summary>
    public sealed record Stats(int Linked, int Copied, int Skipped);

    /// <summary>
    /// Copies every file under <paramref name="source"/> into <paramref name="destination"/> (created as needed),
    /// except those for which <paramref name="skip"/> (given the source path) returns true.
    /// </summary>
    public static Stats Copy(string source, string destination, Func<string, bool>? skip = null, bool allowHardLinks = true)
    {
        int linked = 0, copied = 0, skipped = 0;
        Directory.CreateDirectory(destination);
        foreach (var entry in new DirectoryInfo(source).EnumerateFileSystemInfos())
        {
            var target = Path.Combine(destination, entry.Name);
            if (entry is DirectoryInfo dir)
            {
                var s = Copy(dir.FullName, target, skip, allowHardLinks);
                linked += s.Linked; copied += s.Copied; skipped += s.Skipped;
                continue;
            }
            if (skip?.Invoke(entry.FullName) == true) { skipped++; continue; }
            var real = entry.LinkTarget is null ? entry.FullName : entry.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? entry.FullName;
            if (allowHardLinks && TryHardLink(real, target)) linked++;
            else { File.Copy(real, target); copied++; }
        }
        return new Stats(linked, copied, skipped);
    }

    /// <summary>Creates <paramref name="link"/> as a hard link to <paramref name="existing"/>; false if that is not possible.</summary>
    public static bool TryHardLink(string existing, string link)
    {
        try
        {
            if (OperatingSystem.IsWindows()) return CreateHardLinkW(link, existing, IntPtr.Zero);
            return UnixLink(existing, link) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int UnixLink(string oldPath, string newPath);

    [LibraryImport("kernel32", EntryPoint = "CreateHardLinkW", StringMarshalling = StringMarshalling.Utf16)]
    [return: MarshalAs(UnmanagedType.Bool)]
    private static partial bool CreateHardLinkW(string fileName, string existingFileName, IntPtr securityAttributes);
}

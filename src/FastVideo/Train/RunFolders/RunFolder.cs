using System.Globalization;
using System.Text.RegularExpressions;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Tracking;

namespace FastVideo.Train.RunFolders;

/// <summary>
/// A run's output folder, held for the run's lifetime. One run per folder: a second run on a held folder is refused
/// (<see cref="RunLock"/>), and a folder that already holds a run is continued only when resuming; otherwise it is
/// refused, or with <c>overwrite</c> moved aside to <c>&lt;folder&gt;.previous-&lt;time&gt;</c> (never deleted).
/// Leftovers of crashed writes (<c>*.tmp-*</c> checkpoint folders, temporary files) are removed on opening.
/// </summary>
public sealed partial class RunFolder : IDisposable
{
    private RunLock? _lock;

    private RunFolder(string path, RunLock runLock, string? movedAside)
    {
        Path = path; _lock = runLock; MovedAsideTo = movedAside;
    }

    public string Path { get; }
    /// <summary>Where an earlier run in this folder was moved by <c>overwrite</c>, if it was.</summary>
    public string? MovedAsideTo { get; }

    [GeneratedRegex(@"^\..+\.[0-9a-f]{32}\.tmp$")] private static partial Regex StaleTempFile();

    /// <summary>
    /// Opens <paramref name="dir"/> for a run. <paramref name="resuming"/>: the recipe asks to resume, so an earlier
    /// run here is continued. <paramref name="overwrite"/>: an earlier run is moved aside instead of refused.
    /// </summary>
    public static RunFolder Open(string dir, bool resuming, bool overwrite, TextWriter? console = null)
    {
        const string key = "training.checkpoint.output_dir";
        var full = System.IO.Path.GetFullPath(dir);
        if (File.Exists(full))
            throw new StorageError($"{key}: '{dir}' is a file; expected a folder (or a path that does not exist yet)");
        CreateFolder(full, key);
        var held = RunLock.Acquire(full, key);
        try
        {
            string? aside = null;
            var earlier = DescribeRun(full);
            if (earlier is not null && !resuming)
            {
                if (!overwrite)
                    throw new RunFolderError(
                        $"{key}: '{dir}' already holds a run ({earlier}). To continue it, resume: " +
                        "--set training.checkpoint.resume_from_checkpoint=latest (or resume_from_checkpoint: latest in the recipe). " +
                        "To start over, pass --overwrite (the earlier run is moved aside, not deleted), or choose another output_dir.");
                (aside, held) = MoveAside(full, held, key);
                console?.WriteLine($"--overwrite: the earlier run in '{dir}' ({earlier}) was moved to '{aside}'");
            }
            RemoveStale(full, console);
            return new RunFolder(full, held, aside);
        }
        catch
        {
            held.Dispose();
            throw;
        }
    }

    /// <summary>
    /// What earlier run the folder holds ("checkpoint-200; metrics.jsonl up to step 230"), or null when it holds none:
    /// no checkpoint folder and no metrics line.
    /// </summary>
    public static string? DescribeRun(string dir)
    {
        var parts = new List<string>();
        var checkpoints = CheckpointManager.List(dir).Select(c => System.IO.Path.GetFileName(c.Path)).ToList();
        if (checkpoints.Count > 0)
            parts.Add(checkpoints.Count <= 3 ? string.Join(", ", checkpoints) : $"{checkpoints.Count} checkpoints up to {checkpoints[^1]}");
        var metrics = System.IO.Path.Combine(dir, JsonlTracker.FileName);
        if (File.Exists(metrics) && new FileInfo(metrics).Length > 0)
        {
            var last = JsonlTracker.LastStep(metrics);
            parts.Add(last is int s ? $"{JsonlTracker.FileName} up to step {s}" : $"a {JsonlTracker.FileName}");
        }
        return parts.Count == 0 ? null : string.Join("; ", parts);
    }

    private static (string Aside, RunLock Lock) MoveAside(string full, RunLock held, string key)
    {
        var stamp = DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
        var aside = $"{full}.previous-{stamp}";
        for (int i = 2; Directory.Exists(aside) || File.Exists(aside); i++) aside = $"{full}.previous-{stamp}-{i}";
        try
        {
            // The folder moves with our lock inside it; a fresh folder and lock take its place, then the old lock goes.
            Directory.Move(full, aside);
            CreateFolder(full, key);
            var fresh = RunLock.Acquire(full, key);
            held.Dispose();
            try { File.Delete(System.IO.Path.Combine(aside, RunLock.FileName)); } catch (IOException) { }
            IO.Durable.SyncDirectory(System.IO.Path.GetDirectoryName(full)!);
            return (aside, fresh);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StorageError($"{key}: --overwrite could not move '{full}' to '{aside}': {e.Message}", e);
        }
    }

    /// <summary>
    /// Leftovers of writes that a crash interrupted (checkpoint folders, and the temporary files of
    /// <see cref="IO.Durable"/> and the safetensors writer): they are never read, and can be large.
    /// </summary>
    private static void RemoveStale(string full, TextWriter? console)
    {
        foreach (var d in CheckpointManager.StaleFolders(full))
        {
            DeleteQuietly(() => Directory.Delete(d, recursive: true));
            console?.WriteLine($"removed '{d}' (an unfinished checkpoint from an interrupted run)");
        }
        foreach (var f in Directory.EnumerateFiles(full, ".*.tmp", SearchOption.AllDirectories)
                     .Where(f => StaleTempFile().IsMatch(System.IO.Path.GetFileName(f))))
            DeleteQuietly(() => File.Delete(f));
    }

    private static void DeleteQuietly(Action delete)
    {
        try { delete(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // best effort: retried next start
    }

    private static void CreateFolder(string full, string key)
    {
        try { Directory.CreateDirectory(full); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StorageError($"{key}: cannot create the folder '{full}': {e.Message}", e);
        }
    }

    public void Dispose()
    {
        _lock?.Dispose();
        _lock = null;
    }
}

using System.Globalization;
using System.Net;

namespace FastVideo.Train.Tracking;

/// <summary>
/// TensorBoard scalars: <c>&lt;dir&gt;/tensorboard/events.out.tfevents.&lt;unix-seconds&gt;.&lt;hostname&gt;</c>, one event
/// per step holding every metric (tag = metric name), flushed each step so a crashed run keeps what it logged; a
/// step's images (validation GIFs, which the image dashboard plays) go into one more event of that step.
/// TorchSharp's SummaryWriter was measured against this writer and not taken (bench/results/tensorboard-summarywriter-2026-12-03.md).
/// Each tracker writes a new file and never touches older ones; it opens with a <c>SessionLog START</c> at
/// <c>startStep + 1</c>, so on resume from step N TensorBoard drops the interrupted run's steps after N and shows the
/// resumed run's instead (as <see cref="JsonlTracker"/> does by rewriting its file).
/// </summary>
public sealed class TensorBoardTracker : ITracker
{
    public const string SubDir = "tensorboard";
    public const string FilePrefix = "events.out.tfevents.";
    private readonly FileStream _stream = null!;

    public TensorBoardTracker(string dir, int startStep = 0)
    {
        Directory = Path.Combine(dir, SubDir);
        FilePath = "";
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            CutBack(Directory, startStep);
            FilePath = Path.Combine(Directory, $"{FilePrefix}{FileSeconds(Directory).ToString(CultureInfo.InvariantCulture)}.{HostName()}");
            // CreateNew: never append to (or clobber) another run's file; Read sharing lets TensorBoard follow it live.
            _stream = new FileStream(FilePath, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
            double now = WallTime();
            TensorBoardEvents.WriteRecord(_stream, TensorBoardEvents.FileVersion(now));
            TensorBoardEvents.WriteRecord(_stream, TensorBoardEvents.SessionStart(now, startStep + 1L));
            _stream.Flush();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _stream?.Dispose();
            throw new StorageError($"cannot prepare the TensorBoard events in '{Directory}': {e.Message}", e);
        }
    }

    /// <summary>
    /// A run starting at step N removes the events of later steps from the folder's files (an interrupted run's
    /// future), and the cut-short record a crash may have left, so each step is in the events exactly once. The
    /// <see cref="TensorBoardEvents.SessionStart"/> marker stays as well, for readers of older copies.
    /// </summary>
    private static void CutBack(string dir, int startStep)
    {
        foreach (var path in System.IO.Directory.GetFiles(dir, FilePrefix + "*"))
        {
            var records = TensorBoardEvents.ReadRecords(path, out bool complete);
            var kept = records.Where(r => TensorBoardEvents.StepOf(r) is long s && s <= startStep).ToList();
            if (complete && kept.Count == records.Count) continue;
            FastVideo.IO.Durable.Write(path, stream => { foreach (var r in kept) TensorBoardEvents.WriteRecord(stream, r); });
        }
    }
    /// <summary>The <c>tensorboard</c> folder (what to point <c>tensorboard --logdir</c> at).</summary>
    public string Directory { get; }

    /// <summary>This tracker's event file.</summary>
    public string FilePath { get; }

    public void Log(int step, IReadOnlyDictionary<string, double> metrics)
    {
        try
        {
            TensorBoardEvents.WriteRecord(_stream, TensorBoardEvents.Scalars(WallTime(), step, metrics));
            _stream.Flush();   // to the OS: survives a crash of this process
        }
        catch (IOException e)
        {
            throw new StorageError($"step {step}: cannot append to the TensorBoard file '{FilePath}': {e.Message}", e);
        }
    }

    public void LogImages(int step, IReadOnlyList<TrackedImage> images)
    {
        if (images.Count == 0) return;
        try
        {
            TensorBoardEvents.WriteRecord(_stream, TensorBoardEvents.Images(WallTime(), step, images));
            _stream.Flush();
        }
        catch (IOException e)
        {
            throw new StorageError($"step {step}: cannot append to the TensorBoard file '{FilePath}': {e.Message}", e);
        }
    }

    public void Sync()
    {
        try { _stream.Flush(flushToDisk: true); }
        catch (IOException e) { throw new StorageError($"cannot sync the TensorBoard file '{FilePath}': {e.Message}", e); }
    }

    public void Dispose()
    {
        try { _stream.Dispose(); }
        catch (IOException) { }   // a full disk already reported by Log
    }

    private static double WallTime() => (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).TotalSeconds;

    /// <summary>
    /// The seconds in the new file's name: now, or one past the newest existing file's. TensorBoard reads a folder's
    /// event files in name order, so a resumed run's file must sort after the interrupted run's even when both start
    /// within the same second (or the clock stepped back).
    /// </summary>
    private static long FileSeconds(string dir)
    {
        long seconds = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        foreach (var path in System.IO.Directory.EnumerateFiles(dir, FilePrefix + "*"))
        {
            var rest = Path.GetFileName(path)[FilePrefix.Length..];
            var dot = rest.IndexOf('.');
            if (long.TryParse(dot < 0 ? rest : rest[..dot], NumberStyles.None, CultureInfo.InvariantCulture, out var s) && s >= seconds)
                seconds = s + 1;
        }
        return seconds;
    }

    private static string HostName()
    {
        string name;
        try { name = Dns.GetHostName(); }
        catch (System.Net.Sockets.SocketException) { name = Environment.MachineName; }
        // Keep the name one path component.
        foreach (var c in Path.GetInvalidFileNameChars()) name = name.Replace(c, '_');
        return name.Length == 0 ? "localhost" : name;
    }
}

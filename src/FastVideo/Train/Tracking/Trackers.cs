using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.IO;

namespace FastVideo.Train.Tracking;

/// <summary>An encoded image of a step (a PNG, or an animated GIF for a clip), with its pixel size.</summary>
public sealed record TrackedImage(string Tag, byte[] Encoded, int Width, int Height)
{
    /// <summary>A GIF, sized from its header (the logical screen width and height).</summary>
    public static TrackedImage FromGif(string tag, byte[] gif)
    {
        if (gif.Length < 10 || gif[0] != 'G' || gif[1] != 'I' || gif[2] != 'F')
            throw new ArgumentException($"image '{tag}' is not a GIF");
        return new TrackedImage(tag, gif, gif[6] | gif[7] << 8, gif[8] | gif[9] << 8);
    }
}

/// <summary>Receives each step's materialised metrics (and its images, for trackers that show them).</summary>
public interface ITracker : IDisposable
{
    void Log(int step, IReadOnlyDictionary<string, double> metrics);

    /// <summary>The step's images (validation samples); ignored by trackers that cannot show them.</summary>
    void LogImages(int step, IReadOnlyList<TrackedImage> images) { }

    /// <summary>Makes what was logged so far durable (called before a checkpoint is written).</summary>
    void Sync() { }
}

/// <summary>
/// <c>&lt;dir&gt;/metrics.jsonl</c>: one JSON object per step (<c>{"step": n, "key": value, ...}</c>), flushed
/// each line, with the resolved recipe written beside it as <c>recipe.yaml</c>. A run that starts at step N (a
/// resume, or 0) first cuts the file back to the lines of steps 1..N, so every step appears exactly once.
/// </summary>
public sealed class JsonlTracker : ITracker
{
    public const string FileName = "metrics.jsonl";
    private readonly FileStream _stream;
    private readonly StreamWriter _writer;

    public JsonlTracker(string dir, RunConfig config, int startStep = 0)
    {
        FilePath = Path.Combine(dir, FileName);
        try
        {
            Directory.CreateDirectory(dir);
            Durable.WriteAllText(Path.Combine(dir, "recipe.yaml"), RecipePrinter.ToYaml(config.Raw));
            if (File.Exists(FilePath))
            {
                var lines = File.ReadAllLines(FilePath);
                var kept = lines.Where(l => StepOf(l) is int s && s <= startStep).ToList();
                if (kept.Count != lines.Length)
                    Durable.WriteAllText(FilePath, string.Concat(kept.Select(l => l + "\n")));
            }
            _stream = new FileStream(FilePath, FileMode.Append, FileAccess.Write, FileShare.Read);
            _writer = new StreamWriter(_stream, new UTF8Encoding(false));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StorageError($"cannot prepare the metrics file '{FilePath}': {e.Message}", e);
        }
    }

    public string FilePath { get; }

    private static int? StepOf(string line)
    {
        try { return JsonNode.Parse(line)?["step"]?.GetValue<int>(); }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException) { return null; }   // a line cut short by a crash
    }

    /// <summary>The step of the file's last whole line, or null.</summary>
    public static int? LastStep(string path) => File.ReadLines(path).Select(StepOf).LastOrDefault(s => s is not null);

    public void Log(int step, IReadOnlyDictionary<string, double> metrics)
    {
        var o = new JsonObject { ["step"] = step };
        // JSON has no NaN/inf: write them as strings so the line stays parseable.
        foreach (var (k, v) in metrics)
            o[k] = double.IsFinite(v) ? JsonValue.Create(v) : JsonValue.Create(v.ToString(CultureInfo.InvariantCulture));
        try
        {
            _writer.WriteLine(o.ToJsonString());
            _writer.Flush();
        }
        catch (IOException e)
        {
            throw new StorageError($"step {step}: cannot append to the metrics file '{FilePath}': {e.Message}", e);
        }
    }

    public void Sync()
    {
        try { _writer.Flush(); _stream.Flush(flushToDisk: true); }
        catch (IOException e) { throw new StorageError($"cannot sync the metrics file '{FilePath}': {e.Message}", e); }
    }

    public void Dispose()
    {
        try { _writer.Dispose(); }
        catch (IOException) { }   // a full disk already reported by Log; closing must not hide that error
    }
}

/// <summary>Keeps every step's metrics and images in memory (tests, reports).</summary>
public sealed class MemoryTracker : ITracker
{
    public List<(int Step, IReadOnlyDictionary<string, double> Metrics)> Entries { get; } = new();
    public List<(int Step, TrackedImage Image)> Images { get; } = new();
    public void Log(int step, IReadOnlyDictionary<string, double> metrics) => Entries.Add((step, new Dictionary<string, double>(metrics)));
    public void LogImages(int step, IReadOnlyList<TrackedImage> images) => Images.AddRange(images.Select(i => (step, i)));
    public void Dispose() { }
}

public static class Trackers
{
    public static readonly IReadOnlyList<string> Available = ["jsonl", "tensorboard"];

    /// <summary>
    /// The trackers named in <c>training.tracker.trackers</c> (all of <see cref="Available"/> when it is empty). JSON
    /// lines are always written: the report and the tests read them.
    /// </summary>
    public static List<ITracker> Create(RunConfig config, string outputDir, int startStep)
    {
        var names = config.Training.Tracker.Trackers;
        for (int i = 0; i < names.Count; i++)
            if (!Available.Contains(names[i]))
                throw new UserError($"training.tracker.trackers[{i}]: tracker '{names[i]}' is not available (available: {string.Join(", ", Available)})");
        var wanted = names.Count == 0 ? Available : names;
        var trackers = new List<ITracker> { new JsonlTracker(outputDir, config, startStep) };
        if (wanted.Contains("tensorboard")) trackers.Add(new TensorBoardTracker(outputDir, startStep));
        return trackers;
    }
}

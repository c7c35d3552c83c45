using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Configs;

namespace FastVideo.Train.Tracking;

/// <summary>Receives each step's materialised metrics.</summary>
public interface ITracker : IDisposable
{
    void Log(int step, IReadOnlyDictionary<string, double> metrics);
}

/// <summary>
/// <c>&lt;dir&gt;/metrics.jsonl</c>: one JSON object per step (<c>{"step": n, "key": value, ...}</c>), flushed
/// each line, with the resolved recipe written beside it as <c>recipe.yaml</c>. On resume from step N the lines of
/// later steps (from the interrupted run) are dropped so the file reads as one run.
/// </summary>
public sealed class JsonlTracker : ITracker
{
    public const string FileName = "metrics.jsonl";
    private readonly StreamWriter _writer;

    public JsonlTracker(string dir, RunConfig config, int startStep = 0)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "recipe.yaml"), RecipePrinter.ToYaml(config.Raw));
        FilePath = Path.Combine(dir, FileName);
        var kept = File.Exists(FilePath) && startStep > 0
            ? File.ReadAllLines(FilePath).Where(l => StepOf(l) is int s && s <= startStep).ToList()
            : [];
        File.WriteAllLines(FilePath, kept);
        _writer = new StreamWriter(FilePath, append: true, new UTF8Encoding(false));
    }

    public string FilePath { get; }

    private static int? StepOf(string line)
    {
        try { return JsonNode.Parse(line)?["step"]?.GetValue<int>(); }
        catch (JsonException) { return null; }   // a line cut short by a crash
    }

    public void Log(int step, IReadOnlyDictionary<string, double> metrics)
    {
        var o = new JsonObject { ["step"] = step };
        // JSON has no NaN/inf: write them as strings so the line stays parseable.
        foreach (var (k, v) in metrics)
            o[k] = double.IsFinite(v) ? JsonValue.Create(v) : JsonValue.Create(v.ToString(CultureInfo.InvariantCulture));
        _writer.WriteLine(o.ToJsonString());
        _writer.Flush();
    }

    public void Dispose() => _writer.Dispose();
}

/// <summary>Keeps every step's metrics in memory (tests, reports).</summary>
public sealed class MemoryTracker : ITracker
{
    public List<(int Step, IReadOnlyDictionary<string, double> Metrics)> Entries { get; } = new();
    public void Log(int step, IReadOnlyDictionary<string, double> metrics) => Entries.Add((step, new Dictionary<string, double>(metrics)));
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

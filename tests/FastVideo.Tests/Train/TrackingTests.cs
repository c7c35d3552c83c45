using System.Text.Json.Nodes;
using FastVideo.Train;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using Xunit;

namespace FastVideo.Tests.Train;

public class TrackingTests
{
    [Fact]
    public void MetricsJsonlReadsAsOneRunAfterAResume()
    {
        var dir = TestPaths.TempDir("jsonl");
        var cfg = TrainFixture.Config(dir, maxSteps: 4, saveSteps: 2);
        using (var m = TrainingBuilder.Build(cfg))
        using (var t = new Trainer(m, new RandomBatchSource(), console: TextWriter.Null)) t.Run();
        var straight = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal([1, 2, 3, 4], straight.Select(n => n["step"]!.GetValue<int>()));

        // Resume from checkpoint-2: lines 3 and 4 of the first run are replaced by the resumed run's.
        var resumed = cfg with { Training = cfg.Training with { Checkpoint = cfg.Training.Checkpoint with { ResumeFromCheckpoint = CheckpointManager.PathFor(dir, 2) } } };
        using (var m = TrainingBuilder.Build(resumed))
        using (var t = new Trainer(m, new RandomBatchSource(), console: TextWriter.Null)) t.Run();
        var lines = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal([1, 2, 3, 4], lines.Select(n => n["step"]!.GetValue<int>()));
        Assert.Equal(straight[3]["total_loss"]!.GetValue<double>(), lines[3]["total_loss"]!.GetValue<double>());
        Assert.True(File.Exists(Path.Combine(dir, "recipe.yaml")));
    }

    [Fact]
    public void UnknownTrackerIsNamed()
    {
        var dir = TestPaths.TempDir("jsonl");
        var cfg = TrainFixture.Config(dir);
        cfg = cfg with { Training = cfg.Training with { Tracker = cfg.Training.Tracker with { Trackers = ["wandb"] } } };
        using var m = TrainingBuilder.Build(cfg);
        using var t = new Trainer(m, new RandomBatchSource(), console: TextWriter.Null);
        Assert.Contains("training.tracker.trackers[0]", Assert.Throws<UserError>(() => t.Run()).Message);
    }
}

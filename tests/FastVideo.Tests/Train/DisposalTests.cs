using FastVideo.Configs;
using FastVideo.Train;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Tracking;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>
/// Owners dispose what they own: a DMD2 run built, trained, checkpointed, resumed and disposed many times leaves no
/// native tensor behind.
/// </summary>
public class DisposalTests(ITestOutputHelper output)
{
    /// <summary>
    /// Tensors created on this thread and not yet disposed (TorchSharp's per-thread dispose-scope statistics). Unlike
    /// <see cref="Tensor.TotalCount"/> this is not lowered when the GC finalizes a leaked tensor, and other tests running
    /// in parallel on other threads do not move it; everything below runs on this thread (the loader does not prefetch).
    /// </summary>
    private static long LiveTensors => DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;

    [Theory]
    [InlineData("data_latent", null)]
    [InlineData("simulate", null)]
    [InlineData("simulate", "ops")]   // activation checkpointing (selective: kept outputs too) on the student and critic
    public void BuildingTrainingResumingAndDisposingADmd2RunTwentyTimesLeavesNoLiveTensors(string rollout, string? checkpointing)
    {
        var root = TestPaths.TempDir("dispose");
        var (data, model) = TrainFixture.SyntheticDataAndModel(root);
        long before = LiveTensors;
        const int rounds = 20;
        var live = new long[rounds];
        for (int i = 0; i < rounds; i++)
        {
            RunOnce(Path.Combine(root, $"run{i}"), data, model, rollout, checkpointing);
            live[i] = LiveTensors;
        }
        output.WriteLine($"live tensors before: {before}; after each round: {string.Join(", ", live)}");
        // Round 1 may create what is cached once per process; from round 2 on nothing may accumulate. (Measured: 0
        // live tensors before and after every round, in both rollout modes.)
        Assert.True(live[^1] <= live[1], $"live tensors grew from {live[1]} after round 2 to {live[^1]} after round {rounds}: " +
                                          $"{(live[^1] - live[1]) / (double)(rounds - 2):0.#} per round ({string.Join(", ", live)})");
    }

    /// <summary>Two DMD2 steps on the synthetic data with grad_clip, EMA and validation: step 1 saved, the run stopped
    /// (as a preemption), resumed from the checkpoint and finished.</summary>
    private static void RunOnce(string dir, string data, string model, string rollout, string? checkpointing)
    {
        var method = DMD2MethodTests.MethodOptions(rollout);
        var baseCfg = DMD2MethodTests.Config(dir, maxSteps: 2, saveSteps: 1, method: method, initFrom: model);
        var cfg = baseCfg with
        {
            Training = baseCfg.Training with
            {
                // The simulated rollout starts from zeros of the configured shape (2 frames of 8x8, identity VAE).
                Data = new DataConfig { DataPath = [new DataSource(data, 1)], Seed = 1234, TrainBatchSize = 2, PrefetchBatches = 0, NumLatentT = 2, NumHeight = 8, NumWidth = 8 },
            },
            Pipeline = new PipelineConfig { TextLen = 6 },
            Roles = baseCfg.Roles.ToDictionary(r => r.Key, r => r.Value with { EnableGradientCheckpointingType = checkpointing }),
            Callbacks =
            [
                TrainFixture.Callback("grad_clip", ("max_grad_norm", 1.0)),
                TrainFixture.Callback("ema", ("decay", 0.5)),
                TrainFixture.Callback("validation", ("every_steps", 1L), ("sampling_steps", new List<object?> { 1L }), ("num_prompts", 1L)),
            ],
        };
        Train(cfg, stopAfter: 1);
        var resume = cfg with { Training = cfg.Training with { Checkpoint = cfg.Training.Checkpoint with { ResumeFromCheckpoint = "latest" } } };
        Train(resume, stopAfter: null);
        Assert.Equal([1, 2], CheckpointManager.List(dir).Select(c => c.Step));
    }

    private static void Train(RunConfig cfg, int? stopAfter)
    {
        using var method = TrainingBuilder.Build(cfg);
        using var data = DataLoaderBatchSource.FromConfig(cfg, ModelFamilyRegistry.Default);
        using var trainer = new Trainer(method, data, trackers: [new MemoryTracker()], console: TextWriter.Null);
        foreach (var v in trainer.Callbacks.OfType<ValidationCallback>()) v.Log = TextWriter.Null;
        trainer.Run(stopAfter);
    }
}

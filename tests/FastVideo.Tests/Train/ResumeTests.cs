using FastVideo.Train;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using FastVideo.Train.Tracking;
using Xunit;

namespace FastVideo.Tests.Train;

public class ResumeTests
{
    [Fact]
    public void FinetuneWithAccumulationResumesBitForBit()
    {
        // n = 4 steps straight vs k = 2 steps, a fresh method/models/trainer resumed from checkpoint-2, then 2 more.
        // Gradient accumulation, a warmup+cosine schedule, grad clipping and EMA make every piece of state matter.
        var callbacks = new[] { TrainFixture.Callback("grad_clip", ("max_grad_norm", 0.05)), TrainFixture.Callback("ema", ("decay", 0.9)) };
        var straightDir = TestPaths.TempDir("straight");
        var straight = TrainFixture.Config(straightDir, maxSteps: 4, accum: 2, saveSteps: 2, scheduler: "cosine", warmup: 1, callbacks: callbacks);
        var (lossesA, weightsA, emaA) = RunOnce(straight, stopAfter: null);

        var dir = TestPaths.TempDir("resume");
        var first = TrainFixture.Config(dir, maxSteps: 4, accum: 2, saveSteps: 2, scheduler: "cosine", warmup: 1, callbacks: callbacks);
        var (lossesB1, _, _) = RunOnce(first, stopAfter: 2);
        Assert.Equal([2], CheckpointManager.List(dir).Select(c => c.Step));
        var second = first with { Training = first.Training with { Checkpoint = first.Training.Checkpoint with { ResumeFromCheckpoint = "latest" } } };
        var (lossesB2, weightsB, emaB) = RunOnce(second, stopAfter: null);

        var resumed = lossesB1.Concat(lossesB2).ToList();
        Assert.Equal(4, resumed.Count);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(lossesA[i].Step, resumed[i].Step);
            Assert.Equal(BitConverter.DoubleToInt64Bits(lossesA[i].Loss), BitConverter.DoubleToInt64Bits(resumed[i].Loss));
            Assert.Equal(BitConverter.DoubleToInt64Bits(lossesA[i].GradNorm), BitConverter.DoubleToInt64Bits(resumed[i].GradNorm));
        }
        foreach (var (name, a) in weightsA) Assert.True(a.eq(weightsB[name]).all().item<bool>(), $"weights differ: {name}");
        foreach (var (name, a) in emaA) Assert.True(a.eq(emaB[name]).all().item<bool>(), $"EMA differs: {name}");
        // The losses do change from step to step (the comparison is not vacuous).
        Assert.NotEqual(lossesA[2].Loss, lossesA[3].Loss);
    }

    private static (List<(int Step, double Loss, double GradNorm)> Losses, Dictionary<string, TorchSharp.torch.Tensor> Weights,
        Dictionary<string, TorchSharp.torch.Tensor> Ema) RunOnce(FastVideo.Configs.RunConfig cfg, int? stopAfter)
    {
        using var method = TrainingBuilder.Build(cfg);
        var memory = new MemoryTracker();
        using var trainer = new Trainer(method, new RandomBatchSource(), trackers: [memory], console: TextWriter.Null);
        trainer.Run(stopAfter);
        var weights = method.Student.Transformer.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        var ema = ((EmaCallback)trainer.Callbacks[1]).Shadow.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        return (memory.Entries.Select(e => (e.Step, e.Metrics["total_loss"], e.Metrics["grad_norm/student"])).ToList(), weights, ema);
    }
}

using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Train;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using FastVideo.Train.Tracking;
using FastVideo.Weights;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

public class TrainerTests
{
    private static (TrainingMethod Method, Trainer Trainer, MemoryTracker Memory, StringWriter Console, RandomBatchSource Data)
        Make(RunConfig cfg, RandomBatchSource? data = null)
    {
        var method = TrainingBuilder.Build(cfg);
        var memory = new MemoryTracker();
        var console = new StringWriter();
        data ??= new RandomBatchSource();
        var dir = cfg.Training.Checkpoint.OutputDir;
        var trainer = new Trainer(method, data, trackers: [memory, new JsonlTracker(dir, cfg)], console: console);
        return (method, trainer, memory, console, data);
    }

    [Fact]
    public void RunsAccumulatesLogsTimingsAndProgress()
    {
        var dir = TestPaths.TempDir("tr");
        var cfg = TrainFixture.Config(dir, maxSteps: 3, accum: 2, scheduler: "linear", warmup: 1,
            callbacks: [TrainFixture.Callback("grad_clip", ("max_grad_norm", 0.5))]);
        var (method, trainer, memory, console, data) = Make(cfg);
        using var _m = method;
        var before = method.Student.TrainableParameters().First().detach().clone();
        Assert.Equal(3, trainer.Run());

        Assert.Equal(6, data.Position);                         // 3 steps x 2 micro-batches
        Assert.Equal([1, 2, 3], memory.Entries.Select(e => e.Step));
        var first = memory.Entries[0].Metrics;
        foreach (var k in new[] { "total_loss", "finetune_loss", "grad_norm/student", "lr/student", "step_time_sec",
                                  "time/data", "time/forward", "time/backward", "time/optimizer", "time/callbacks", "time/checkpoint", "time/validation" })
            Assert.True(first.ContainsKey(k), $"missing {k}");
        Assert.Equal(first["total_loss"], first["finetune_loss"]);
        // linear with 1 warmup step over 3: λ = 0, 1, 1/2.
        Assert.Equal([0.0, 1e-3, 0.5e-3], memory.Entries.Select(e => Math.Round(e.Metrics["lr/student"], 12)));
        Assert.False(method.Student.TrainableParameters().First().eq(before).all().item<bool>());

        var lines = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl"));
        Assert.Equal(3, lines.Length);
        Assert.Equal(3, JsonNode.Parse(lines[2])!["step"]!.GetValue<int>());
        Assert.Equal(memory.Entries[2].Metrics["total_loss"], JsonNode.Parse(lines[2])!["total_loss"]!.GetValue<double>());
        Assert.True(File.Exists(Path.Combine(dir, "recipe.yaml")));
        var text = console.ToString();
        Assert.Contains("step 3/3 | total_loss ", text);
        Assert.Contains(" it/s | ETA ", text);
    }

    [Fact]
    public void GradNormClipScalesToTheGlobalNorm()
    {
        var a = new Parameter(zeros(2)); var b = new Parameter(zeros(1));
        a.grad = tensor(new[] { 3f, 4f }); b.grad = tensor(new[] { 12f });
        var total = GradNormClipCallback.ClipGradNorm([a, b], 1.0)!;
        Assert.Equal(13f, total.item<float>(), 5);                   // ‖(5, 12)‖
        float coef = (float)(1.0 / (13 + 1e-6));
        Assert.Equal(3f * coef, a.grad!.data<float>()[0], 6);
        Assert.Equal(12f * coef, b.grad!.data<float>()[0], 6);
        // Below the threshold nothing changes.
        a.grad = tensor(new[] { 0.3f, 0.4f }); b.grad = null;
        GradNormClipCallback.ClipGradNorm([a, b], 1.0);
        Assert.Equal(0.3f, a.grad!.data<float>()[0]);
    }

    [Fact]
    public void CallbackOptionsAreValidatedWithTheirKeyPath()
    {
        var dir = TestPaths.TempDir("tr");
        RunConfig With(params KeyValuePair<string, object>[] cbs) => TrainFixture.Config(dir, callbacks: cbs);
        Assert.Contains("callbacks.swa", Assert.Throws<UserError>(() => CallbackRegistry.Default.Build(With(TrainFixture.Callback("swa")))).Message);
        Assert.Contains("callbacks.ema.decay", Assert.Throws<RecipeError>(() => CallbackRegistry.Default.Build(With(TrainFixture.Callback("ema", ("decay", 1.5))))).Message);
        Assert.Contains("callbacks.ema.decay", Assert.Throws<RecipeError>(() => CallbackRegistry.Default.Build(With(TrainFixture.Callback("ema", ("decay", "high"))))).Message);
        Assert.Contains("callbacks.grad_clip.max_norm", Assert.Throws<RecipeError>(() => CallbackRegistry.Default.Build(With(TrainFixture.Callback("grad_clip", ("max_norm", 1.0))))).Message);
        var built = CallbackRegistry.Default.Build(With(TrainFixture.Callback("ema", ("decay", 0.9), ("start_iter", 2L)), TrainFixture.Callback("grad_clip")));
        Assert.Equal(["ema", "grad_clip"], built.Select(c => c.Name));
        Assert.Equal(2, ((EmaCallback)built[0]).StartIter);
    }

    [Fact]
    public void EmaFollowsTheWeightsFromStartIterAndSwapsThemIn()
    {
        var dir = TestPaths.TempDir("ema");
        var cfg = TrainFixture.Config(dir, maxSteps: 3, saveSteps: 1, callbacks: [TrainFixture.Callback("ema", ("decay", 0.5), ("start_iter", 2L))]);
        var (method, trainer, memory, _, _) = Make(cfg);
        using var _m = method;
        trainer.Run();
        var ema = (EmaCallback)trainer.Callbacks[0];
        Assert.True(ema.Started);
        Assert.False(memory.Entries[0].Metrics.ContainsKey("ema/decay"));
        Assert.Equal(0.5, memory.Entries[1].Metrics["ema/decay"]);
        // Started at step 2 from the step-2 weights, then one update: shadow = 0.5·w2 + 0.5·w3.
        var w2 = SafeTensors.Load(CheckpointManager.RoleWeightsPath(CheckpointManager.PathFor(dir, 2), "student"));
        var w3 = SafeTensors.Load(CheckpointManager.RoleWeightsPath(CheckpointManager.PathFor(dir, 3), "student"));
        foreach (var (name, shadow) in ema.Shadow)
            Assert.True(shadow.allclose(0.5 * w2[name] + 0.5 * w3[name], 1e-6, 1e-7), name);
        var (pname, p) = method.Student.Transformer.named_parameters().First(np => np.parameter.requires_grad);
        using (ema.Swap()) Assert.True(p.eq(ema.Shadow[pname]).all().item<bool>());
        Assert.True(p.eq(w3[pname]).all().item<bool>());
    }

    [Fact]
    public void KeepsTheLastKCheckpointsAndResolvesResumePaths()
    {
        var dir = TestPaths.TempDir("ck");
        var (method, trainer, _, _, _) = Make(TrainFixture.Config(dir, maxSteps: 4, saveSteps: 1, keepLast: 2));
        using var _m = method;
        trainer.Run();
        Assert.Equal([3, 4], CheckpointManager.List(dir).Select(c => c.Step));
        var ck4 = CheckpointManager.PathFor(dir, 4);
        foreach (var f in new[] { "metadata.json", "recipe.yaml", "training_state.json", "training_state.safetensors" })
            Assert.True(File.Exists(Path.Combine(ck4, f)), f);
        Assert.True(File.Exists(CheckpointManager.RoleWeightsPath(ck4, "student")));
        // Role weights are the module's Diffusers-named state dict.
        Assert.Equal(method.Student.Transformer.state_dict().Keys.Order(), SafeTensors.ReadHeader(CheckpointManager.RoleWeightsPath(ck4, "student")).Keys.Order());

        Assert.Equal(ck4, CheckpointManager.ResolveResume("latest", dir));
        Assert.Equal(ck4, CheckpointManager.ResolveResume("LATEST", dir));
        Assert.Equal(ck4, CheckpointManager.ResolveResume(dir, "/elsewhere"));
        var ck3 = CheckpointManager.PathFor(dir, 3);
        Assert.Equal(ck3, CheckpointManager.ResolveResume(ck3, "/elsewhere"));
        Assert.Null(CheckpointManager.ResolveResume("latest", TestPaths.TempDir("empty")));
        Assert.Null(CheckpointManager.ResolveResume("", dir));
        Assert.Contains("resume_from_checkpoint", Assert.Throws<UserError>(() => CheckpointManager.ResolveResume("/no/such/run", dir)).Message);
        Assert.Contains("neither a checkpoint-<step> folder nor a run folder", Assert.Throws<UserError>(() => CheckpointManager.ResolveResume(TestPaths.TempDir("empty"), dir)).Message);
    }

    [Fact]
    public void ACrashDuringACheckpointWriteLeavesThePreviousOneLoadable()
    {
        var dir = TestPaths.TempDir("crash");
        var cfg = TrainFixture.Config(dir, maxSteps: 4, saveSteps: 2);
        var (method, trainer, _, _, _) = Make(cfg);
        using var _m = method;
        trainer.Checkpoints.AfterFileWritten = path =>
        {
            if (path.Contains("checkpoint-4.tmp-") && path.EndsWith("training_state.safetensors")) throw new IOException("disk full (simulated)");
        };
        var e = Assert.Throws<StorageError>(() => trainer.Run());
        Assert.Contains("checkpoint-4.tmp-", e.Message);                          // names the path being written
        Assert.Contains("disk full (simulated)", e.Message);                     // and what failed
        Assert.Contains($"'{CheckpointManager.PathFor(dir, 2)}' is intact", e.Message);
        Assert.Equal(ExitCodes.Storage, e.ExitCode);
        trainer.Dispose();   // releases the run folder
        Assert.Equal([2], CheckpointManager.List(dir).Select(c => c.Step));
        Assert.Empty(Directory.GetDirectories(dir, "*.tmp-*"));

        // The surviving checkpoint resumes and finishes the run.
        var resumed = cfg with { Training = cfg.Training with { Checkpoint = cfg.Training.Checkpoint with { ResumeFromCheckpoint = "latest" } } };
        var (m2, t2, mem2, console2, data2) = Make(resumed);
        using var _m2 = m2;
        Assert.Equal(4, t2.Run());
        Assert.Contains("resumed from", console2.ToString());
        Assert.Equal([3, 4], mem2.Entries.Select(e => e.Step));
        Assert.Equal(4, data2.Position);
        Assert.Equal([2, 4], CheckpointManager.List(dir).Select(c => c.Step));
    }

    [Fact]
    public void ANonFiniteLossStopsTheRunNamingStepRoleAndLossAndKeepsTheLastGoodCheckpoint()
    {
        var dir = TestPaths.TempDir("nan");
        var (method, trainer, memory, _, _) = Make(TrainFixture.Config(dir, maxSteps: 5, saveSteps: 1), new RandomBatchSource(poisonAt: 2));
        using var _m = method;
        var e = Assert.Throws<TrainingError>(() => trainer.Run());
        Assert.Equal(3, e.Step);
        Assert.Equal("student", e.Role);
        Assert.Equal("finetune_loss", e.LossKey);
        Assert.True(double.IsNaN(e.Value));
        Assert.Contains("step 3", e.Message);
        Assert.Contains("'finetune_loss'", e.Message);
        Assert.Contains("NaN", e.Message);
        Assert.Contains("checkpoint-2", e.Message);
        Assert.Equal([1, 2], CheckpointManager.List(dir).Select(c => c.Step));
        Assert.Equal([1, 2], memory.Entries.Select(x => x.Step));
    }
}

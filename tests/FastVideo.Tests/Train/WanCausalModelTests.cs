using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.DistributionMatching;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>The <c>wan_causal</c> family: its options, its block-causal PredictNoise and its tagged streaming caches.</summary>
public class WanCausalModelTests
{
    private static readonly string ModelDir = TestPaths.Fixture("wan_tiny");

    private static WanCausalModel Build(WanCausalRoleConfig? role = null, PipelineConfig? pipeline = null)
    {
        var student = role ?? new WanCausalRoleConfig { InitFrom = ModelDir, NumFramesPerBlock = 1 };
        var run = WanModelTests.Run(student, pipeline) with { Recipe = new RecipeSection { Family = "wan_causal", Method = "finetune" } };
        return (WanCausalModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
    }

    /// <summary>A prepared batch of <paramref name="b"/> clips of 4 latent frames 8x8.</summary>
    private static TrainingBatch Batch(ModelBase model, long b = 2, long t = 4)
    {
        using var raw = WanModelTests.Batch(b, t);
        using var g = new Generator(3, device("cpu"));
        return model.PrepareBatch(raw, g);
    }

    private static Tensor Frames(Tensor btchw, long start, long n) => btchw.narrow(1, start, n);

    private static double MaxAbs(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Fact]
    public void SettingsComeFromTheRoleElsePipelineDitConfigElseTheDefaults()
    {
        var pipeline = new PipelineConfig { TextLen = 16, DitConfig = new DitConfigOverrides { NumFramesPerBlock = 2, LocalAttnSize = 4, SinkSize = 1 } };
        using (var m = Build(new WanCausalRoleConfig { InitFrom = ModelDir, LocalAttnSize = 5 }, pipeline))
            Assert.Equal(new CausalAttentionConfig { NumFramesPerBlock = 2, LocalAttnSize = 5, SinkSize = 1, TextLen = 16 }, m.Attention);
        using (var m = Build(new WanCausalRoleConfig { InitFrom = ModelDir }))
            Assert.Equal(new CausalAttentionConfig(), m.Attention);
        // Values that are fine alone but not together are refused where they meet, naming both places.
        var e = Assert.Throws<UserError>(() => Build(new WanCausalRoleConfig { InitFrom = ModelDir, SinkSize = 3 }, pipeline));
        Assert.Contains("roles.student.local_attn_size (else pipeline.dit_config.local_attn_size, else ", e.Message);
        Assert.Contains("config.json): (4) must be at least sink_size (3) + num_frames_per_block (2)", e.Message);
    }

    [Fact]
    public void ACausalFolderCarriesItsClassNameAndSettings()
    {
        // What SavePretrained writes says wan_causal and the settings it ran with; a model made from it starts from them.
        var dir = TestPaths.TempDir("causal-save");
        using (var m = Build(new WanCausalRoleConfig { InitFrom = ModelDir, NumFramesPerBlock = 2, LocalAttnSize = 5, SinkSize = 1 }))
        {
            Assert.Equal("CausalWanTransformer3DModel", (string?)m.TransformerConfig["_class_name"]);
            m.SavePretrained(Path.Combine(dir, "transformer"));
        }
        foreach (var f in Directory.GetFiles(Path.Combine(ModelDir, "vae")))
        {
            Directory.CreateDirectory(Path.Combine(dir, "vae"));
            File.Copy(f, Path.Combine(dir, "vae", Path.GetFileName(f)));
        }
        using (var m = Build(new WanCausalRoleConfig { InitFrom = dir }))
            Assert.Equal(new CausalAttentionConfig { NumFramesPerBlock = 2, LocalAttnSize = 5, SinkSize = 1 }, m.Attention);
        // pipeline.dit_config and the role still win over the folder.
        using (var m = Build(new WanCausalRoleConfig { InitFrom = dir, SinkSize = 0 }, new PipelineConfig { DitConfig = new DitConfigOverrides { LocalAttnSize = -1 } }))
            Assert.Equal(new CausalAttentionConfig { NumFramesPerBlock = 2 }, m.Attention);
        Assert.Equal("wan_causal", ModelFamilyRegistry.Default.ForTransformerClass("CausalWanTransformer3DModel")!.Name);
        Assert.Equal("wan", ModelFamilyRegistry.Default.ForTransformerClass("WanTransformer3DModel")!.Name);
    }

    [Fact]
    public void PredictNoiseIsTheBlockCausalTrainingForward()
    {
        using var scope = NewDisposeScope();
        using var model = Build();
        using var batch = Batch(model);
        using var _ = no_grad();
        var x = randn([2, 4, 4, 8, 8]);
        var t = rand([2, 4]) * 1000;
        var v = model.PredictNoise(x, t, batch, conditional: true);
        var direct = model.CausalTransformer.Forward(x.permute(0, 2, 1, 3, 4), t, batch.Conditional[Conditioning.Text].Values).permute(0, 2, 1, 3, 4);
        Assert.Equal(0, MaxAbs(v, direct));
        // The same clip streamed frame by frame (blocks of 1) through a cache.
        var streamed = cat(Enumerable.Range(0, 4).Select(f =>
            model.PredictNoiseStreaming(Frames(x, f, 1), t.narrow(1, f, 1), batch, conditional: true, curStartFrame: f)!).ToArray(), 1);
        Assert.True(MaxAbs(streamed, v) < 1e-4);
        // A scalar and a per-sample timestep are per-frame timesteps too.
        Assert.Equal(0, MaxAbs(model.PredictNoise(x, full([2], 300f), batch, true), model.PredictNoise(x, full([2, 4], 300f), batch, true)));
    }

    /// <summary>Frame 2 of clip <paramref name="x"/> predicted after frames 0 and 1 were streamed on tag "pos" of a fresh model.</summary>
    private static Tensor ThirdFrameAlone(Tensor x, Tensor t, TrainingBatch batch)
    {
        using var fresh = Build();
        for (int f = 0; f < 2; f++) fresh.PredictNoiseStreaming(Frames(x, f, 1), t.narrow(1, f, 1), batch, true, storeKv: true, curStartFrame: f);
        return fresh.PredictNoiseStreaming(Frames(x, 2, 1), t.narrow(1, 2, 1), batch, true, curStartFrame: 2)!;
    }

    [Fact]
    public void TwoCacheTagsNeverSeeEachOthersState()
    {
        using var scope = NewDisposeScope();
        using var model = Build();
        using var batch = Batch(model);
        using var _ = no_grad();
        var (x, other, t) = (randn([2, 4, 4, 8, 8]), randn([2, 4, 4, 8, 8]), rand([2, 4]) * 1000);
        for (int f = 0; f < 2; f++)
        {
            model.PredictNoiseStreaming(Frames(x, f, 1), t.narrow(1, f, 1), batch, true, cacheTag: "pos", storeKv: true, curStartFrame: f);
            model.PredictNoiseStreaming(Frames(other, f, 1), t.narrow(1, f, 1), batch, true, cacheTag: "neg", storeKv: true, curStartFrame: f);
        }
        var pos = model.PredictNoiseStreaming(Frames(x, 2, 1), t.narrow(1, 2, 1), batch, true, cacheTag: "pos", curStartFrame: 2)!;
        var neg = model.PredictNoiseStreaming(Frames(x, 2, 1), t.narrow(1, 2, 1), batch, true, cacheTag: "neg", curStartFrame: 2)!;
        var alone = ThirdFrameAlone(x, t, batch);
        Assert.True(MaxAbs(pos, alone) < 1e-6);
        Assert.True(MaxAbs(neg, alone) > 1e-3, "the other tag's context must change the prediction");
    }

    [Fact]
    public void ClearCachesClearsOnlyItsTag()
    {
        using var scope = NewDisposeScope();
        using var model = Build();
        using var batch = Batch(model);
        using var _ = no_grad();
        var (x, t) = (randn([2, 4, 4, 8, 8]), rand([2, 4]) * 1000);
        foreach (var tag in new[] { "pos", "neg" })
            for (int f = 0; f < 2; f++)
                model.PredictNoiseStreaming(Frames(x, f, 1), t.narrow(1, f, 1), batch, true, cacheTag: tag, storeKv: true, curStartFrame: f);
        model.ClearCaches("neg");
        var pos = model.PredictNoiseStreaming(Frames(x, 2, 1), t.narrow(1, 2, 1), batch, true, cacheTag: "pos", curStartFrame: 2)!;
        Assert.True(MaxAbs(pos, ThirdFrameAlone(x, t, batch)) < 1e-6);
        // "neg" starts over: frame 2 cannot follow frames it no longer holds.
        var e = Assert.Throws<InvalidOperationException>(() =>
            model.PredictNoiseStreaming(Frames(x, 2, 1), t.narrow(1, 2, 1), batch, true, cacheTag: "neg", curStartFrame: 2));
        Assert.Contains("chunks must come in order", e.Message);
        model.ClearCaches("never-used");   // nothing to clear is fine
    }

    [Fact]
    public void CacheIsRebuiltWhenTheBatchSizeChanges()
    {
        using var scope = NewDisposeScope();
        using var model = Build();
        using var batch2 = Batch(model, b: 2);
        using var batch1 = Batch(model, b: 1);
        using var _ = no_grad();
        var (x, t) = (randn([2, 4, 4, 8, 8]), rand([2, 4]) * 1000);
        for (int f = 0; f < 2; f++) model.PredictNoiseStreaming(Frames(x, f, 1), t.narrow(1, f, 1), batch2, true, storeKv: true, curStartFrame: f);
        // One sample on the same tag: a cache for batch 1, empty, so the clip starts at frame 0 again.
        var one = model.PredictNoiseStreaming(Frames(x, 0, 1).narrow(0, 0, 1), t.narrow(1, 0, 1).narrow(0, 0, 1), batch1, true, curStartFrame: 0)!;
        using var fresh = Build();
        var expected = fresh.PredictNoiseStreaming(Frames(x, 0, 1).narrow(0, 0, 1), t.narrow(1, 0, 1).narrow(0, 0, 1), batch1, true, curStartFrame: 0)!;
        Assert.Equal(0, MaxAbs(one, expected));
    }

    [Fact]
    public void StoreKvWritesTheCacheAndReturnsNothing()
    {
        using var scope = NewDisposeScope();
        using var model = Build();
        using var batch = Batch(model);
        ICausalModel causal = model;
        var (x, t) = (randn([2, 4, 4, 8, 8]), rand([2, 4]) * 1000);
        Assert.Null(causal.PredictX0Streaming(Frames(x, 0, 1), t.narrow(1, 0, 1), batch, true, storeKv: true));
        var x0 = causal.PredictX0Streaming(Frames(x, 1, 1), t.narrow(1, 1, 1), batch, true, curStartFrame: 1)!;
        Assert.Equal(new long[] { 2, 1, 4, 8, 8 }, x0.shape);
        Assert.Throws<ArgumentException>(() => model.PredictNoiseStreaming(Frames(x, 0, 1), t.narrow(1, 0, 1), batch, true, curStartFrame: -1));
    }

    [Fact]
    public void CheckpointedStreamingGradientsAndSnapshotsAreReleasedByBackward()
    {
        // Checkpoint-safe caches: with activation checkpointing the cache holds the whole clip (num_latent_t frames),
        // so a rollout that streams on after a grad-enabled chunk does not roll what its recomputation reads.
        using var scope = NewDisposeScope();
        var role = new WanCausalRoleConfig { InitFrom = ModelDir, NumFramesPerBlock = 1, LocalAttnSize = 1, EnableGradientCheckpointingType = "full" };
        var run = WanModelTests.Run(role) with { Recipe = new RecipeSection { Family = "wan_causal", Method = "finetune" } };
        run = run with { Training = run.Training with { Data = run.Training.Data with { NumLatentT = 4 } } };
        using var model = (WanCausalModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
        Assert.Equal("full", model.AppliedCheckpointing);
        using var batch = Batch(model);
        var (x, t) = (randn([2, 4, 4, 8, 8]), rand([2, 4]) * 1000);
        using (no_grad()) model.PredictNoiseStreaming(Frames(x, 0, 1), t.narrow(1, 0, 1), batch, true, storeKv: true);
        var v = model.PredictNoiseStreaming(Frames(x, 1, 1), t.narrow(1, 1, 1), batch, true, curStartFrame: 1)!;
        using (no_grad())
            for (int f = 1; f < 4; f++) model.PredictNoiseStreaming(Frames(x, f, 1), t.narrow(1, f, 1), batch, true, storeKv: true, curStartFrame: f);
        model.ClearCaches("pos");   // as a rollout ends: the recomputation still reads its snapshots
        model.Backward(v.square().mean(), null, 1);
        Assert.Contains(model.TrainableParameters(), p => p.grad is not null && p.grad.abs().sum().item<float>() > 0);
    }

    [Fact]
    public void RecipeWithACausalStudentAndABidirectionalTeacherTrains()
    {
        var dir = TestPaths.TempDir("causal-dmd");
        var yaml = $$"""
            recipe: {family: wan, method: dmd2}
            roles:
              student: {family: wan_causal, init_from: {{ModelDir}}, num_frames_per_block: 1}
              teacher: {init_from: {{ModelDir}}, trainable: false}
              critic: {init_from: {{ModelDir}}}
            method:
              rollout_mode: simulate
              dmd_denoising_steps: [1000, 750, 500, 250]
              generator_update_interval: 1
              fake_score_learning_rate: 1.0e-3
              fake_score_betas: [0.0, 0.999]
              fake_score_lr_scheduler: constant
              cfg_uncond: {text: zero}
            training:
              compute_precision: fp32
              optimizer: {learning_rate: 1.0e-3}
              data: {train_batch_size: 1, num_latent_t: 2, num_height: 64, num_width: 64}
              checkpoint: {output_dir: {{dir}}}
            pipeline:
              dit_config: {local_attn_size: 2}
            """;
        var config = RecipeLoader.LoadText(yaml, "causal.yaml", [], ModelFamilyRegistry.Default);
        Assert.Equal("wan_causal", config.Roles["student"].Family);
        using var method = (DMD2Method)TrainingBuilder.Build(config);
        var student = Assert.IsType<WanCausalModel>(method.Student);
        Assert.Equal(new CausalAttentionConfig { NumFramesPerBlock = 1, LocalAttnSize = 2 }, student.Attention);
        Assert.IsType<WanModel>(method.Teacher);
        method.OnTrainStart();
        var source = new RandomBatchSource();
        // Student, teacher and critic start equal, so the first DMD gradient is zero; the second is not.
        for (int step = 1; step <= 2; step++)
        {
            using var b = source.Next();
            var r = method.SingleTrainStep(b, step);
            Assert.True(float.IsFinite(r.Losses["generator_loss"].item<float>()));
            method.Backward(r, 1);
            if (step == 2) Assert.Contains(method.Student.TrainableParameters(), p => p.grad is not null && p.grad.abs().sum().item<float>() > 0);
            method.OptimizersSchedulersStep(step);
            method.OptimizersZeroGrad(step);
        }
    }

    [Fact]
    public void BadCausalSettingsInTheRecipeAreErrorsWithTheirLine()
    {
        var yaml = $$"""
            recipe: {family: wan_causal, method: finetune}
            roles:
              student: {init_from: {{ModelDir}}, num_frames_per_block: 4}
            """;
        var e = Assert.Throws<RecipeError>(() => RecipeLoader.LoadText(yaml, "causal.yaml", [], ModelFamilyRegistry.Default));
        Assert.Contains("roles.student.num_frames_per_block", e.Message);
        Assert.Contains("must be 1, 2 or 3, got 4", e.Message);
        yaml = """
            recipe: {family: wan, method: finetune}
            roles:
              student: {init_from: x}
            pipeline:
              dit_config: {sink_size: -1}
            """;
        e = Assert.Throws<RecipeError>(() => RecipeLoader.LoadText(yaml, "causal.yaml", [], ModelFamilyRegistry.Default));
        Assert.Contains("pipeline.dit_config.sink_size", e.Message);
    }

    [Fact]
    public void FamiliesCommandListsTheCausalOptions()
    {
        var stdout = new StringWriter();
        Assert.Equal(0, FastVideo.Cli.Commands.FamiliesCommand.Run(ModelFamilyRegistry.Default, stdout));
        var text = stdout.ToString();
        var causal = text[text.IndexOf("wan_causal:", StringComparison.Ordinal)..];
        foreach (var key in new[] { "num_frames_per_block", "local_attn_size", "sink_size", "sliding_window_num_frames" })
            Assert.Contains(key, causal);
        Assert.Contains("  FastVideo class path (models.<role>._target_): fastvideo.train.models.wan.WanCausalModel, ", causal);
    }
}

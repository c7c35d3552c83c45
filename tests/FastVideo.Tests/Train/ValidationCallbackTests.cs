using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data.Synthetic;
using FastVideo.Models.Dits;
using FastVideo.Train;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Tracking;
using FastVideo.Weights;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

public class ValidationCallbackTests
{
    // ---------------------------------------------------------------------------------------------- fixtures

    /// <summary>A tiny synthetic dataset (4 classes, 2-frame 8x8 RGB clips) and a tiny 3-channel Wan beside it whose
    /// vae/config.json is the dataset's identity VAE, as the quickstart lays them out.</summary>
    private static (string Data, string Model) Synthetic()
    {
        var root = TestPaths.TempDir("val");
        var (data, model) = TrainFixture.SyntheticDataAndModel(root);
        return (data, model);
    }

    private static RunConfig SyntheticConfig(string output, int maxSteps, params KeyValuePair<string, object>[] callbacks)
    {
        var (data, model) = Synthetic();
        var cfg = TrainFixture.Config(output, maxSteps: maxSteps, initFrom: model, callbacks: callbacks);
        return cfg with
        {
            // No num_latent_t/num_height/num_width: validation takes the latent shape from the dataset's first row.
            Training = cfg.Training with { Data = new DataConfig { DataPath = [new DataSource(data, 1)], Seed = 1234, TrainBatchSize = 2 } },
            Pipeline = new PipelineConfig { TextLen = 6 },
        };
    }

    private static (TrainingMethod Method, Trainer Trainer, MemoryTracker Memory, DataLoaderBatchSource Data) Make(RunConfig cfg)
    {
        var method = TrainingBuilder.Build(cfg);
        var data = DataLoaderBatchSource.FromConfig(cfg, ModelFamilyRegistry.Default);
        var memory = new MemoryTracker();
        var trainer = new Trainer(method, data, trackers: [memory], console: TextWriter.Null);
        foreach (var v in trainer.Callbacks.OfType<ValidationCallback>()) v.Log = TextWriter.Null;
        return (method, trainer, memory, data);
    }

    private static List<object?> L(params object[] items) => items.ToList<object?>();

    private static Tensor LoadLatents(string file)
    {
        var t = SafeTensors.Load(file);
        return t["latents"];
    }

    // ---------------------------------------------------------------------------------------------- tests

    [Fact]
    public void RunValidatesAtStartAndEveryTwoStepsWritingGifsLatentsAndMetrics()
    {
        var output = TestPaths.TempDir("valrun");
        var cfg = SyntheticConfig(output, maxSteps: 4, TrainFixture.Callback("validation",
            ("every_steps", 2L), ("sampling_steps", L(1L, 2L)), ("seeds", L(5L, 6L))));
        var (method, trainer, memory, data) = Make(cfg);
        using var _m = method; using var _t = trainer; using var _d = data;
        trainer.Run();

        var dir = Path.Combine(output, "validation");
        Assert.Equal(["step_0", "step_2", "step_4"], Directory.GetDirectories(dir).Select(Path.GetFileName).Order());
        foreach (var step in new[] { 0, 2, 4 })
        {
            var sd = Path.Combine(dir, $"step_{step}");
            // 2 step counts x 2 seeds x 4 prompts (the dataset's classes).
            Assert.Equal(16, Directory.GetFiles(sd, "*.gif").Length);
            Assert.True(File.Exists(Path.Combine(sd, "1steps_prompt03_seed6.gif")));
            using var lat = LoadLatents(Path.Combine(sd, "latents_2steps.safetensors"));
            Assert.Equal(new long[] { 2, 4, 3, 2, 8, 8 }, lat.shape);   // [seed, prompt, C, T, H, W]
            var m = JsonNode.Parse(File.ReadAllText(Path.Combine(sd, "metrics.json")))!;
            Assert.Equal(step, (int)m["step"]!);
            Assert.Equal("euler", (string?)m["sampler"]);
            Assert.Equal("a red square moving left", (string?)m["prompts"]![0]);
            var runs = m["runs"]!.AsArray();
            Assert.Equal([1, 2], runs.Select(r => (int)r!["steps"]!));
            foreach (var r in runs)
            {
                Assert.InRange((double)r!["accuracy"]!, 0, 1);
                Assert.True((double)r["sharpness"]! >= 0);
                Assert.Equal(8, r["samples"]!.AsArray().Count);
            }
        }

        // Metrics reach the tracker at the validated steps (step 0 has no step log: metrics.json only).
        var byStep = memory.Entries.ToDictionary(e => e.Step, e => e.Metrics);
        foreach (var k in new[] { "val/accuracy_1steps", "val/sharpness_1steps", "val/accuracy_2steps", "val/sharpness_2steps" })
        {
            Assert.True(byStep[2].ContainsKey(k) && byStep[4].ContainsKey(k), k);
            Assert.False(byStep[1].ContainsKey(k) || byStep[3].ContainsKey(k), k);
        }
        var cb = trainer.Callbacks.OfType<ValidationCallback>().Single();
        Assert.Equal(byStep[4]["val/accuracy_2steps"], cb.Results[^1].Runs[1].Accuracy);
        // The GIFs reach the trackers as images at the same steps, byte for byte, tagged by their file names.
        Assert.Equal([2, 4], memory.Images.Select(i => i.Step).Distinct());
        foreach (var (step, image) in memory.Images)
        {
            var file = Path.Combine(dir, $"step_{step}", image.Tag["val/".Length..] + ".gif");
            Assert.Equal(File.ReadAllBytes(file), image.Encoded);
            Assert.Equal((8 * 16, 8 * 16), (image.Width, image.Height));   // 8x8 clips at the 128-pixel preview scale
        }
        Assert.Equal(2 * 16, memory.Images.Count);
        Assert.Contains(memory.Images, i => i.Step == 4 && i.Image.Tag == "val/1steps_prompt03_seed6");
        Assert.True(method.Student.Transformer.training);   // eval during validation only

        // Validation draws nothing from the training RNGs: the same run without it has bit-identical losses.
        var plain = SyntheticConfig(TestPaths.TempDir("valplain"), maxSteps: 4);
        var (method2, trainer2, memory2, data2) = Make(plain);
        using var _m2 = method2; using var _t2 = trainer2; using var _d2 = data2;
        trainer2.Run();
        Assert.Equal(memory2.Entries.Select(e => e.Metrics["total_loss"]), memory.Entries.Select(e => e.Metrics["total_loss"]));
    }

    [Fact]
    public void SameWeightsGiveTheSameSamplesAndWeightsAndModeAreRestored()
    {
        var output = TestPaths.TempDir("valdet");
        var prompts = Path.Combine(output, "prompts.json");
        File.WriteAllText(prompts, """{"data": [{"caption": "a green square moving right"}, {"caption": "a red square moving left"}, {"caption": "a red square moving right"}]}""");
        // Few-step sampling with guidance: the model folder has no negative prompt, so the dataset's is used.
        var cfg = SyntheticConfig(output, maxSteps: 1, TrainFixture.Callback("validation", ("dataset_file", prompts), ("num_prompts", 2L),
            ("sampling_timesteps", L(1000L, 500L)), ("guidance_scale", 2.0)));
        using var method = TrainingBuilder.Build(cfg);
        var cb = (ValidationCallback)CallbackRegistry.Default.Build(cfg).Single();
        method.OnTrainStart();
        cb.OnTrainStart(method, 0);
        var weights = method.Student.Transformer.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());

        var a = cb.Validate(7);
        var b = cb.Validate(8);
        Assert.Equal("few_step", a.Sampler);
        Assert.Equal(["a green square moving right", "a red square moving left"], a.Prompts);
        Assert.Equal([1234], a.Seeds);                       // default seeds = [data.seed]
        using var la = LoadLatents(Path.Combine(a.Directory, "latents_2steps.safetensors"));
        using var lb = LoadLatents(Path.Combine(b.Directory, "latents_2steps.safetensors"));
        Assert.Equal(new long[] { 1, 2, 3, 2, 8, 8 }, la.shape);
        Assert.True(la.eq(lb).all().item<bool>());
        Assert.Equal(File.ReadAllBytes(Path.Combine(a.Directory, "2steps_prompt01_seed1234.gif")),
                     File.ReadAllBytes(Path.Combine(b.Directory, "2steps_prompt01_seed1234.gif")));
        Assert.Equal(a.Runs[0].Accuracy, b.Runs[0].Accuracy);
        // Different prompts give different samples (conditioning reaches the model).
        Assert.False(la[0, 0].allclose(la[0, 1]));

        Assert.True(method.Student.Transformer.training);
        foreach (var (k, v) in method.Student.Transformer.state_dict()) Assert.True(v.eq(weights[k]).all().item<bool>(), k);
    }

    [Fact]
    public void UsesEmaWeightsWhenAskedAndWritesLatentsOnlyForARealVae()
    {
        // wan_tiny has a real (Wan) VAE config: no GIFs, latents only, said once.
        var output = TestPaths.TempDir("valema");
        var embeds = Path.Combine(output, "embeds.safetensors");
        using (var g = new Generator(2, device("cpu")))
            SafeTensors.Save(embeds, [new("prompt_embeds", randn([2, 5, 24], generator: g))]);
        var val = TrainFixture.Callback("validation", ("every_steps", 2L), ("run_at_start", false), ("prompt_embeds_file", embeds), ("sampling_steps", L(2L)));
        var cfg = TrainFixture.Config(output, maxSteps: 2, callbacks: [TrainFixture.Callback("ema", ("decay", 0.5)), val]);
        using var method = TrainingBuilder.Build(cfg);
        var log = new StringWriter();
        var callbacks = CallbackRegistry.Default.Build(cfg);
        var cb = (ValidationCallback)callbacks[1];
        cb.Log = log;
        Assert.Same(callbacks[0], cb.Ema);                     // linked to the recipe's EMA
        using (var trainer = new Trainer(method, new RandomBatchSource(), callbacks, [new MemoryTracker()], TextWriter.Null))
            trainer.Run();

        var result = Assert.Single(cb.Results);
        Assert.Equal(2, result.Step);
        Assert.Equal("ema", result.Weights);
        Assert.Empty(Directory.GetFiles(result.Directory, "*.gif"));
        Assert.Null(result.Runs[0].Accuracy);                   // no evaluator without the synthetic dataset
        Assert.Equal(1, log.ToString().Split("writing latents only").Length - 1);
        using var emaLatents = LoadLatents(Path.Combine(result.Directory, "latents_2steps.safetensors"));
        Assert.Equal(new long[] { 1, 2, 4, 2, 8, 8 }, emaLatents.shape);   // [seed, prompt, C=4, T=2, 64/8, 64/8]

        // The same samples come from the live weights with the EMA swapped in by hand, and differ from the live ones.
        var live = (ValidationCallback)CallbackRegistry.Default.Build(cfg with
        {
            Callbacks = [TrainFixture.Callback("validation", ("use_ema", false), ("prompt_embeds_file", embeds), ("sampling_steps", L(2L)), ("output_dir", Path.Combine(output, "live")))],
        }).Single();
        live.Log = TextWriter.Null;
        live.OnTrainStart(method, 0);
        using var liveLatents = LoadLatents(Path.Combine(live.Validate(2).Directory, "latents_2steps.safetensors"));
        Assert.False(liveLatents.allclose(emaLatents));
        var ema = (EmaCallback)callbacks[0];
        using (ema.Swap())
        {
            using var swapped = LoadLatents(Path.Combine(live.Validate(3).Directory, "latents_2steps.safetensors"));
            Assert.True(swapped.eq(emaLatents).all().item<bool>());
        }
        Assert.Equal("live", live.Results[0].Weights);
    }

    [Fact]
    public void NumFramesSetsTheSampledLengthInPixelFramesAsUpstream()
    {
        // num_frames: 9 pixel frames are (9 - 1) / 4 + 1 = 3 latent frames of wan_tiny's VAE (the data says 2).
        var dir = TestPaths.TempDir("valframes");
        var embeds = Path.Combine(dir, "embeds.safetensors");
        SafeTensors.Save(embeds, [new("prompt_embeds", ones([1, 3, 24]))]);
        var cfg = TrainFixture.Config(dir, callbacks: [TrainFixture.Callback("validation",
            ("prompt_embeds_file", embeds), ("sampling_steps", L(1L)), ("num_frames", 9L))]);
        using var method = TrainingBuilder.Build(cfg);
        var cb = (ValidationCallback)CallbackRegistry.Default.Build(cfg).Single();
        cb.Log = TextWriter.Null;
        cb.OnTrainStart(method, 0);
        using var latents = LoadLatents(Path.Combine(cb.Validate(0).Directory, "latents_1steps.safetensors"));
        Assert.Equal(3, latents.shape[3]);
    }

    [Fact]
    public void StartHookValidatesOnlyAFreshRun()
    {
        var dir = TestPaths.TempDir("valstart");
        var embeds = Path.Combine(dir, "embeds.safetensors");
        SafeTensors.Save(embeds, [new("prompt_embeds", ones([1, 3, 24]))]);
        var cfg = TrainFixture.Config(dir);
        using var method = TrainingBuilder.Build(cfg);
        method.OnTrainStart();
        ValidationCallback Make(params (string, object?)[] options)
        {
            var cb = (ValidationCallback)CallbackRegistry.Default.Build(cfg with
            {
                Callbacks = [TrainFixture.Callback("validation", [("every_steps", 2L), ("prompt_embeds_file", embeds), ("sampling_steps", L(1L)), .. options])],
            }).Single();
            cb.Log = TextWriter.Null;
            cb.OnTrainStart(method, 0);
            return cb;
        }

        // A run resumed at step 4 validated step 4 right after saving that checkpoint: no repeat at the start hook.
        var resumed = Make();
        resumed.OnValidationBegin(method, 4);
        resumed.OnValidationBegin(method, 5);
        Assert.Empty(resumed.Results);
        resumed.OnValidationBegin(method, 6);
        Assert.Equal([6], resumed.Results.Select(r => r.Step));

        var fresh = Make();
        fresh.OnValidationBegin(method, 0);
        Assert.Equal([0], fresh.Results.Select(r => r.Step));
        var noStart = Make(("run_at_start", false));
        noStart.OnValidationBegin(method, 0);
        Assert.Empty(noStart.Results);
    }

    [Fact]
    public void OptionErrorsNameTheKey()
    {
        var dir = TestPaths.TempDir("valopt");
        RunConfig With(params (string, object?)[] options) => TrainFixture.Config(dir, callbacks: [TrainFixture.Callback("validation", options)]);
        void Fails(string key, params (string, object?)[] options) =>
            Assert.Contains($"callbacks.validation.{key}", Assert.Throws<RecipeError>(() => CallbackRegistry.Default.Build(With(options))).Message);

        Fails("every_steps", ("every_steps", -1L));
        Fails("every_steps", ("every_steps", "often"));
        Fails("prompts", ("prompts", L("a")), ("dataset_file", "x.json"));
        Fails("prompts[1]", ("prompts", L("a", L("b"))));   // (a number is taken as written, as run_name: 2024 is)
        Fails("num_prompts", ("num_prompts", 0L));
        Fails("seeds", ("seeds", L(1L, 1L)));
        Fails("sampling_steps[0]", ("sampling_steps", L(0L)));
        Fails("sampling_steps[1]", ("sampling_steps", L(4L, "many")));
        Fails("sampling_timesteps", ("sampling_timesteps", L(500L, 750L)));
        Fails("sampling_timesteps", ("sampling_steps", L(4L)), ("sampling_timesteps", L(1000L, 500L)));
        Fails("guidance_scale", ("guidance_scale", -1.0));
        Fails("num_frames", ("num_frames", 0L));
        Fails("pipeline_target", ("pipeline_target", "fastvideo.pipelines.basic.ltx2.ltx2_pipeline.LTX2Pipeline"));
        Fails("flow_shift", ("flow_shift", 0.0));
        Fails("use_ema", ("use_ema", "yes"));
        Fails("sampling_step", ("sampling_step", L(4L)));   // a typo is an unknown option

        // Comma-separated lists (as --set gives them) parse.
        var ok = (ValidationCallback)CallbackRegistry.Default.Build(With(("sampling_steps", "40, 8"), ("seeds", "1,2"))).Single();
        Assert.Equal([40, 8], ok.SamplingSteps);
        Assert.Equal([1, 2], ok.Seeds);

        // Errors that need the run: an unknown role, and no way to embed prompts on a non-synthetic dataset.
        using var method = TrainingBuilder.Build(TrainFixture.Config(dir));
        method.OnTrainStart();
        var badRole = (ValidationCallback)CallbackRegistry.Default.Build(With(("roles", "teacher"))).Single();
        Assert.Contains("callbacks.validation.roles", Assert.Throws<UserError>(() => badRole.OnTrainStart(method, 0)).Message);
        var noText = (ValidationCallback)CallbackRegistry.Default.Build(With(("prompts", L("a cat")))).Single();
        Assert.Contains("callbacks.validation.prompt_embeds_file", Assert.Throws<UserError>(() => noText.OnTrainStart(method, 0)).Message);
        var missing = (ValidationCallback)CallbackRegistry.Default.Build(With(("prompt_embeds_file", Path.Combine(dir, "nope.safetensors")))).Single();
        Assert.Contains("callbacks.validation.prompt_embeds_file", Assert.Throws<UserError>(() => missing.OnTrainStart(method, 0)).Message);
        // every_steps: 0 turns validation off entirely (nothing is resolved, nothing runs).
        var off = (ValidationCallback)CallbackRegistry.Default.Build(With(("every_steps", 0L), ("roles", "teacher"))).Single();
        off.OnTrainStart(method, 0);
        off.OnValidationBegin(method, 0);
        Assert.Empty(off.Results);
    }
}

using FastVideo.Configs;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods.DistributionMatching;
using Xunit;
using static FastVideo.Tests.Configs.RecipeTestSupport;

namespace FastVideo.Tests.Configs;

public class RecipeLoaderTests
{
    [Fact]
    public void ExampleRecipeBindsEverySection()
    {
        var c = Load(Example);

        Assert.Equal("wan", c.Recipe.Family);
        Assert.Equal("dmd2", c.Recipe.Method);

        Assert.Equal(["student", "teacher"], c.Roles.Keys);
        var student = c.Roles["student"];
        Assert.Equal(typeof(RoleConfig), student.GetType());
        Assert.Equal("path/or/Org/Model", student.InitFrom);
        Assert.True(student.Trainable);
        Assert.Null(student.FlowShift);
        var teacher = Assert.IsType<WanCausalRoleConfigForTest>(c.Roles["teacher"]);
        Assert.Equal("Org/Teacher", teacher.InitFrom);
        Assert.False(teacher.Trainable);
        Assert.Equal(5.0, teacher.FlowShift);

        var t = c.Training;
        Assert.Equal([new DataSource("data/synth", 1)], t.Data.DataPath);
        Assert.Equal(2, t.Data.TrainBatchSize);
        Assert.Equal(42, t.Data.Seed);
        Assert.Equal(4, t.Data.NumLatentT);
        Assert.Equal(1e-4, t.Optimizer.LearningRate);
        Assert.Equal([0.9, 0.999], t.Optimizer.Betas);
        Assert.Equal("cosine", t.Optimizer.LrScheduler);
        Assert.Equal(100, t.Loop.MaxTrainSteps);
        Assert.Equal("fp32", t.DitPrecision);

        Assert.Equal(3.0, c.Pipeline.FlowShift);

        var m = c.MethodOptions<DMD2Options>();
        Assert.Equal(RolloutMode.Simulate, m.RolloutMode);
        Assert.Equal([1000, 750, 500, 250], m.DmdDenoisingSteps);
        Assert.Equal(1e-5, m.FakeScoreLearningRate);
        Assert.Equal([0.0, 0.999], m.FakeScoreBetas);
        Assert.Equal("constant", m.FakeScoreLrScheduler);
        Assert.Equal(1, m.GeneratorUpdateInterval);   // defaults of the options the recipe leaves out
        Assert.Equal(1.0, m.RealScoreGuidanceScale);
        Assert.False(m.WarpDenoisingStep);
        Assert.Null(m.CfgUncond);
        Assert.Null(m.LrStepRules);

        Assert.Equal(["grad_clip", "ema"], c.Callbacks.Select(kv => kv.Key));
        Assert.Equal(new GradClipOptions { MaxGradNorm = 1.0 }, c.CallbackOptions<GradClipOptions>("grad_clip"));
        Assert.Equal(new EmaOptions { Decay = 0.999 }, c.CallbackOptions<EmaOptions>("ema"));
        Assert.Null(c.CallbackOptions<ValidationOptions>("validation"));
    }

    [Fact]
    public void AbsentKeysGetTheRecordDefaults()
    {
        var c = Load(Minimal);
        var t = c.Training;
        Assert.Equal(1, t.Distributed.NumGpus);
        Assert.Null(t.Distributed.SpSize);
        Assert.Empty(t.Data.DataPath);
        Assert.Equal(1, t.Data.TrainBatchSize);
        Assert.True(t.Data.DropLast);
        Assert.Equal(2, t.Data.PrefetchBatches);
        Assert.Equal([0.9, 0.999], t.Optimizer.Betas);
        Assert.Equal(1e-8, t.Optimizer.Eps);
        Assert.Equal("constant", t.Optimizer.LrScheduler);
        Assert.Equal(0.5, t.Optimizer.MinLrRatio);
        Assert.Equal(1, t.Loop.GradientAccumulationSteps);
        Assert.Equal("fastvideo", t.Tracker.ProjectName);
        Assert.Equal("uniform", t.Model.WeightingScheme);
        Assert.Equal(1.0, t.Model.LogitStd);
        Assert.Empty(t.Model.MobaConfig);
        Assert.Equal("fp32", t.DitPrecision);
        Assert.Equal("cpu", t.Device);
        Assert.True(c.Roles["student"].Trainable);
        Assert.Null(c.Pipeline.FlowShift);
        Assert.Equal(new MethodOptions(), c.Method); // no method named: only the common options
        Assert.Empty(c.Callbacks);
    }

    [Fact]
    public void ExplicitFalsyValuesStayAsWritten()
    {
        // Upstream turns these into their defaults ("x or default"); we keep what the user wrote.
        var c = Load(Minimal + """

            training:
              optimizer: {min_lr_ratio: 0, eps: 0.0}
              model: {logit_std: 0, mode_scale: 0.0}
              data: {drop_last: false, prefetch_batches: 0}
              tracker: {project_name: ""}
              loop: {max_train_steps: 0}
            """);
        var t = c.Training;
        Assert.Equal(0.0, t.Optimizer.MinLrRatio);
        Assert.Equal(0.0, t.Optimizer.Eps);
        Assert.Equal(0.0, t.Model.LogitStd);
        Assert.Equal(0.0, t.Model.ModeScale);
        Assert.False(t.Data.DropLast);
        Assert.Equal(0, t.Data.PrefetchBatches);
        Assert.Equal("", t.Tracker.ProjectName);
        Assert.Equal(0, t.Loop.MaxTrainSteps);
    }

    [Fact]
    public void EmptySectionsMeanDefaults()
    {
        var c = Load(Minimal + "\ntraining:\npipeline:\nmethod:\ncallbacks:\n");
        Assert.Equal(1, c.Training.Data.TrainBatchSize);
        Assert.Null(c.Pipeline.FlowShift);
        Assert.Equal(new MethodOptions(), c.Method);
        Assert.Empty(c.Callbacks);
    }

    [Fact]
    public void IntegersAreAcceptedForFloatsAndIntegralFloatsForIntegers()
    {
        var c = Load(Minimal + "\ntraining:\n  optimizer: {learning_rate: 1, weight_decay: 0}\n  loop: {max_train_steps: 1e3}\n");
        Assert.Equal(1.0, c.Training.Optimizer.LearningRate);
        Assert.Equal(0.0, c.Training.Optimizer.WeightDecay);
        Assert.Equal(1000, c.Training.Loop.MaxTrainSteps);
    }

    [Fact]
    public void ScalarsAreTakenAsTextWhereAStringIsExpected()
    {
        var c = Load(Minimal + "\ntraining:\n  tracker: {run_name: 2024, trackers: [wandb, 7]}\n");
        Assert.Equal("2024", c.Training.Tracker.RunName);
        Assert.Equal(["wandb", "7"], c.Training.Tracker.Trackers);
    }

    [Fact]
    public void DataPathAcceptsAStringAListOrAWeightedMap()
    {
        IReadOnlyList<DataSource> Data(string value) =>
            Load(Minimal + $"\ntraining:\n  data:\n    data_path: {value}\n").Training.Data.DataPath;

        Assert.Equal([new DataSource("data/a", 1)], Data("data/a"));
        Assert.Equal([new DataSource("data/a", 1), new DataSource("data/b", 1)], Data("[data/a, data/b]"));
        Assert.Equal([new DataSource("data/a", 3), new DataSource("data/b", 1)], Data("{data/a: 3, data/b: 1}"));
        Assert.Empty(Data("null"));
        Assert.Empty(Data("[]"));
    }

    [Fact]
    public void BetasAcceptAListOrACommaSeparatedString()
    {
        Assert.Equal([0.8, 0.95], Load(Minimal + "\ntraining:\n  optimizer: {betas: [0.8, 0.95]}\n").Training.Optimizer.Betas);
        Assert.Equal([0.8, 0.95], Load(Minimal + "\ntraining:\n  optimizer: {betas: \"0.8, 0.95\"}\n").Training.Optimizer.Betas);
        Assert.Equal([0.0, 0.5], Load(Minimal + "\ntraining:\n  optimizer: {betas: [0, 0.5]}\n").Training.Optimizer.Betas);
        Assert.Equal([0.5, 0.6], Load(Minimal, "training.optimizer.betas=0.5,0.6").Training.Optimizer.Betas);
    }

    [Fact]
    public void RoleFamilyFallsBackToRecipeFamilyAndIsFilledIn()
    {
        var yaml = """
            recipe: {family: wan_causal}
            roles:
              student: {init_from: Org/Causal}
              teacher: {family: wan, init_from: Org/Bidirectional}
            """;
        var c = Load(yaml);
        var student = Assert.IsType<WanCausalRoleConfigForTest>(c.Roles["student"]);
        Assert.Equal("wan_causal", student.Family);
        Assert.Equal(3, student.NumFramesPerBlock); // the family record's own default
        Assert.Equal(typeof(RoleConfig), c.Roles["teacher"].GetType());
        Assert.Equal("wan", c.Roles["teacher"].Family);
    }

    [Fact]
    public void RoleWithExplicitNullFamilyFallsBack()
    {
        var c = Load("recipe: {family: wan}\nroles:\n  student: {family: null, init_from: m}\n");
        Assert.Equal("wan", c.Roles["student"].Family);
    }

    [Fact]
    public void MethodAndCallbacksBindIntoTheRecordsTheyDeclare()
    {
        var yaml = Example.Replace("pipeline:", """
              validation:
                prompts: a red square moving left, slowly   # one string is one prompt
                seeds: [1, 2]
            pipeline:
            """).Replace("rollout_mode: simulate", "rollout_mode: data_latent\n  cfg_uncond: {text: zero}\n  _target_: fastvideo.train.methods.DMD2Method");
        var c = Load(yaml);

        var m = Method<DMD2Options>(c);
        Assert.Equal(RolloutMode.DataLatent, m.RolloutMode);
        Assert.Equal(new Dictionary<string, object?> { ["text"] = "zero" }, m.CfgUncond); // a free map option keeps plain values

        Assert.Equal(["grad_clip", "ema", "validation"], c.Callbacks.Select(kv => kv.Key));
        var validation = Assert.IsType<ValidationOptions>(c.Callbacks[2].Value);
        Assert.Equal(["a red square moving left, slowly"], validation.Prompts);
        Assert.Equal([1, 2], validation.Seeds);
        Assert.Equal(100, validation.EverySteps);   // a default
        Assert.Null(validation.SamplingSteps);
    }

    [Fact]
    public void EnumOptionsAcceptTheirAliasesAndAnyCase()
    {
        Assert.Equal(RolloutMode.Simulate, Method<DMD2Options>(Load(Example, "method.rollout_mode=sim")).RolloutMode);
        Assert.Equal(RolloutMode.DataLatent, Method<DMD2Options>(Load(Example, "method.rollout_mode=vae_latent")).RolloutMode);
        Assert.Equal(RolloutMode.DataLatent, Method<DMD2Options>(Load(Example, "method.rollout_mode=Data_Latent")).RolloutMode);
    }

    [Fact]
    public void TargetKeysAreAcceptedUnderMethodAndCallbacks()
    {
        var yaml = Example.Replace("grad_clip: {max_grad_norm: 1.0}",
            "grad_clip: {_target_: fastvideo.train.callbacks.grad_clip.GradNormClipCallback, max_grad_norm: 2.0}");
        var c = Load(yaml, "method._target_=fastvideo.train.methods.distribution_matching.dmd2.DMD2Method");
        Assert.Equal(2.0, c.CallbackOptions<GradClipOptions>("grad_clip")!.MaxGradNorm);
        Assert.DoesNotContain("_target_", RecipePrinter.ToYaml(c)); // not an option: not printed
    }

    [Fact]
    public void QuotedScalarsStayStringsInFreeMaps()
    {
        var c = Load(Probe.Replace("{steps: 2}", "{steps: 2, extra: {a: \"1\", b: 'true', c: 1e-5, d: 0x10, e: ~}}"));
        var extra = Method<ProbeOptions>(c).Extra;
        Assert.Equal("1", extra["a"]);
        Assert.Equal("true", extra["b"]);
        Assert.Equal(1e-5, extra["c"]);
        Assert.Equal(16L, extra["d"]);
        Assert.Null(extra["e"]);
    }

    [Fact]
    public void MobaConfigIsAFreeMap()
    {
        var c = Load(Minimal + "\ntraining:\n  model:\n    moba_config: {topk: 3, select_mode: threshold}\n");
        Assert.Equal(3L, c.Training.Model.MobaConfig["topk"]);
        Assert.Equal("threshold", c.Training.Model.MobaConfig["select_mode"]);
    }

    [Fact]
    public void LoadReadsTheFileAndNamesItInErrors()
    {
        var dir = Directory.CreateTempSubdirectory("fv-recipe-");
        try
        {
            var path = Path.Combine(dir.FullName, "r.yaml");
            File.WriteAllText(path, Minimal + "\ntraining:\n  loop: {max_train_steps: 9}\n");
            Assert.Equal(9, RecipeLoader.Load(path, [], TestFamilies.Instance).Training.Loop.MaxTrainSteps);
            Assert.Equal(4, RecipeLoader.Load(path, ["training.loop.max_train_steps=4"], TestFamilies.Instance)
                .Training.Loop.MaxTrainSteps);

            File.WriteAllText(path, Minimal + "\ntraining:\n  loop: {max_train_step: 9}\n");
            var e = Assert.Throws<RecipeError>(() => RecipeLoader.Load(path, [], TestFamilies.Instance));
            Assert.StartsWith($"{path}:7: training.loop.max_train_step: unknown key; did you mean 'max_train_steps'?", e.Message);
            Assert.Equal(path, e.Source);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void RawHoldsTheResolvedTreeWithDefaultsAndFamilies()
    {
        var raw = Load(Example).Raw;
        Assert.Equal(["recipe", "roles", "method", "training", "callbacks", "pipeline"], raw.Keys);
        var roles = (Dictionary<string, object?>)raw["roles"]!;
        var student = (Dictionary<string, object?>)roles["student"]!;
        Assert.Equal("wan", student["family"]);
        Assert.Equal(true, student["trainable"]);
        Assert.Null(student["flow_shift"]);
        var teacher = (Dictionary<string, object?>)roles["teacher"]!;
        Assert.Equal(3L, teacher["num_frames_per_block"]);
        var optimizer = (Dictionary<string, object?>)((Dictionary<string, object?>)raw["training"]!)["optimizer"]!;
        Assert.Equal(0.5, optimizer["min_lr_ratio"]);
        Assert.Equal(new List<object?> { 0.9, 0.999 }, optimizer["betas"]);
        var data = (Dictionary<string, object?>)((Dictionary<string, object?>)raw["training"]!)["data"]!;
        Assert.Equal(new Dictionary<string, object?> { ["data/synth"] = 1L }, data["data_path"]);
    }
}

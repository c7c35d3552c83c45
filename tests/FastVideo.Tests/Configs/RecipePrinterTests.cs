using FastVideo.Configs;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods.DistributionMatching;
using Xunit;
using static FastVideo.Tests.Configs.RecipeTestSupport;

namespace FastVideo.Tests.Configs;

public class RecipePrinterTests
{
    [Fact]
    public void PrintsSectionsInOrderWithDefaultsAndNulls()
    {
        var yaml = RecipePrinter.ToYaml(Load(Example));
        var sections = yaml.Split('\n').Where(l => l.Length > 0 && l[0] != ' ').Select(l => l.Split(':')[0]);
        Assert.Equal(new[] { "recipe", "roles", "method", "training", "callbacks", "pipeline" }, sections);
        Assert.Contains("\n    min_lr_ratio: 0.5\n", yaml);
        Assert.Contains("\n    eps: 1.0e-08\n", yaml);
        Assert.Contains("\n    learning_rate: 0.0001\n", yaml);
        Assert.Contains("\n    betas: [0.9, 0.999]\n", yaml);
        Assert.Contains("\n    sp_size: null\n", yaml);
        Assert.Contains("\n  student:\n    family: wan\n    init_from: path/or/Org/Model\n    trainable: true\n", yaml);
        Assert.Contains("\n    num_frames_per_block: 3\n", yaml);
        Assert.Contains("\n  dmd_denoising_steps: [1000, 750, 500, 250]\n", yaml);
        Assert.Contains("\n      data/synth: 1\n", yaml);
        Assert.Contains("\n  flow_shift: 3.0\n", yaml);
        Assert.Contains("\n    trackers: []\n", yaml);
        Assert.Contains("\n    moba_config: {}\n", yaml);
    }

    [Fact]
    public void PrintingIsStable()
    {
        Assert.Equal(RecipePrinter.ToYaml(Load(Example)), RecipePrinter.ToYaml(Load(Example)));
    }

    [Fact]
    public void RoundTripThroughToYamlGivesAnEqualConfig()
    {
        var original = Load(Example, "training.optimizer.learning_rate=3e-6", "callbacks.validation=null");
        var printed = RecipePrinter.ToYaml(original);
        var reloaded = RecipeLoader.LoadText(printed, "checkpoint.yaml", [], TestFamilies.Instance, TestMethods.Instance);

        Assert.Equal(printed, RecipePrinter.ToYaml(reloaded));
        AssertTreesEqual(original.Raw, reloaded.Raw);
        // Spot checks on the typed side (records holding lists compare by reference, so not Assert.Equal(config)).
        Assert.Equal(original.Training.Optimizer with { Betas = [] }, reloaded.Training.Optimizer with { Betas = [] });
        Assert.Equal(original.Training.Optimizer.Betas, reloaded.Training.Optimizer.Betas);
        Assert.Equal(original.Training.Data.DataPath, reloaded.Training.Data.DataPath);
        Assert.Equal(original.Roles["teacher"], reloaded.Roles["teacher"]);
        Assert.Equal(original.Roles["student"], reloaded.Roles["student"]);
        Assert.Equal(original.Pipeline, reloaded.Pipeline);
        Assert.Equal(original.Recipe, reloaded.Recipe);
        var (m, r) = (Method<DMD2Options>(original), Method<DMD2Options>(reloaded));
        Assert.Equal(m with { DmdDenoisingSteps = [], FakeScoreBetas = [] }, r with { DmdDenoisingSteps = [], FakeScoreBetas = [] });
        Assert.Equal(m.DmdDenoisingSteps, r.DmdDenoisingSteps);
        Assert.Equal(m.FakeScoreBetas, r.FakeScoreBetas);
        // Option records compare by value once their lists are set aside; the lists compare item by item.
        static object Listless(object o) => o is FastVideo.Train.Callbacks.ValidationOptions v ? v with { Roles = [] } : o;
        Assert.Equal(original.Callbacks.Select(c => Listless(c.Value)), reloaded.Callbacks.Select(c => Listless(c.Value)));
        Assert.Equal(original.CallbackOptions<FastVideo.Train.Callbacks.ValidationOptions>("validation")?.Roles,
            reloaded.CallbackOptions<FastVideo.Train.Callbacks.ValidationOptions>("validation")?.Roles);
    }

    [Fact]
    public void PrintsTheMethodAndCallbackOptionsWithTheirDefaults()
    {
        var yaml = RecipePrinter.ToYaml(Load(Example, "callbacks.validation.every_steps=5"));
        Assert.Contains("""

            method:
              lr_step_rules: null
              rollout_mode: simulate
              generator_update_interval: 1
              dmd_denoising_steps: [1000, 750, 500, 250]
              warp_denoising_step: false
              real_score_guidance_scale: 1.0
              fake_score_learning_rate: 1.0e-05
              fake_score_betas: [0.0, 0.999]
              fake_score_lr_scheduler: constant
              min_timestep_ratio: 0.0
              max_timestep_ratio: 1.0
              cfg_uncond: null
            training:

            """, yaml);
        Assert.Contains("""

            callbacks:
              grad_clip:
                max_grad_norm: 1.0
                log_grad_norms: true
              ema:
                decay: 0.999
                start_iter: 0
              validation:
                every_steps: 5
                run_at_start: true
                pipeline_target: null
                prompts: null
            """, yaml);
        Assert.Contains("\n    sampling_steps: null\n    sampling_timesteps: null\n    num_frames: null\n    guidance_scale: 1.0\n", yaml);
        Assert.Contains("\n    roles: [student]\npipeline:\n", yaml);
    }

    [Fact]
    public void RoundTripOfTrickyValues()
    {
        var yaml = Probe.Replace("method: {steps: 2}", "") + """

            method:
             extra:
              yes_string: "yes"
              off_string: "Off"
              digit_first: "1_000"
              version: "0.9.1"
              true_string: "true"
              number_string: "1.0"
              null_string: "null"
              empty: ""
              colon: "a: b"
              hash: "x #y"
              quote: "say \"hi\"\n"
              leading_dash: "-x"
              integral_float: 2.0
              tiny: 1.0e-12
              big: 12345678901234
              negative: -3
              infinity: .inf
              list_of_maps: [{a: 1, b: [x, y]}, {}, [1, [2, 3]]]
              empty_list: []
              nested: {deeper: {deepest: null}}
            training:
              data:
                data_path: {"data/with space": 2, "data/b": 1}
              tracker: {run_name: "2024", trackers: ["on", wandb]}
            """;
        var original = Load(yaml);
        var printed = RecipePrinter.ToYaml(original);
        var reloaded = RecipeLoader.LoadText(printed, "printed.yaml", [], TestFamilies.Instance, TestMethods.Instance);
        AssertTreesEqual(original.Raw, reloaded.Raw);
        Assert.Equal(printed, RecipePrinter.ToYaml(reloaded));
        var extra = Method<ProbeOptions>(reloaded).Extra;
        Assert.IsType<double>(extra["integral_float"]);
        Assert.Equal("yes", extra["yes_string"]);
        Assert.Contains("\n    yes_string: \"yes\"\n    off_string: \"Off\"\n    digit_first: \"1_000\"\n    version: \"0.9.1\"\n", printed);
        Assert.Equal("say \"hi\"\n", extra["quote"]);
        Assert.Equal(new[] { new DataSource("data/with space", 2), new DataSource("data/b", 1) }, reloaded.Training.Data.DataPath);
        Assert.Equal("2024", reloaded.Training.Tracker.RunName);
    }

    [Fact]
    public void PrintsACodeBuiltConfig()
    {
        var config = new RunConfig
        {
            Recipe = new RecipeSection { Method = "probe" },
            Roles = new Dictionary<string, RoleConfig> { ["student"] = new() { Family = "wan", InitFrom = "m" } },
            Method = new ProbeOptions { Steps = 3, Extra = new Dictionary<string, object?> { ["steps"] = new[] { 1, 2 }, ["scale"] = 1.5f } },
            Callbacks = [new("ema", new EmaOptions { Decay = 0.9 })],
        };
        var yaml = RecipePrinter.ToYaml(config);
        Assert.Contains("\n  steps: 3\n", yaml);
        Assert.Contains("\n    steps: [1, 2]\n", yaml);
        Assert.Contains("\n    scale: 1.5\n", yaml);
        Assert.Contains("\ncallbacks:\n  ema:\n    decay: 0.9\n    start_iter: 0\n", yaml);
        var reloaded = RecipeLoader.LoadText(yaml, "x", [], TestFamilies.Instance, TestMethods.Instance);
        Assert.Equal("m", reloaded.Roles["student"].InitFrom);
        Assert.Equal(3, Method<ProbeOptions>(reloaded).Steps);
    }

    private static void AssertTreesEqual(object? expected, object? actual, string path = "")
    {
        switch (expected)
        {
            case IReadOnlyDictionary<string, object?> e:
                var a = Assert.IsAssignableFrom<IReadOnlyDictionary<string, object?>>(actual);
                Assert.Equal(e.Keys.ToList(), a.Keys.ToList()); // same keys in the same order
                foreach (var key in e.Keys) AssertTreesEqual(e[key], a[key], $"{path}.{key}");
                break;
            case List<object?> e:
                var l = Assert.IsType<List<object?>>(actual);
                Assert.Equal(e.Count, l.Count);
                for (int i = 0; i < e.Count; i++) AssertTreesEqual(e[i], l[i], $"{path}[{i}]");
                break;
            default:
                Assert.True(Equals(expected, actual), $"{path}: expected {expected ?? "null"} ({expected?.GetType().Name}), got {actual ?? "null"} ({actual?.GetType().Name})");
                break;
        }
    }
}

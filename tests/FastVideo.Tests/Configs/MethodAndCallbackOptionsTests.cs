using System.ComponentModel;
using FastVideo.Configs;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.DistributionMatching;
using FastVideo.Train.Methods.FineTuning;
using FastVideo.Train.Models;
using Xunit;
using static FastVideo.Tests.Configs.RecipeTestSupport;

namespace FastVideo.Tests.Configs;

/// <summary>A user method's options, registered from outside the library.</summary>
public sealed record SelfForcingOptionsForTest : MethodOptions
{
    [Description("frames per causal block")]
    public int NumFramesPerBlock { get; init; } = 3;
    public required double ContextNoise { get; init; }
}

/// <summary>A user callback's options.</summary>
public sealed record ProfilerOptionsForTest
{
    public int EverySteps { get; init; } = 10;
    public required string TraceDir { get; init; }
}

/// <summary>
/// <c>method:</c> and <c>callbacks:</c> bind into the option records that methods and callbacks declare, with the same
/// errors as <c>training:</c>: file and line, key path, suggestions; every missing required value in one message.
/// </summary>
public class MethodAndCallbackOptionsTests
{
    /// <summary>The example recipe (dmd2) with its <c>method:</c> block written one key per line.</summary>
    private const string Dmd2 = """
        recipe: {family: wan, method: dmd2}
        roles:
          student: {init_from: Org/Model}
        method:
          rollout_mode: simulate
          dmd_denoising_steps: [1000, 750, 500, 250]
          fake_score_learning_rate: 1.0e-5
          fake_score_betas: [0.0, 0.999]
          fake_score_lr_scheduler: constant
        callbacks:
          grad_clip: {max_grad_norm: 1.0}
          ema:
            decay: 0.99
        """;

    [Fact]
    public void UnknownMethodKeyNamesTheLineAndSuggests()
    {
        var yaml = Dmd2.Replace("fake_score_learning_rate:", "fake_score_learning_rat:");
        var e = Fail(yaml);
        Assert.Equal($"recipe.yaml:{LineOf(yaml, "fake_score_learning_rat")}: method.fake_score_learning_rat: unknown key; " +
                     "did you mean 'fake_score_learning_rate'?", e.Message);
        Assert.Equal("method.fake_score_learning_rat", e.KeyPath);
    }

    [Fact]
    public void UnknownMethodKeyWithNoCloseNameListsTheMethodsOptions()
    {
        var e = Fail(Dmd2.Replace("rollout_mode: simulate", "rollout_mode: simulate\n  zzz: 1"));
        Assert.Contains("method.zzz: unknown key (valid keys: lr_step_rules, rollout_mode, generator_update_interval, ", e.Message);
    }

    [Fact]
    public void UnknownCallbackKeyNamesTheLineAndSuggests()
    {
        var yaml = Dmd2.Replace("    decay: 0.99", "    decay: 0.99\n    start_itr: 5");
        var e = Fail(yaml);
        Assert.Equal($"recipe.yaml:{LineOf(yaml, "start_itr")}: callbacks.ema.start_itr: unknown key; did you mean 'start_iter'?", e.Message);
    }

    [Fact]
    public void UnknownCallbackAndMethodNamesSuggestTheRegisteredOnes()
    {
        var yaml = Dmd2.Replace("  ema:", "  emma:");
        Assert.Equal($"recipe.yaml:{LineOf(yaml, "emma")}: callbacks.emma: unknown callback 'emma'; did you mean 'ema'? " +
                     "(known: ema, grad_clip, validation)", Fail(yaml).Message);

        var e = Fail(Dmd2.Replace("method: dmd2}", "method: dmd}"));
        Assert.Equal("recipe.yaml:1: recipe.method: unknown method 'dmd'; did you mean 'dmd2'? (known: dmd2, finetune, probe)", e.Message);
    }

    [Theory]
    [InlineData("fake_score_learning_rate: 1.0e-5", "fake_score_learning_rate: fast",
        "method.fake_score_learning_rate: expected a number, got \"fast\"")]
    [InlineData("dmd_denoising_steps: [1000, 750, 500, 250]", "dmd_denoising_steps: [1000, 7.5]",
        "method.dmd_denoising_steps[1]: expected an integer, got 7.5")]
    [InlineData("dmd_denoising_steps: [1000, 750, 500, 250]", "dmd_denoising_steps: 1000",
        "method.dmd_denoising_steps: expected a list, got 1000")]
    [InlineData("rollout_mode: simulate", "rollout_mode: simulat",
        "method.rollout_mode: invalid value \"simulat\"; did you mean 'simulate'? (expected one of: simulate, data_latent)")]
    [InlineData("decay: 0.99", "decay: high", "callbacks.ema.decay: expected a number, got \"high\"")]
    [InlineData("grad_clip: {max_grad_norm: 1.0}", "grad_clip: {log_grad_norms: sometimes}",
        "callbacks.grad_clip.log_grad_norms: expected true or false, got \"sometimes\"")]
    [InlineData("grad_clip: {max_grad_norm: 1.0}", "grad_clip: [1.0]", "callbacks.grad_clip: expected a map, got a list")]
    public void WrongTypesNameTheLineAndTheKey(string replace, string with, string expected)
    {
        var yaml = Dmd2.Replace(replace, with);
        var e = Fail(yaml);
        Assert.Equal($"recipe.yaml:{LineOf(yaml, with)}: {expected}", e.Message);
    }

    [Fact]
    public void EveryMissingRequiredOptionIsReportedInOneMessage()
    {
        var yaml = Dmd2.Replace("  fake_score_betas: [0.0, 0.999]\n", "").Replace("  fake_score_lr_scheduler: constant\n", "");
        var e = Fail(yaml);
        int line = LineOf(yaml, "rollout_mode"); // the method map (its first key)
        Assert.Equal("recipe.yaml: 2 required values are missing:\n" +
                     $"  recipe.yaml:{line}: method.fake_score_betas: required value is missing\n" +
                     $"  recipe.yaml:{line}: method.fake_score_lr_scheduler: required value is missing", e.Message);
        Assert.Equal(["method.fake_score_betas", "method.fake_score_lr_scheduler"], e.Errors.Select(x => x.KeyPath));
        Assert.All(e.Errors, x => Assert.Equal(line, x.Line));
    }

    [Fact]
    public void MissingRequiredValuesOfRolesMethodAndCallbacksShareOneMessage()
    {
        var yaml = """
            recipe: {family: wan, method: dmd2}
            roles:
              student: {init_from: Org/Model}
              critic: {trainable: true}
            """;
        var e = Fail(yaml);
        Assert.Equal(["roles.critic.init_from", "method.rollout_mode", "method.dmd_denoising_steps", "method.fake_score_learning_rate",
            "method.fake_score_betas", "method.fake_score_lr_scheduler"], e.Errors.Select(x => x.KeyPath));
        Assert.StartsWith("recipe.yaml: 6 required values are missing:\n  recipe.yaml:4: roles.critic.init_from: required value is missing\n" +
                          "  recipe.yaml: method.rollout_mode: required value is missing (one of: simulate, data_latent)\n", e.Message);
    }

    [Fact]
    public void OptionChecksAreReportedAtTheirLine()
    {
        var steps = Dmd2.Replace("[1000, 750, 500, 250]", "[1000, 1200]");
        Assert.Equal($"recipe.yaml:{LineOf(steps, "[1000, 1200]")}: method.dmd_denoising_steps[1]: each step must be an integer in 1..1000, got 1200",
            Fail(steps).Message);
        var betas = Dmd2.Replace("[0.0, 0.999]", "[0.0, 0.999, 0.5]");
        Assert.Equal($"recipe.yaml:{LineOf(betas, "fake_score_betas")}: method.fake_score_betas: expected two numbers in [0, 1), e.g. [0.0, 0.999]",
            Fail(betas).Message);
        var sched = Dmd2.Replace("fake_score_lr_scheduler: constant", "fake_score_lr_scheduler: cosin");
        Assert.StartsWith($"recipe.yaml:{LineOf(sched, "cosin")}: method.fake_score_lr_scheduler: invalid value \"cosin\"", Fail(sched).Message);
        var cfg = Dmd2.Replace("rollout_mode: simulate", "rollout_mode: simulate\n  cfg_uncond: {text: blank}");
        Assert.Equal($"recipe.yaml:{LineOf(cfg, "cfg_uncond")}: method.cfg_uncond.text: expected one of negative_prompt, keep, zero, drop; got 'blank'",
            Fail(cfg).Message);
        var decay = Dmd2.Replace("decay: 0.99", "decay: 1.5");
        Assert.Equal($"recipe.yaml:{LineOf(decay, "decay: 1.5")}: callbacks.ema.decay: must be in [0, 1], got 1.5", Fail(decay).Message);
        Assert.Equal("--set: callbacks.validation.seeds: seeds must be distinct, got [1, 1]",
            Fail(Dmd2, "callbacks.validation.seeds=1,1").Message);
    }

    [Fact]
    public void MethodOptionsWithoutAMethodAreAnError()
    {
        var yaml = Minimal + "\nmethod:\n  rollout_mode: simulate\n";
        Assert.Equal($"recipe.yaml:{LineOf(yaml, "rollout_mode")}: method.rollout_mode: recipe.method is not set, so no method declares " +
                     "this option (set recipe.method: dmd2, finetune, probe)", Fail(yaml).Message);
        // The common options need no method.
        Assert.Equal("1:10,0.1", Load(Minimal + "\nmethod: {lr_step_rules: \"1:10,0.1\"}\n").Method.LrStepRules);
    }

    [Fact]
    public void FinetuneTakesOnlyTheCommonOptions()
    {
        var c = Load(Probe.Replace("method: probe", "method: finetune").Replace("{steps: 2}", "{lr_step_rules: \"1:5,0.5\"}"));
        Assert.Equal("1:5,0.5", c.MethodOptions<FineTuneOptions>().LrStepRules);
        Assert.Contains("method.steps: unknown key (valid keys: lr_step_rules)",
            Fail(Probe.Replace("method: probe", "method: finetune")).Message);
    }

    [Fact]
    public void TheTypedGetterNamesAMismatch()
    {
        var c = Load(Dmd2);
        Assert.Same(c.Method, c.MethodOptions<DMD2Options>());
        var e = Assert.Throws<InvalidOperationException>(() => c.MethodOptions<FineTuneOptions>());
        Assert.Contains("FineTuneOptions", e.Message);
        Assert.Contains("DMD2Options", e.Message);
    }

    [Fact]
    public void CodeBuiltOptionsGoThroughTheSameBinder()
    {
        var ok = RecipeLoader.BindOptions<EmaOptions>(new Dictionary<string, object?> { ["decay"] = 0.5, ["start_iter"] = 2 }, "callbacks.ema");
        Assert.Equal(new EmaOptions { Decay = 0.5, StartIter = 2 }, ok);
        Assert.Equal("options: callbacks.ema.decy: unknown key; did you mean 'decay'?",
            Assert.Throws<RecipeError>(() => RecipeLoader.BindOptions<EmaOptions>(new Dictionary<string, object?> { ["decy"] = 0.5 }, "callbacks.ema")).Message);
        var missing = Assert.Throws<RecipeError>(() => RecipeLoader.BindOptions<DMD2Options>(
            new Dictionary<string, object?> { ["rollout_mode"] = "simulate", ["dmd_denoising_steps"] = new[] { 1000 } }, "method"));
        Assert.Equal(3, missing.Errors.Count);
    }

    [Fact]
    public void UserMethodsAndCallbacksBindTheirOwnRecords()
    {
        var methods = MethodRegistry.CreateBuiltIn();
        methods.Register(MethodDescriptor.Of<SelfForcingOptionsForTest>("user_self_forcing", "a user method",
            _ => { }, (_, _, _) => throw new NotSupportedException()));
        var callbacks = CallbackRegistry.CreateBuiltIn();
        callbacks.Register(CallbackDescriptor.Of<ProfilerOptionsForTest>("profiler", "a user callback", _ => throw new NotSupportedException()));

        var yaml = """
            recipe: {family: wan, method: user_self_forcing}
            roles:
              student: {init_from: Org/Model}
            method: {context_noise: 0.1, num_frames_per_block: 2}
            callbacks:
              profiler: {trace_dir: traces}
            """;
        RunConfig Load(string text, params string[] overrides) =>
            RecipeLoader.LoadText(text, "recipe.yaml", overrides, TestFamilies.Instance, methods, callbacks);
        var c = Load(yaml);
        Assert.Equal(new SelfForcingOptionsForTest { ContextNoise = 0.1, NumFramesPerBlock = 2 }, c.MethodOptions<SelfForcingOptionsForTest>());
        Assert.Equal(new ProfilerOptionsForTest { TraceDir = "traces" }, c.CallbackOptions<ProfilerOptionsForTest>("profiler"));
        Assert.Contains("\n  num_frames_per_block: 2\n  context_noise: 0.1\n", RecipePrinter.ToYaml(c));

        Assert.Equal("recipe.yaml:4: method.num_frames_per_blok: unknown key; did you mean 'num_frames_per_block'?",
            Assert.Throws<RecipeError>(() => Load(yaml.Replace("per_block:", "per_blok:"))).Message);
        var missing = Assert.Throws<RecipeError>(() => Load(yaml.Replace("context_noise: 0.1, ", "").Replace("{trace_dir: traces}", "{}")));
        Assert.Equal(["method.context_noise", "callbacks.profiler.trace_dir"], missing.Errors.Select(x => x.KeyPath));

        Assert.Contains("user_self_forcing: a user method\n  options (method.*):\n", methods.Describe());
        Assert.Contains("num_frames_per_block", methods.Describe());
        Assert.Contains("trace_dir", callbacks.Describe());
        // A method's options must be a MethodOptions record.
        Assert.Throws<ArgumentException>(() => methods.Register(new MethodDescriptor("bad", "", typeof(ProfilerOptionsForTest), _ => { }, (_, _) => null!)));
    }

    [Fact]
    public void FamiliesListRoleOptionsWithTheSameSnakeCaseRule()
    {
        var keys = ModelFamilyRegistry.DescribeOptions(typeof(RoleConfig)).Select(o => o.Key).ToList();
        Assert.Equal(OptionListing.Describe(typeof(RoleConfig)).Select(o => o.Key), keys);
        Assert.Contains(("init_from", "string", "(required)"), ModelFamilyRegistry.DescribeOptions(typeof(RoleConfig)));
        Assert.Equal("dmd_denoising_steps", Names.ToSnakeCase(nameof(DMD2Options.DmdDenoisingSteps)));
    }
}

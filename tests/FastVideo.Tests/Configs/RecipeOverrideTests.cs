using FastVideo.Configs;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods.DistributionMatching;
using Xunit;
using static FastVideo.Tests.Configs.RecipeTestSupport;

namespace FastVideo.Tests.Configs;

/// <summary>"--set a.b.c=VALUE" overrides: value casting (reference spec 1.2), map creation, ordering.</summary>
public class RecipeOverrideTests
{
    [Fact]
    public void IntegerOverride()
    {
        var c = Load(Probe, "training.loop.max_train_steps=7", "method.steps=12", "method.extra.steps=12");
        Assert.Equal(7, c.Training.Loop.MaxTrainSteps);
        Assert.Equal(12L, Method<ProbeOptions>(c).Steps);
        Assert.Equal(12L, Method<ProbeOptions>(c).Extra["steps"]);
    }

    [Fact]
    public void FloatOverrideIncludingExponentForm()
    {
        var c = Load(Probe, "training.optimizer.learning_rate=1e-5", "method.lr=1e-5", "method.extra.lr=1e-5", "pipeline.flow_shift=7.5");
        Assert.Equal(1e-5, c.Training.Optimizer.LearningRate);
        Assert.Equal(1e-5, Method<ProbeOptions>(c).Lr);
        Assert.Equal(1e-5, Assert.IsType<double>(Method<ProbeOptions>(c).Extra["lr"])); // a float, not the string "1e-5"
        Assert.Equal(7.5, c.Pipeline.FlowShift);
    }

    [Fact]
    public void BoolOverrideIsCaseInsensitive()
    {
        var c = Load(Probe, "roles.student.trainable=FALSE", "training.data.drop_last=False", "method.flag=true", "method.extra.flag=TRUE");
        Assert.False(c.Roles["student"].Trainable);
        Assert.False(c.Training.Data.DropLast);
        Assert.True(Method<ProbeOptions>(c).Flag);
        Assert.Equal(true, Method<ProbeOptions>(c).Extra["flag"]);
    }

    [Fact]
    public void NullOverrideAcceptsNoneAndNull()
    {
        var c = Load(Example, "pipeline.flow_shift=null", "roles.teacher.flow_shift=None", "method.cfg_uncond=NULL");
        Assert.Null(c.Pipeline.FlowShift);
        Assert.Null(c.Roles["teacher"].FlowShift);
        Assert.Null(Method<DMD2Options>(c).CfgUncond);

        var probe = Load(Probe, "method.extra.x=NULL");
        Assert.True(Method<ProbeOptions>(probe).Extra.ContainsKey("x"));
        Assert.Null(Method<ProbeOptions>(probe).Extra["x"]);

        // Null on a required option takes it away.
        var e = Fail(Example, "method.rollout_mode=NULL");
        Assert.Equal("--set: method.rollout_mode: required value is missing (one of: simulate, data_latent)", e.Message);
    }

    [Fact]
    public void ListOverrideIsParsedAsAYamlFlowList()
    {
        var c = Load(Example, "method.dmd_denoising_steps=[1000, 500]", "training.tracker.trackers=[wandb, tensorboard]",
            "training.optimizer.betas=[0.5, 0.9]");
        Assert.Equal([1000, 500], Method<DMD2Options>(c).DmdDenoisingSteps);
        Assert.Equal(new[] { "wandb", "tensorboard" }, c.Training.Tracker.Trackers);
        Assert.Equal(new[] { 0.5, 0.9 }, c.Training.Optimizer.Betas);
    }

    [Fact]
    public void CommaSeparatedOverrideOfANumberListOption()
    {
        var c = Load(Example, "method.dmd_denoising_steps=1000,757", "method.fake_score_betas=0.0, 0.99",
            "callbacks.validation.seeds=4,5");
        Assert.Equal([1000, 757], Method<DMD2Options>(c).DmdDenoisingSteps);
        Assert.Equal([0.0, 0.99], Method<DMD2Options>(c).FakeScoreBetas);
        Assert.Equal([4, 5], c.CallbackOptions<ValidationOptions>("validation")!.Seeds);
        // Only options that declare the comma form take it: training lists do not.
        Assert.Contains("training.tracker.trackers: expected a list", Fail(Example, "training.tracker.trackers=wandb,x").Message);
        Assert.Equal("--set: method.dmd_denoising_steps[1]: expected an integer, got \"x\"",
            Fail(Example, "method.dmd_denoising_steps=1000,x").Message);
    }

    [Fact]
    public void StringOverrideKeepsTheRawText()
    {
        var c = Load(Probe, "training.checkpoint.output_dir=out/run=1", "method.note=[unclosed", "method.extra.empty=",
            "roles.student.init_from=Org/Other");
        Assert.Equal("out/run=1", c.Training.Checkpoint.OutputDir); // split at the first '='
        Assert.Equal("[unclosed", Method<ProbeOptions>(c).Note);
        Assert.Equal("[a, [b]", Method<ProbeOptions>(Load(Probe, "method.note=[a, [b]")).Note); // not valid YAML: kept as text
        Assert.Equal("", Method<ProbeOptions>(c).Extra["empty"]);
        Assert.Equal("Org/Other", c.Roles["student"].InitFrom);
    }

    [Fact]
    public void OverridesCreateMissingMaps()
    {
        var c = Load(Minimal, "recipe.method=probe", "method.extra.cfg_uncond.text=negative_prompt", "callbacks.validation.every_steps=10",
            "roles.critic.init_from=Org/Critic", "training.model.moba_config.topk=2");
        var cfg = Assert.IsType<Dictionary<string, object?>>(Method<ProbeOptions>(c).Extra["cfg_uncond"]);
        Assert.Equal("negative_prompt", cfg["text"]);
        var (name, options) = Assert.Single(c.Callbacks);
        Assert.Equal("validation", name);
        Assert.Equal(10, Assert.IsType<ValidationOptions>(options).EverySteps);
        Assert.Equal("Org/Critic", c.Roles["critic"].InitFrom);
        Assert.Equal("wan", c.Roles["critic"].Family); // falls back to recipe.family
        Assert.Equal(2L, c.Training.Model.MobaConfig["topk"]);
    }

    [Fact]
    public void NonMapIntermediateIsReplacedByAMap()
    {
        var c = Load(Probe, "method.extra.k=1", "method.extra.k.kind=simulate");
        Assert.Equal(new Dictionary<string, object?> { ["kind"] = "simulate" }, Method<ProbeOptions>(c).Extra["k"]);
    }

    [Fact]
    public void LaterOverrideWinsAndKeyOrderIsKept()
    {
        var c = Load(Example, "training.loop.max_train_steps=5", "training.loop.max_train_steps=6",
            "callbacks.grad_clip.max_grad_norm=2.0");
        Assert.Equal(6, c.Training.Loop.MaxTrainSteps);
        Assert.Equal(new[] { "grad_clip", "ema" }, c.Callbacks.Select(kv => kv.Key));
        Assert.Equal(2.0, Assert.IsType<GradClipOptions>(c.Callbacks[0].Value).MaxGradNorm);
    }

    [Fact]
    public void OverrideCanAddACallbackWithNoOptions()
    {
        var c = Load(Example, "callbacks.validation=null");
        Assert.Equal(new[] { "grad_clip", "ema", "validation" }, c.Callbacks.Select(kv => kv.Key));
        Assert.Equal(new ValidationOptions(), c.Callbacks[2].Value); // enabled with its defaults
    }

    [Fact]
    public void UnknownKeyFromAnOverrideNamesSet()
    {
        var e = Fail(Example, "training.optimizer.learning_rat=0.1");
        Assert.Equal("--set: training.optimizer.learning_rat: unknown key; did you mean 'learning_rate'?", e.Message);
        var m = Fail(Example, "method.fake_score_learning_rat=0.1");
        Assert.Equal("--set: method.fake_score_learning_rat: unknown key; did you mean 'fake_score_learning_rate'?", m.Message);
    }

    [Fact]
    public void RawReflectsOverrides()
    {
        var c = Load(Example, "training.loop.max_train_steps=3", "method.generator_update_interval=4");
        var loop = (Dictionary<string, object?>)((Dictionary<string, object?>)c.Raw["training"]!)["loop"]!;
        Assert.Equal(3L, loop["max_train_steps"]);
        Assert.Equal(4L, ((Dictionary<string, object?>)c.Raw["method"]!)["generator_update_interval"]);
    }
}

using FastVideo.Configs;
using Xunit;
using static FastVideo.Tests.Configs.RecipeTestSupport;

namespace FastVideo.Tests.Configs;

/// <summary>"--set a.b.c=VALUE" overrides: value casting (reference spec 1.2), map creation, ordering.</summary>
public class RecipeOverrideTests
{
    [Fact]
    public void IntegerOverride()
    {
        var c = Load(Example, "training.loop.max_train_steps=7", "method.steps=12");
        Assert.Equal(7, c.Training.Loop.MaxTrainSteps);
        Assert.Equal(12L, c.Method["steps"]);
    }

    [Fact]
    public void FloatOverrideIncludingExponentForm()
    {
        var c = Load(Example, "training.optimizer.learning_rate=1e-5", "method.lr=1e-5", "pipeline.flow_shift=7.5");
        Assert.Equal(1e-5, c.Training.Optimizer.LearningRate);
        Assert.Equal(1e-5, Assert.IsType<double>(c.Method["lr"])); // a float, not the string "1e-5"
        Assert.Equal(7.5, c.Pipeline.FlowShift);
    }

    [Fact]
    public void BoolOverrideIsCaseInsensitive()
    {
        var c = Load(Example, "roles.student.trainable=FALSE", "training.data.drop_last=False", "method.flag=true");
        Assert.False(c.Roles["student"].Trainable);
        Assert.False(c.Training.Data.DropLast);
        Assert.Equal(true, c.Method["flag"]);
    }

    [Fact]
    public void NullOverrideAcceptsNoneAndNull()
    {
        var c = Load(Example, "pipeline.flow_shift=null", "roles.teacher.flow_shift=None", "method.rollout_mode=NULL");
        Assert.Null(c.Pipeline.FlowShift);
        Assert.Null(c.Roles["teacher"].FlowShift);
        Assert.True(c.Method.ContainsKey("rollout_mode"));
        Assert.Null(c.Method["rollout_mode"]);
    }

    [Fact]
    public void ListOverrideIsParsedAsAYamlFlowList()
    {
        var c = Load(Example, "method.dmd_denoising_steps=[1000, 500]", "training.tracker.trackers=[wandb, tensorboard]",
            "training.optimizer.betas=[0.5, 0.9]");
        Assert.Equal(new List<object?> { 1000L, 500L }, c.Method["dmd_denoising_steps"]);
        Assert.Equal(new[] { "wandb", "tensorboard" }, c.Training.Tracker.Trackers);
        Assert.Equal(new[] { 0.5, 0.9 }, c.Training.Optimizer.Betas);
    }

    [Fact]
    public void StringOverrideKeepsTheRawText()
    {
        var c = Load(Example, "training.checkpoint.output_dir=out/run=1", "method.note=[unclosed", "method.empty=",
            "roles.student.init_from=Org/Other");
        Assert.Equal("out/run=1", c.Training.Checkpoint.OutputDir); // split at the first '='
        Assert.Equal("[unclosed", c.Method["note"]);
        Assert.Equal("[a, [b]", Load(Minimal, "method.broken=[a, [b]").Method["broken"]); // not valid YAML: kept as text
        Assert.Equal("", c.Method["empty"]);
        Assert.Equal("Org/Other", c.Roles["student"].InitFrom);
    }

    [Fact]
    public void OverridesCreateMissingMaps()
    {
        var c = Load(Minimal, "method.cfg_uncond.text=negative_prompt", "callbacks.validation.every_steps=10",
            "roles.critic.init_from=Org/Critic", "training.model.moba_config.topk=2");
        var cfg = Assert.IsType<Dictionary<string, object?>>(c.Method["cfg_uncond"]);
        Assert.Equal("negative_prompt", cfg["text"]);
        var (name, options) = Assert.Single(c.Callbacks);
        Assert.Equal("validation", name);
        Assert.Equal(10L, options["every_steps"]);
        Assert.Equal("Org/Critic", c.Roles["critic"].InitFrom);
        Assert.Equal("wan", c.Roles["critic"].Family); // falls back to recipe.family
        Assert.Equal(2L, c.Training.Model.MobaConfig["topk"]);
    }

    [Fact]
    public void NonMapIntermediateIsReplacedByAMap()
    {
        var c = Load(Example, "method.rollout_mode.kind=simulate");
        Assert.Equal(new Dictionary<string, object?> { ["kind"] = "simulate" }, c.Method["rollout_mode"]);
    }

    [Fact]
    public void LaterOverrideWinsAndKeyOrderIsKept()
    {
        var c = Load(Example, "training.loop.max_train_steps=5", "training.loop.max_train_steps=6",
            "callbacks.grad_clip.max_grad_norm=2.0");
        Assert.Equal(6, c.Training.Loop.MaxTrainSteps);
        Assert.Equal(new[] { "grad_clip", "ema" }, c.Callbacks.Select(kv => kv.Key));
        Assert.Equal(2.0, c.Callbacks[0].Value["max_grad_norm"]);
    }

    [Fact]
    public void OverrideCanAddACallbackWithNoOptions()
    {
        var c = Load(Example, "callbacks.validation=null");
        Assert.Equal(new[] { "grad_clip", "ema", "validation" }, c.Callbacks.Select(kv => kv.Key));
        Assert.Empty(c.Callbacks[2].Value);
    }

    [Fact]
    public void UnknownKeyFromAnOverrideNamesSet()
    {
        var e = Fail(Example, "training.optimizer.learning_rat=0.1");
        Assert.Equal("--set: training.optimizer.learning_rat: unknown key; did you mean 'learning_rate'?", e.Message);
    }

    [Fact]
    public void RawReflectsOverrides()
    {
        var c = Load(Example, "training.loop.max_train_steps=3");
        var loop = (Dictionary<string, object?>)((Dictionary<string, object?>)c.Raw["training"]!)["loop"]!;
        Assert.Equal(3L, loop["max_train_steps"]);
    }
}

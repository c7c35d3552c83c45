using FastVideo.Cli.Commands;
using FastVideo.Train;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using Xunit;

namespace FastVideo.Tests.Train;

public class TrainingPlanTests
{
    [Fact]
    public void PlanCountsParametersAndMemoryPerRole()
    {
        using var method = TrainingBuilder.Build(TrainFixture.Config(TestPaths.TempDir("plan")));
        var plan = Assert.Single(TrainingPlan.Build(method));
        long n = method.Student.Transformer.parameters().Sum(p => p.numel());
        Assert.Equal("student", plan.Role);
        Assert.Equal("wan", plan.Family);
        Assert.Equal(n, plan.Parameters);
        Assert.Equal(n, plan.TrainableParameters);
        Assert.Equal(4 * n, plan.WeightBytes);          // fp32
        Assert.Equal(4 * n, plan.GradBytes);
        Assert.Equal(8 * n, plan.OptimizerBytes);
        Assert.True(plan.ActivationBytes > 0);
        var text = TrainingPlan.Format([plan], "finetune");
        Assert.Contains("student", text);
        Assert.Contains("total memory estimate", text);
    }

    [Fact]
    public void ActivationEstimate_CountsTokensInLatentPixels_OfTheModelsVae()
    {
        // An identity VAE (synthetic data) keeps pixels as latents: 8x8 frames with 2x2 patches are 16 tokens per
        // frame, not the (8/8/2)^2 = 0 a fixed factor of 8 would give.
        var (_, model) = TrainFixture.SyntheticDataAndModel(TestPaths.TempDir("plan-vae"));
        var cfg = TrainFixture.Config(TestPaths.TempDir("plan-vae-out"), initFrom: model);
        cfg = cfg with { Training = cfg.Training with { Data = cfg.Training.Data with { NumLatentT = 2, NumHeight = 8, NumWidth = 8, TrainBatchSize = 3 } } };
        var light = Assert.Single(TrainingPlan.BuildFromConfig(cfg));
        using var method = TrainingBuilder.Build(cfg);
        var full = Assert.Single(TrainingPlan.Build(method));
        var c = ((FastVideo.Train.Models.Wan.WanModel)method.Student).WanTransformer.Config;
        long tokens = 3L * 2 * 4 * 4;
        long expected = (tokens * (14L * c.InnerDim + 2L * c.FfnDim) + (long)c.NumAttentionHeads * tokens * tokens / 3) * c.NumLayers * 4;
        Assert.Equal(expected, light.ActivationBytes);
        Assert.Equal(expected, full.ActivationBytes);
    }

    [Fact]
    public void ConfigOnlyPlanMatchesThePlanOfLoadedModels()
    {
        // The dry run reads safetensors headers only; its numbers must equal those of the built models.
        var cfg = DMD2MethodTests.Config(TestPaths.TempDir("plan2"));
        var light = TrainingPlan.BuildFromConfig(cfg);
        using var method = TrainingBuilder.Build(cfg);
        var full = TrainingPlan.Build(method);
        Assert.Equal(full.OrderBy(p => p.Role).ToList(), light.OrderBy(p => p.Role).ToList());
        Assert.Equal(3, light.Count);
        Assert.Equal(0, light.Single(p => p.Role == "teacher").TrainableParameters);
    }

    [Fact]
    public void DryRunPrintsThePlanFromARecipeFile()
    {
        var dir = TestPaths.TempDir("dry");
        var recipe = Path.Combine(dir, "r.yaml");
        var model = TestPaths.Fixture("wan_tiny").Replace("\\", "/");
        File.WriteAllText(recipe, $"""
            recipe: {"{"}family: wan, method: finetune{"}"}
            roles:
              student: {"{"}init_from: "{model}"{"}"}
            training:
              optimizer: {"{"}learning_rate: 0.001{"}"}
              data: {"{"}num_latent_t: 2, num_height: 64, num_width: 64{"}"}
            """);
        var sw = new StringWriter();
        Assert.Equal(0, TrainCommand.Run(recipe, ["training.loop.max_train_steps=5"], dryRun: true, overwrite: false, ModelFamilyRegistry.Default, null, sw));
        Assert.Contains("method: finetune", sw.ToString());
        Assert.Contains("student", sw.ToString());
        Assert.Throws<UserError>(() => TrainCommand.Run(recipe, [], dryRun: false, overwrite: false, ModelFamilyRegistry.Default, null, TextWriter.Null));

        // The same through the command line, and a mistyped --dry-run is a usage error that suggests it.
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        Assert.Equal(0, Cli.Cli.Run(["train", recipe, "--dry-run", "--set=training.loop.max_train_steps=5"], stdout, stderr));
        Assert.Equal(sw.ToString(), stdout.ToString());
        stderr = new StringWriter();
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["train", "--dryrun", recipe], TextWriter.Null, stderr));
        Assert.Contains("error: Unrecognized command or argument '--dryrun'.", stderr.ToString());
        Assert.Contains("Did you mean one of the following?\n--dry-run\n", stderr.ToString());
    }
}

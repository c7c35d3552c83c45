using FastVideo.Train.Methods;
using FastVideo.Train.Methods.FineTuning;
using FastVideo.Train.Models;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

public class FineTuneMethodTests
{
    private static TrainingMethod Build(bool precondition = false) =>
        TrainingBuilder.Build(TrainFixture.Config(TestPaths.TempDir("ft"), precondition: precondition));

    [Fact]
    public void LossIsMseOfVelocityAgainstEpsMinusX0WithDrawsFromTheMethodGenerator()
    {
        using var method = Build();
        method.OnTrainStart();
        var src = new RandomBatchSource();
        using var raw = src.Next();
        var result = method.SingleTrainStep(raw, 1);
        Assert.Same(result.Losses["total_loss"], result.Losses["finetune_loss"]);
        Assert.Equal(ScalarType.Float32, result.Losses["total_loss"].dtype);

        // Redo the step by hand from a generator with the same seed (training.data.seed = 1234).
        using var g = new Generator(1234, device("cpu"));
        using var tb = method.Student.PrepareBatch(raw, g);
        var xt = tb.NoisyModelInput.permute(0, 2, 1, 3, 4);
        var v = method.Student.PredictNoise(xt, tb.Timesteps, tb, conditional: true);
        var target = tb.Noise.permute(0, 2, 1, 3, 4) - tb.Latents;
        double expected = (v - target).square().mean().item<float>();
        Assert.Equal(expected, result.Losses["total_loss"].item<float>(), 5);
    }

    [Fact]
    public void PreconditionedLossIsSigmaSquaredWeightedVelocityError()
    {
        // x_t − σv − x0 = σ(ε − x0 − v), so the x0-space MSE equals mean(σ² (v − (ε − x0))²).
        using var method = Build(precondition: true);
        method.OnTrainStart();
        using var raw = new RandomBatchSource().Next();
        var loss = method.SingleTrainStep(raw, 1).Losses["total_loss"].item<float>();
        using var g = new Generator(1234, device("cpu"));
        using var tb = method.Student.PrepareBatch(raw, g);
        var v = method.Student.PredictNoise(tb.NoisyModelInput.permute(0, 2, 1, 3, 4), tb.Timesteps, tb, conditional: true);
        var err = v - (tb.Noise.permute(0, 2, 1, 3, 4) - tb.Latents);
        double expected = (tb.Sigmas.square() * err.square()).mean().item<float>();
        Assert.Equal(expected, loss, 4);
    }

    [Fact]
    public void BackwardAndOptimizerStepMoveOnlyTheStudent()
    {
        using var method = Build();
        method.OnTrainStart();
        var p = method.Student.TrainableParameters().First();
        var before = p.detach().clone();
        using var raw = new RandomBatchSource().Next();
        method.Backward(method.SingleTrainStep(raw, 1), gradAccumRounds: 2);
        Assert.NotNull(p.grad);
        method.OptimizersSchedulersStep(1);
        method.OptimizersZeroGrad(1);
        Assert.Null(p.grad);
        Assert.False(p.eq(before).all().item<bool>());
        Assert.Equal(1, method.Optimizers["student"].Scheduler.LastEpoch);
    }

    [Fact]
    public void RolesAreCheckedBeforeAnyWeightsLoad()
    {
        // init_from does not exist: had the model been built first, the error would be about the folder.
        var dir = TestPaths.TempDir("ft");
        var frozen = Assert.Throws<UserError>(() => TrainingBuilder.Build(TrainFixture.Config(dir, studentTrainable: false, initFrom: "/no/such/model")));
        Assert.Contains("roles.student.trainable", frozen.Message);
        Assert.Contains("finetune", frozen.Message);

        var noStudent = TrainFixture.Config(dir, initFrom: "/no/such/model");
        noStudent = noStudent with { Roles = new Dictionary<string, FastVideo.Configs.RoleConfig> { ["teacher"] = noStudent.Roles["student"] } };
        Assert.Contains("roles.student", Assert.Throws<UserError>(() => TrainingBuilder.Build(noStudent)).Message);

        var noLr = TrainFixture.Config(dir, initFrom: "/no/such/model");
        noLr = noLr with { Training = noLr.Training with { Optimizer = noLr.Training.Optimizer with { LearningRate = 0 } } };
        Assert.Contains("training.optimizer.learning_rate", Assert.Throws<UserError>(() => TrainingBuilder.Build(noLr)).Message);

        var unknown = TrainFixture.Config(dir) with { Recipe = new FastVideo.Configs.RecipeSection { Family = "wan", Method = "sft" } };
        var e = Assert.Throws<UserError>(() => TrainingBuilder.Build(unknown));
        Assert.Contains("recipe.method", e.Message);
        Assert.Contains("finetune", e.Message);
    }

    [Fact]
    public void UnknownMethodOptionsAndMissingStepRulesAreNamed()
    {
        var dir = TestPaths.TempDir("ft");
        var typo = Assert.Throws<FastVideo.Configs.RecipeError>(() =>
            FastVideo.Configs.RecipeLoader.BindOptions<FineTuneOptions>(new Dictionary<string, object?> { ["precondition"] = true }, "method"));
        Assert.Contains("method.precondition: unknown key", typo.Message);
        var pw = TrainFixture.Config(dir, scheduler: "piecewise_constant");
        Assert.Contains("method.lr_step_rules", Assert.Throws<UserError>(() => TrainingBuilder.Build(pw)).Message);
        var ok = TrainFixture.Config(dir, scheduler: "piecewise_constant", method: new FineTuneOptions { LrStepRules = "1:2,0.1" });
        using var m = TrainingBuilder.Build(ok);
        Assert.Equal(1e-3, m.Optimizers["student"].Optimizer.Lr, 12);
    }
}

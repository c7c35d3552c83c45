using FastVideo.Configs;
using FastVideo.Train;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.DistributionMatching;
using FastVideo.Train.Models;
using FastVideo.Train.Tracking;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

public class DMD2MethodTests
{
    internal static Dictionary<string, object?> MethodOptions(string mode = "simulate", object? interval = null, bool warp = false, double guidance = 1.0) => new()
    {
        ["rollout_mode"] = mode,
        ["dmd_denoising_steps"] = new List<object?> { 1000L, 750L, 500L, 250L },
        ["warp_denoising_step"] = warp,
        ["generator_update_interval"] = interval ?? 1L,
        ["real_score_guidance_scale"] = guidance,
        ["fake_score_learning_rate"] = 1e-3,
        ["fake_score_betas"] = new List<object?> { 0.0, 0.999 },
        ["fake_score_lr_scheduler"] = "constant",
        ["cfg_uncond"] = new Dictionary<string, object?> { ["text"] = "zero" },
    };

    internal static RunConfig Config(string dir, int maxSteps = 3, int accum = 1, int saveSteps = 0, Dictionary<string, object?>? method = null,
        string initFrom = "", bool teacherTrainable = false)
    {
        var options = RecipeLoader.BindOptions<DMD2Options>(method ?? MethodOptions(), "method");
        var baseCfg = TrainFixture.Config(dir, maxSteps: maxSteps, accum: accum, saveSteps: saveSteps, method: options,
            callbacks: [TrainFixture.Callback("grad_clip", ("max_grad_norm", 1.0))]);
        var model = initFrom == "" ? TestPaths.Fixture("wan_tiny") : initFrom;
        return baseCfg with
        {
            Recipe = new RecipeSection { Family = "wan", Method = "dmd2" },
            Roles = new Dictionary<string, RoleConfig>
            {
                ["student"] = new RoleConfig { InitFrom = model },
                ["teacher"] = new RoleConfig { InitFrom = model, Trainable = teacherTrainable },
                ["critic"] = new RoleConfig { InitFrom = model },
            },
        };
    }

    [Fact]
    public void RolesAndOptionsAreCheckedBeforeWeightsLoad()
    {
        var dir = TestPaths.TempDir("dmd-roles");
        var missing = Path.Combine(dir, "no-such-model");
        var e1 = Assert.Throws<UserError>(() => TrainingBuilder.Build(Config(dir, initFrom: missing, teacherTrainable: true)));
        Assert.Contains("roles.teacher.trainable", e1.Message);
        var noCritic = Config(dir, initFrom: missing);
        noCritic = noCritic with { Roles = noCritic.Roles.Where(r => r.Key != "critic").ToDictionary() };
        Assert.Contains("roles.critic", Assert.Throws<UserError>(() => TrainingBuilder.Build(noCritic)).Message);
        var opts = MethodOptions(); opts.Remove("rollout_mode");
        Assert.Contains("method.rollout_mode", Assert.Throws<RecipeError>(() => TrainingBuilder.Build(Config(dir, initFrom: missing, method: opts))).Message);
        opts = MethodOptions(); opts.Remove("fake_score_learning_rate");
        Assert.Contains("method.fake_score_learning_rate", Assert.Throws<RecipeError>(() => TrainingBuilder.Build(Config(dir, initFrom: missing, method: opts))).Message);
        opts = MethodOptions(); opts["dmd_denoising_steps"] = new List<object?> { 1000L, 1200L };
        Assert.Contains("method.dmd_denoising_steps", Assert.Throws<RecipeError>(() => TrainingBuilder.Build(Config(dir, initFrom: missing, method: opts))).Message);
        opts = MethodOptions(); opts["rollout_mod"] = "simulate";
        Assert.Contains("method.rollout_mod: unknown key; did you mean 'rollout_mode'?", Assert.Throws<RecipeError>(() => TrainingBuilder.Build(Config(dir, initFrom: missing, method: opts))).Message);
    }

    [Fact]
    public void ScoreTimestepsStayWithinMinAndMaxTimestepRatio()
    {
        // FastVideo's method.min/max_timestep_ratio clamp the teacher's and critic's random timestep (after the shift)
        // to [int(min * 1000), int(max * 1000)].
        var options = MethodOptions();
        options["min_timestep_ratio"] = 0.45;
        options["max_timestep_ratio"] = 0.6;
        using var bounded = (DMD2Method)TrainingBuilder.Build(Config(TestPaths.TempDir("dmd-ratio"), method: options));
        using var plain = (DMD2Method)TrainingBuilder.Build(Config(TestPaths.TempDir("dmd-ratio-plain")));
        var inside = Enumerable.Range(0, 200).Select(_ => { using var t = bounded.ScoreTimestep(); return t.item<float>(); }).ToList();
        var free = Enumerable.Range(0, 200).Select(_ => { using var t = plain.ScoreTimestep(); return t.item<float>(); }).ToList();
        Assert.All(inside, t => Assert.InRange(t, 450f, 600f));
        Assert.Contains(inside, t => t == 450f);   // clamped, not redrawn
        Assert.Contains(free, t => t < 450f);
        Assert.Contains(free, t => t > 600f);
        var e = Assert.Throws<RecipeError>(() => RecipeLoader.BindOptions<DMD2Options>(new Dictionary<string, object?>(MethodOptions()) { ["min_timestep_ratio"] = 0.7, ["max_timestep_ratio"] = 0.6 }, "method"));
        Assert.Equal("method.max_timestep_ratio", e.KeyPath);
    }

    [Fact]
    public void WarpedStepsComeFromTheStudentGrid()
    {
        using var m = (DMD2Method)TrainingBuilder.Build(Config(TestPaths.TempDir("dmd-warp"), method: MethodOptions(warp: true)));
        var grid = m.Student.NoiseScheduler.TrainTimesteps;
        Assert.Equal(new[] { grid[0], grid[250], grid[500], grid[750] }, m.DenoisingSteps);
        using var plain = (DMD2Method)TrainingBuilder.Build(Config(TestPaths.TempDir("dmd-plain")));
        Assert.Equal(new[] { 1000f, 750f, 500f, 250f }, plain.DenoisingSteps);
    }

    [Theory]
    [InlineData("simulate")]
    [InlineData("data_latent")]
    public void StepTrainsStudentAndCriticAndAlternates(string mode)
    {
        using var m = (DMD2Method)TrainingBuilder.Build(Config(TestPaths.TempDir("dmd-step"), method: MethodOptions(mode, interval: 2L)));
        m.OnTrainStart();
        var src = new RandomBatchSource();
        var teacherBefore = m.Teacher.Transformer.parameters().First().clone();
        // Iteration 1: critic only. Iteration 2: both.
        using (var b = src.Next())
        {
            var r = m.SingleTrainStep(b, 1);
            Assert.Equal(0f, r.Losses["generator_loss"].item<float>());
            m.Backward(r, 1);
            Assert.All(m.Student.TrainableParameters(), p => Assert.True(p.grad is null || p.grad.abs().sum().item<float>() == 0));
            Assert.Contains(m.Critic.TrainableParameters(), p => p.grad is not null && p.grad.abs().sum().item<float>() > 0);
            Assert.Equal(["critic"], m.GetOptimizers(1).Select(o => o.Role));
            m.OptimizersSchedulersStep(1); m.OptimizersZeroGrad(1);
        }
        using (var b = src.Next())
        {
            var r = m.SingleTrainStep(b, 2);
            Assert.True(r.Losses["generator_loss"].item<float>() > 0);
            Assert.True(float.IsFinite(r.Losses["fake_score_loss"].item<float>()));
            m.Backward(r, 1);
            Assert.Contains(m.Student.TrainableParameters(), p => p.grad is not null && p.grad.abs().sum().item<float>() > 0);
            Assert.Equal(2, m.GetOptimizers(2).Count());
        }
        Assert.True(teacherBefore.eq(m.Teacher.Transformer.parameters().First()).all().item<bool>());
        Assert.Empty(m.Teacher.TrainableParameters());
    }

    [Fact]
    public void GeneratorGradientIsTheNormalisedScoreDifference()
    {
        // The degenerate case (the formula itself is checked by the test above).
        using var m = (DMD2Method)TrainingBuilder.Build(Config(TestPaths.TempDir("dmd-loss"), method: MethodOptions("data_latent")));
        m.OnTrainStart();
        using var b = new RandomBatchSource().Next();
        var r = m.SingleTrainStep(b, 1);
        float loss = r.Losses["generator_loss"].item<float>();
        // Student, critic and teacher start identical, so fake == real and the gradient (and loss) vanish.
        Assert.Equal(0f, loss, 6);
    }

    [Fact]
    public void GeneratorGradientIsTheGuidedNormalisedScoreDifferenceWhenTeacherAndCriticDiffer()
    {
        // Spec 6.3: real = real_u + g (real_c - real_u); grad = (fake - real) / mean|x_gen - real|;
        // loss = 0.5 MSE(x_gen, (x_gen - grad).detach()), so d loss / d x_gen = grad / numel and loss = 0.5 mean(grad^2).
        const double guidance = 3.0;
        using var m = (DMD2Method)TrainingBuilder.Build(Config(TestPaths.TempDir("dmd-grad"), method: MethodOptions("data_latent", guidance: guidance)));
        m.OnTrainStart();
        // The critic drifts away from the teacher, as it does once it trains: fake and real scores differ.
        using (no_grad())
        using (var drift = new Generator(11, CPU))
            foreach (var p in m.Critic.TrainableParameters())
            {
                using var d = randn(p.shape, generator: drift).mul_(0.05);
                p.add_(d);
            }
        using var batch = new RandomBatchSource().Next();
        using var tb = m.Student.PrepareBatch(batch, m.Generator, LatentsSource.Data);
        using var sampleGen = new Generator(12, CPU);
        using var xGen = randn(tb.Latents.shape, generator: sampleGen).mul_(0.8).requires_grad_();
        using var before = m.Generator.get_state();
        var metrics = new Dictionary<string, Tensor>();
        using var loss = m.DmdLoss(xGen, tb, metrics);
        loss.backward();
        using var grad = xGen.grad!.clone();

        // The same draws by hand (the DMD timestep, then the noise, from the method's generator), then the formula.
        m.Generator.set_state(before);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var t = m.Student.ShiftAndClampTimestep(randint(0, 1000, [1], ScalarType.Int64, generator: m.Generator).to_type(ScalarType.Float32));
        var x = xGen.detach();
        var xt = m.Student.AddNoise(x, randn(x.shape, generator: m.Generator), t);
        var fake = m.Critic.PredictX0(xt, t, tb, conditional: true, m.CfgUncond);
        var realCond = m.Teacher.PredictX0(xt, t, tb, conditional: true, m.CfgUncond);
        var realUncond = m.Teacher.PredictX0(xt, t, tb, conditional: false, m.CfgUncond);
        var real = realUncond + guidance * (realCond - realUncond);
        var norm = (x - real).abs().mean();
        var expected = (fake - real) / norm;
        long n = x.numel();

        Assert.Equal(t.item<float>(), metrics["dmd_timestep"].item<float>());
        Assert.True(grad.allclose(expected / n, rtol: 1e-4, atol: 1e-10),
            $"d loss / d x_gen differs from (fake - real) / norm / numel by up to {(grad - expected / n).abs().max().item<float>()} (scale {(expected / n).abs().max().item<float>()})");
        Assert.Equal(0.5 * expected.pow(2).mean().item<float>(), loss.item<float>(), 1e-4 * loss.item<float>());

        // What makes the check bite: the normalisation is far from 1, the guided real score is far from the
        // conditional one, and fake and real differ, so a missing norm, a missing guidance or a flipped sign all fail.
        Assert.True(Math.Abs(norm.item<float>() - 1) > 0.2, $"norm {norm.item<float>()} is too close to 1 to tell");
        var unguided = (fake - realCond) / (x - realCond).abs().mean();
        Assert.False(grad.allclose(unguided / n, rtol: 0.05, atol: 1e-10), "the guidance scale makes no difference here");
        Assert.True(expected.abs().mean().item<float>() > 1e-3, "fake and real scores barely differ");
    }

    [Fact]
    public void Dmd2WithAccumulationResumesBitForBit()
    {
        var straight = Config(TestPaths.TempDir("dmd-straight"), maxSteps: 4, accum: 2, saveSteps: 2, method: MethodOptions(interval: 2L));
        var a = Run(straight, null);
        var dir = TestPaths.TempDir("dmd-resume");
        var first = Config(dir, maxSteps: 4, accum: 2, saveSteps: 2, method: MethodOptions(interval: 2L));
        var b1 = Run(first, 2);
        Assert.Equal([2], CheckpointManager.List(dir).Select(c => c.Step));
        var second = first with { Training = first.Training with { Checkpoint = first.Training.Checkpoint with { ResumeFromCheckpoint = "latest" } } };
        var b2 = Run(second, null);
        var b = b1.Concat(b2).ToList();
        Assert.Equal(4, b.Count);
        for (int i = 0; i < 4; i++)
            foreach (var key in new[] { "generator_loss", "fake_score_loss", "grad_norm/critic" })
                Assert.Equal(BitConverter.DoubleToInt64Bits(a[i][key]), BitConverter.DoubleToInt64Bits(b[i][key]));
        Assert.NotEqual(a[2]["fake_score_loss"], a[3]["fake_score_loss"]);
        Assert.True(a[3]["generator_loss"] > 0);
    }

    private static List<IReadOnlyDictionary<string, double>> Run(RunConfig cfg, int? stopAfter)
    {
        using var method = TrainingBuilder.Build(cfg);
        var memory = new MemoryTracker();
        using var trainer = new Trainer(method, new RandomBatchSource(), trackers: [memory], console: TextWriter.Null);
        trainer.Run(stopAfter);
        return memory.Entries.Select(e => (IReadOnlyDictionary<string, double>)e.Metrics).ToList();
    }
}

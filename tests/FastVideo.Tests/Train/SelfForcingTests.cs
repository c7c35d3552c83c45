using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.DistributionMatching;
using FastVideo.Train.Models;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>
/// self_forcing (spec 6.4): the streaming rollout against an independent computation through the block-causal
/// training forward (no KV cache), its gradients, one whole step (DMD and critic losses on the Self-Forcing
/// scheduler) by hand, option errors and resume bit for bit.
/// </summary>
public class SelfForcingTests
{
    private static readonly float[] Steps = [1000, 750, 500, 250];

    private static Dictionary<string, object?> Options(string sample = "sde", bool same = false, bool last = false, double context = 0,
        long startGrad = 0, long chunk = 2, double guidance = 1.0, long interval = 1)
    {
        var o = DMD2MethodTests.MethodOptions(guidance: guidance, interval: interval);
        o["chunk_size"] = chunk;
        o["student_sample_type"] = sample;
        o["same_step_across_blocks"] = same;
        o["last_step_only"] = last;
        o["context_noise"] = context;
        o["start_gradient_frame"] = startGrad;
        return o;
    }

    /// <summary>A wan_causal student (blocks of 2) and wan teacher and critic on the tiny fixture, clips of 4 frames, pipeline flow_shift 1.</summary>
    private static RunConfig Config(string dir, Dictionary<string, object?> options, int maxSteps = 3, int accum = 1, int saveSteps = 0)
    {
        var cfg = CausalMethodFixture.Config(dir, "self_forcing", options, maxSteps, accum, saveSteps, frames: 4, framesPerBlock: 2, otherRoles: ["teacher", "critic"]);
        return cfg with { Pipeline = cfg.Pipeline with { FlowShift = 1.0 } };
    }

    private static SelfForcingMethod Build(Dictionary<string, object?> options)
    {
        var m = (SelfForcingMethod)TrainingBuilder.Build(Config(TestPaths.TempDir("sf"), options));
        m.OnTrainStart();
        return m;
    }

    /// <summary>sigma of an on-grid timestep with shift 1 (the fixture's pipeline): t / 1000.</summary>
    private static double Sigma(double t) => t / 1000;

    /// <summary>
    /// Spec 6.4's rollout written out with the block-causal training forward: block b's prediction at step i is the
    /// forward over [contexts of blocks &lt; b, x] with timesteps [context timesteps, t_i], cut to the block. The same
    /// draws in the same order from <paramref name="g"/>.
    /// </summary>
    private static Tensor Reference(SelfForcingMethod m, TrainingBatch tb, Generator g, string sample, bool same, bool last, double contextNoise)
    {
        var shape = tb.Latents.shape;
        long b = shape[0];
        var noise = randn(shape, generator: g);
        var blocks = new[] { (0L, 2L), (2L, 4L) };   // T = 4, chunk 2
        int[] exits = last ? [3, 3] : randint(0, 4, [same ? 1 : 2], dtype: ScalarType.Int64, generator: g).data<long>().Select(e => (int)e).ToArray();
        if (same) exits = [exits[0], exits[0]];
        var ctxFrames = new List<Tensor>();
        var ctxTimes = new List<Tensor>();
        var outputs = new List<Tensor>();
        for (int bi = 0; bi < 2; bi++)
        {
            var (s, e) = blocks[bi];
            var x = noise.narrow(1, s, e - s);
            Tensor x0 = null!;
            for (int i = 0; i <= exits[bi]; i++)
            {
                var v = m.Student.PredictNoise(cat([.. ctxFrames, x], 1), cat([.. ctxTimes, full([b, e - s], Steps[i])], 1), tb, conditional: true, m.CfgUncond)
                    .narrow(1, s, e - s);
                x0 = x - Sigma(Steps[i]) * v;
                if (i == exits[bi]) break;
                double sc = Sigma(Steps[i]), sn = Sigma(Steps[i + 1]);
                x = sample == "sde"
                    ? (1 - sn) * x0 + sn * randn(x0.shape, generator: g)
                    : (1 - sn) * x0 + sn * ((x - (1 - sc) * x0) / sc);
            }
            outputs.Add(x0);
            var context = contextNoise > 0 ? (1 - Sigma(contextNoise)) * x0 + Sigma(contextNoise) * randn(x0.shape, generator: g) : x0;
            ctxFrames.Add(context.detach());
            ctxTimes.Add(full([b, e - s], (float)contextNoise));
        }
        return cat(outputs.ToArray(), 1);
    }

    private static TrainingBatch ZeroBatch(ModelBase student)
    {
        using var raw = new RandomBatchSource(frames: 4).Next();
        using var g = new Generator(1, CPU);
        return student.PrepareBatch(raw, g, LatentsSource.Zeros);
    }

    [Theory]
    [InlineData("sde", false, false, 0.0)]
    [InlineData("ode", false, false, 0.0)]
    [InlineData("sde", true, false, 300.0)]
    [InlineData("ode", false, true, 300.0)]
    public void RolloutIsTheBlockCausalForwardOnItsOwnEarlierBlocks(string sample, bool same, bool last, double context)
    {
        using var scope = NewDisposeScope();
        using var m = Build(Options(sample, same, last, context));
        using var tb = ZeroBatch(m.Student);
        Assert.Equal(new long[] { 1, 4, 4, 8, 8 }, tb.Latents.shape);
        using var start = m.Generator.get_state();
        using var noGrad = no_grad();
        var rollout = m.StudentRollout(tb, withGrad: false, out _);
        using var after = m.Generator.get_state();
        m.Generator.set_state(start);
        var reference = Reference(m, tb, m.Generator, sample, same, last, context);
        double err = (rollout - reference).abs().max().item<float>();
        Assert.True(err < 1e-4, $"max abs difference {err:E2}");
        // Every draw came from the method's generator, and as many as the reference made.
        Assert.True(after.eq(m.Generator.get_state()).all().item<bool>());
        // Not vacuous: the second block depends on the first (its context).
        Assert.True(rollout.narrow(1, 2, 2).abs().mean().item<float>() > 1e-3);
    }

    [Fact]
    public void BlocksAndExitSteps()
    {
        Assert.Equal([(0L, 4L)], SelfForcingMethod.Blocks(4, 3));
        Assert.Equal([(0L, 4L), (4L, 7L)], SelfForcingMethod.Blocks(7, 3));
        Assert.Equal([(0L, 3L), (3L, 6L)], SelfForcingMethod.Blocks(6, 3));
        Assert.Equal([(0L, 2L)], SelfForcingMethod.Blocks(2, 3));
        Assert.Equal([(0L, 3L), (3L, 5L)], SelfForcingMethod.Blocks(5, 2));
        using var last = Build(Options(last: true));
        Assert.Equal([3, 3, 3], last.ExitSteps(3));
        using var same = Build(Options(same: true));
        var e = same.ExitSteps(5);
        Assert.All(e, x => Assert.Equal(e[0], x));
        using var each = Build(Options());
        var draws = Enumerable.Range(0, 20).SelectMany(_ => each.ExitSteps(2)).ToArray();
        Assert.Equal([0, 1, 2, 3], draws.Distinct().Order());
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(2L)]
    public void RolloutGradientsFlowThroughEachBlocksExitStepOnly(long startGradient)
    {
        // The same rollout by hand with the streaming primitives: grads only on the exit steps of the blocks that
        // start at or after start_gradient_frame; the cached context carries none.
        using var scope = NewDisposeScope();
        using var m = Build(Options(startGrad: startGradient));
        using var tb = ZeroBatch(m.Student);
        using var start = m.Generator.get_state();
        var w = randn([1, 4, 4, 8, 8], generator: new Generator(3, CPU));
        (m.StudentRollout(tb, withGrad: true, out _) * w).sum().backward();
        var grads = CausalMethodFixture.Grads(m.Student.Transformer);
        CausalMethodFixture.ZeroGrads(m.Student.Transformer);

        m.Generator.set_state(start);
        var g = m.Generator;
        var noise = randn(tb.Latents.shape, generator: g);
        var exits = randint(0, 4, [2], dtype: ScalarType.Int64, generator: g).data<long>().Select(e => (int)e).ToArray();
        m.Causal.ClearCaches("hand");
        var outputs = new List<Tensor>();
        foreach (var (bi, s) in new[] { (0, 0L), (1, 2L) })
        {
            var x = noise.narrow(1, s, 2);
            Tensor x0 = null!;
            for (int i = 0; i <= exits[bi]; i++)
            {
                var t = full([1, 2], Steps[i]);
                using (i == exits[bi] && s >= startGradient ? enable_grad() : no_grad())
                    x0 = x - Sigma(Steps[i]) * m.Causal.PredictNoiseStreaming(x, t, tb, true, "hand", curStartFrame: (int)s, cfgUncond: m.CfgUncond)!;
                if (i == exits[bi]) break;
                x = (1 - Sigma(Steps[i + 1])) * x0 + Sigma(Steps[i + 1]) * randn(x0.shape, generator: g);
            }
            outputs.Add(x0);
            using (no_grad()) m.Causal.PredictNoiseStreaming(x0.detach(), zeros([1, 2]), tb, true, "hand", storeKv: true, curStartFrame: (int)s, cfgUncond: m.CfgUncond);
        }
        (cat(outputs.ToArray(), 1) * w).sum().backward();
        CausalMethodFixture.AssertGradsClose(CausalMethodFixture.Grads(m.Student.Transformer), grads);
        if (startGradient > 0) Assert.False(outputs[0].requires_grad);
    }

    [Fact]
    public void OneStepMatchesTheHandComputation()
    {
        // Spec 6.3/6.4, draws in order: prepare_batch; the generator's rollout; the DMD timestep and noise; the critic's
        // own rollout; its timestep and noise. Forward processes and x0 on the Self-Forcing grid (shift 1: sigma = t/1000).
        const double guidance = 2.0;
        using var scope = NewDisposeScope();
        using var m = Build(Options(guidance: guidance));
        using (no_grad())
        using (var drift = new Generator(11, CPU))
            foreach (var p in m.Critic.TrainableParameters()) p.add_(randn(p.shape, generator: drift) * 0.05);
        using var batch = new RandomBatchSource(frames: 4).Next();
        using var start = m.Generator.get_state();
        var r = m.SingleTrainStep(batch, 1);

        m.Generator.set_state(start);
        using var noGrad = no_grad();
        var g = m.Generator;
        using var tb = m.Student.PrepareBatch(batch, g, LatentsSource.Zeros);
        var xGen = Reference(m, tb, g, "sde", false, false, 0);
        var t = m.Student.ShiftAndClampTimestep(randint(0, 1000, [1], ScalarType.Int64, generator: g).to_type(ScalarType.Float32));
        double sigma = m.Sf.SigmasForTimesteps(t).item<double>();
        var xt = (1 - sigma) * xGen + sigma * randn(xGen.shape, generator: g);
        Tensor X0(ModelBase model, bool conditional) => xt - sigma * model.PredictNoise(xt, t, tb, conditional, m.CfgUncond);
        var fake = X0(m.Critic, true);
        var real = X0(m.Teacher, false) + guidance * (X0(m.Teacher, true) - X0(m.Teacher, false));
        var grad = (fake - real) / (xGen - real).abs().mean();
        double generatorLoss = 0.5 * grad.pow(2).mean().item<float>();
        Assert.Equal(generatorLoss, r.Losses["generator_loss"].item<float>(), 1e-4 * generatorLoss);

        var xCritic = Reference(m, tb, g, "sde", false, false, 0);
        var tc = m.Student.ShiftAndClampTimestep(randint(0, 1000, [1], ScalarType.Int64, generator: g).to_type(ScalarType.Float32));
        double sc = m.Sf.SigmasForTimesteps(tc).item<double>();
        var eps = randn(xCritic.shape, generator: g);
        var v = m.Critic.PredictNoise((1 - sc) * xCritic + sc * eps, tc, tb, conditional: true, m.CfgUncond);
        double criticLoss = (v - (eps - xCritic)).pow(2).mean().item<float>();
        Assert.Equal(criticLoss, r.Losses["fake_score_loss"].item<float>(), 1e-4 * criticLoss);
        Assert.True(generatorLoss > 1e-6, "fake and real scores must differ for the check to bite");
    }

    [Fact]
    public void ActivationCheckpointingGivesTheSameStep()
    {
        // The rollout's exit steps stream with autograd through a cache that later blocks overwrite and the rollout
        // clears: checkpointed, their recomputation in backward must still see what the forward saw.
        List<Tensor> Step(string? checkpointing)
        {
            var cfg = Config(TestPaths.TempDir("sf-ckpt"), Options());
            var student = (FastVideo.Train.Models.Wan.WanCausalRoleConfig)cfg.Roles["student"] with { EnableGradientCheckpointingType = checkpointing };
            cfg = cfg with { Roles = new Dictionary<string, RoleConfig>(cfg.Roles) { ["student"] = student } };
            using var m = (SelfForcingMethod)TrainingBuilder.Build(cfg);
            Assert.Equal(checkpointing, m.Student.AppliedCheckpointing);
            m.OnTrainStart();
            using (no_grad())
            using (var drift = new Generator(11, CPU))
                foreach (var p in m.Critic.TrainableParameters()) p.add_(randn(p.shape, generator: drift) * 0.05);
            using var batch = new RandomBatchSource(frames: 4).Next();
            m.Backward(m.SingleTrainStep(batch, 1), 1);
            return CausalMethodFixture.Grads(m.Student.Transformer);
        }
        using var scope = NewDisposeScope();
        CausalMethodFixture.AssertGradsClose(Step(null), Step("full"), rtol: 1e-4);
    }

    [Fact]
    public void BadOptionsAndRolesAreRefused()
    {
        var dir = TestPaths.TempDir("sf-bad");
        var o = Options(); o["rollout_mode"] = "data_latent";
        Assert.Contains("method.rollout_mode: self_forcing generates its samples itself", Assert.Throws<RecipeError>(() => Config(dir, o)).Message);
        Assert.Contains("method.chunk_size: must be > 0", Assert.Throws<RecipeError>(() => Config(dir, Options(chunk: 0))).Message);
        Assert.Contains("method.context_noise", Assert.Throws<RecipeError>(() => Config(dir, Options(context: -1))).Message);
        o = Options(); o["student_sample_type"] = "euler";
        Assert.Contains("method.student_sample_type", Assert.Throws<RecipeError>(() => Config(dir, o)).Message);
        o = Options(); o["enable_gradient_in_rollout"] = false;
        Assert.Contains("method.enable_gradient_in_rollout: false leaves the student without any gradient", Assert.Throws<RecipeError>(() => Config(dir, o)).Message);
        Assert.Contains("method.start_gradient_frame: (3) is after the start of the last block (frame 2 of 4)",
            Assert.Throws<UserError>(() => TrainingBuilder.Build(Config(dir, Options(startGrad: 3)))).Message);
        var bidirectional = Config(dir, Options());
        bidirectional = bidirectional with { Roles = new Dictionary<string, RoleConfig>(bidirectional.Roles) { ["student"] = new RoleConfig { InitFrom = CausalMethodFixture.Model, Family = "wan" } } };
        Assert.Contains("roles.student: self_forcing needs a causal student", Assert.Throws<UserError>(() => TrainingBuilder.Build(bidirectional)).Message);
        var noCritic = Config(dir, Options());
        noCritic = noCritic with { Roles = noCritic.Roles.Where(r => r.Key != "critic").ToDictionary() };
        Assert.Contains("roles.critic: method 'self_forcing'", Assert.Throws<UserError>(() => TrainingBuilder.Build(noCritic)).Message);
    }

    [Fact]
    public void WarpedStepsComeFromTheSelfForcingGrid()
    {
        var o = Options(); o["warp_denoising_step"] = true;
        using var m = Build(o);
        var grid = m.Sf.TrainTimesteps;
        Assert.Equal(new[] { grid[0], grid[250], grid[500], grid[750] }, m.DenoisingSteps);
    }

    [Fact]
    public void ResumesBitForBitWithAccumulation()
    {
        var straight = CausalMethodFixture.AssertResumesBitForBit(
            dir => Config(dir, Options(context: 100, interval: 2), maxSteps: 4, accum: 2, saveSteps: 2),
            ["generator_loss", "fake_score_loss", "grad_norm/critic", "update_student"], () => new RandomBatchSource(frames: 4));
        Assert.True(straight[3]["generator_loss"] > 0);
        Assert.NotEqual(straight[2]["fake_score_loss"], straight[3]["fake_score_loss"]);
    }
}

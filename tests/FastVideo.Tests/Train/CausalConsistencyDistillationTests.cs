using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.ConsistencyModel;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>causal_cd: one step against the formula written out with the teacher-forcing primitives (loss and
/// gradients), the EMA role's update and checkpointing, option and role errors, FastVideo's key spelling, resume.</summary>
public class CausalConsistencyDistillationTests
{
    private static Dictionary<string, object?> Options(long n = 8, double guidance = 3.0, double decay = 0.9, long emaStart = 2) => new()
    {
        ["discrete_cd_N"] = n, ["guidance_scale"] = guidance, ["ema_decay"] = decay, ["ema_start_step"] = emaStart,
        ["cfg_uncond"] = new Dictionary<string, object?> { ["text"] = "zero" },   // the tiny fixture has no negative prompt
    };

    /// <summary>Student, teacher and ema: wan_causal (blocks of 2 frames) on the tiny fixture; 4-frame clips; flow_shift 3.</summary>
    private static RunConfig Config(string dir, Dictionary<string, object?> options, int maxSteps = 3, int accum = 1, int saveSteps = 0,
        string teacherFamily = "wan_causal", bool emaTrainable = false)
    {
        var cfg = CausalMethodFixture.Config(dir, "causal_cd", options, maxSteps, accum, saveSteps, frames: 4, framesPerBlock: 2);
        RoleConfig Causal(bool trainable) => new WanCausalRoleConfig { InitFrom = CausalMethodFixture.Model, NumFramesPerBlock = 2, Family = "wan_causal", Trainable = trainable };
        var roles = new Dictionary<string, RoleConfig>(cfg.Roles)
        {
            ["teacher"] = teacherFamily == "wan_causal" ? Causal(false) : new RoleConfig { InitFrom = CausalMethodFixture.Model, Family = teacherFamily, Trainable = false },
            ["ema"] = Causal(emaTrainable),
        };
        return cfg with { Roles = roles, Pipeline = cfg.Pipeline with { FlowShift = 3.0 } };
    }

    private static CausalConsistencyDistillationMethod Build(Dictionary<string, object?> options)
    {
        var m = (CausalConsistencyDistillationMethod)TrainingBuilder.Build(Config(TestPaths.TempDir("ccd"), options));
        m.OnTrainStart();
        using (no_grad())
        using (var drift = new Generator(5, CPU))
        {
            // Three different networks, so a role mixed up with another fails the check.
            foreach (var p in m.Teacher.Transformer.parameters()) p.add_(randn(p.shape, generator: drift) * 0.05);
            foreach (var p in m.Ema.Transformer.parameters()) p.add_(randn(p.shape, generator: drift) * 0.02);
        }
        return m;
    }

    /// <summary>The N-point grid written out: sigmas linspace(1, 0, N+1)[:-1] shifted by s·σ/(1+(s-1)σ), timesteps 1000σ.</summary>
    private static double[] Sigmas(int n, double shift) =>
        Enumerable.Range(0, n).Select(k => 1.0 - (double)k / n).Select(s => shift * s / (1 + (shift - 1) * s)).ToArray();

    [Fact]
    public void OneStepMatchesTheFormula()
    {
        using var scope = NewDisposeScope();
        using var m = Build(Options());
        using var batch = new RandomBatchSource(frames: 4).Next();
        using var start = m.Generator.get_state();
        var r = m.SingleTrainStep(batch, 1);
        m.Backward(r, 1);
        var grads = CausalMethodFixture.Grads(m.Student.Transformer);
        CausalMethodFixture.ZeroGrads(m.Student.Transformer);

        m.Generator.set_state(start);
        var g = m.Generator;
        using var tb = m.Student.PrepareBatch(batch, g, LatentsSource.Data);
        var x = tb.Latents;
        int i = (int)randint(0, 7, [1], dtype: ScalarType.Int64, generator: g).item<long>();
        var sigmas = Sigmas(8, 3.0);
        Assert.Equal(sigmas.Select(s => (float)s), m.Grid.TrainSigmas, (a, b) => Math.Abs(a - b) < 1e-6);
        double s0 = sigmas[i], s1 = sigmas[i + 1];
        var noise = randn(x.shape, generator: g);
        var xt = (1 - s0) * x + s0 * noise;
        var t0 = full([1, 4], (float)(1000 * s0));
        var t1 = full([1, 4], (float)(1000 * s1));
        var teacher = (ICausalModel)m.Teacher;
        Tensor target;
        using (no_grad())
        {
            var vc = teacher.PredictNoiseTeacherForcing(xt, t0, tb, x, conditional: true, cfgUncond: m.CfgUncond);
            var vu = teacher.PredictNoiseTeacherForcing(xt, t0, tb, x, conditional: false, cfgUncond: m.CfgUncond);
            var xNext = xt - (s0 - s1) * (vu + 3.0 * (vc - vu));
            target = xNext - s1 * ((ICausalModel)m.Ema).PredictNoiseTeacherForcing(xNext, t1, tb, x, conditional: true);
        }
        var loss = (xt - s0 * ((ICausalModel)m.Student).PredictNoiseTeacherForcing(xt, t0, tb, x, conditional: true) - target).pow(2).mean();
        Assert.Equal(loss.item<float>(), r.Losses["causal_cd_loss"].item<float>(), 1e-4 * loss.item<float>());
        Assert.Equal((float)i, r.Metrics["cd_step_idx"].item<float>());
        loss.backward();
        CausalMethodFixture.AssertGradsClose(CausalMethodFixture.Grads(m.Student.Transformer), grads);
    }

    [Fact]
    public void TheEmaRoleFollowsTheStudentFromItsStartStep()
    {
        using var scope = NewDisposeScope();
        using var m = Build(Options(decay: 0.9, emaStart: 2));
        using var batch = new RandomBatchSource(frames: 4).Next();
        List<Tensor> Snapshot(ModelBase role) => role.Transformer.parameters().Select(p => p.detach().clone()).ToList();
        var ema0 = Snapshot(m.Ema);
        m.Backward(m.SingleTrainStep(batch, 1), 1);
        m.OptimizersSchedulersStep(1);   // before ema_start_step: the student moves, the ema does not
        Assert.All(Snapshot(m.Ema).Zip(ema0), p => Assert.True(p.First.eq(p.Second).all().item<bool>()));
        m.OptimizersZeroGrad(1);
        m.Backward(m.SingleTrainStep(batch, 2), 1);
        m.OptimizersSchedulersStep(2);
        var student = Snapshot(m.Student);
        foreach (var (e, (e0, s)) in Snapshot(m.Ema).Zip(ema0.Zip(student)))
            Assert.True(e.allclose(0.9 * e0 + 0.1 * s, rtol: 1e-5, atol: 1e-7));
        Assert.Contains(Snapshot(m.Ema).Zip(ema0), p => !p.First.eq(p.Second).all().item<bool>());
    }

    [Fact]
    public void ResumesBitForBitWithTheEmaInTheCheckpoint()
    {
        var straight = CausalMethodFixture.AssertResumesBitForBit(
            dir => Config(dir, Options(emaStart: 1), maxSteps: 4, accum: 2, saveSteps: 2),
            ["causal_cd_loss", "grad_norm/student", "cd_step_idx"], () => new RandomBatchSource(frames: 4));
        Assert.True(straight[3]["causal_cd_loss"] > 0);
    }

    [Fact]
    public void BadOptionsAndRolesAreRefused()
    {
        var dir = TestPaths.TempDir("ccd-bad");
        Assert.Contains("method.discrete_cd_N: must be >= 2", Assert.Throws<RecipeError>(() => Config(dir, Options(n: 1))).Message);
        Assert.Contains("method.ema_decay: must be in [0, 1]", Assert.Throws<RecipeError>(() => Config(dir, Options(decay: 1.5))).Message);
        Assert.Contains("roles.ema.trainable: method 'causal_cd' needs 'ema' to be frozen",
            Assert.Throws<UserError>(() => TrainingBuilder.Build(Config(dir, Options(), emaTrainable: true))).Message);
        Assert.Contains("roles.teacher: causal_cd runs the teacher with clean-history teacher forcing, which needs a causal family (wan_causal), got wan",
            Assert.Throws<UserError>(() => TrainingBuilder.Build(Config(dir, Options(), teacherFamily: "wan"))).Message);
    }

    [Fact]
    public void FastVideosKeySpellingBinds()
    {
        var o = RecipeLoader.BindOptions<CausalCDOptions>(new Dictionary<string, object?> { ["discrete_cd_N"] = 12L }, "method");
        Assert.Equal(12, o.DiscreteCdN);
        Assert.Throws<RecipeError>(() => RecipeLoader.BindOptions<CausalCDOptions>(new Dictionary<string, object?> { ["discrete_cd_n"] = 12L }, "method"));
    }
}

using System.Globalization;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Train.Models;
using FastVideo.Train.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.DistributionMatching;

/// <summary>How the student's training samples are produced.</summary>
public enum RolloutMode
{
    /// <summary>From pure noise through the student's own few-step chain (no data latents needed).</summary>
    Simulate,
    /// <summary>One student step from data latents noised to a randomly chosen denoising step.</summary>
    DataLatent,
}

/// <summary>The <c>method:</c> options of DMD2, parsed and validated before any weights load.</summary>
public sealed record DMD2Options(
    RolloutMode RolloutMode,
    int GeneratorUpdateInterval,
    IReadOnlyList<double> DmdDenoisingSteps,
    bool WarpDenoisingStep,
    double RealScoreGuidanceScale,
    double FakeScoreLearningRate,
    IReadOnlyList<double> FakeScoreBetas,
    string FakeScoreLrScheduler,
    CfgUncondPolicy? CfgUncond)
{
    public static DMD2Options Parse(RunConfig config)
    {
        var map = config.Method;
        var o = new Options(map, "method");
        var mode = o.String("rollout_mode", null)?.Trim().ToLowerInvariant() switch
        {
            "simulate" or "sim" => RolloutMode.Simulate,
            "data_latent" or "data" or "vae_latent" => RolloutMode.DataLatent,
            null => throw new UserError("method.rollout_mode: required for dmd2 (simulate or data_latent)"),
            var other => throw new UserError($"method.rollout_mode: expected simulate or data_latent, got '{other}'"),
        };
        var steps = o.DoubleList("dmd_denoising_steps", null) ?? throw new UserError("method.dmd_denoising_steps: required for dmd2");
        if (steps.Count == 0) throw new UserError("method.dmd_denoising_steps: must list at least one timestep, e.g. [1000, 750, 500, 250]");
        foreach (var s in steps)
            if (!(s > 0 && s <= 1000) || Math.Floor(s) != s)
                throw new UserError($"method.dmd_denoising_steps: each step must be an integer in 1..1000, got {s.ToString(CultureInfo.InvariantCulture)}");
        double lr = o.Double("fake_score_learning_rate", double.NaN);
        if (double.IsNaN(lr)) throw new UserError("method.fake_score_learning_rate: required for dmd2 (the critic's learning rate)");
        if (!(lr > 0)) throw new UserError($"method.fake_score_learning_rate: must be > 0, got {lr.ToString(CultureInfo.InvariantCulture)}");
        var betas = o.DoubleList("fake_score_betas", null) ?? throw new UserError("method.fake_score_betas: required for dmd2");
        if (betas.Count != 2 || betas.Any(b => b is < 0 or >= 1))
            throw new UserError("method.fake_score_betas: expected two numbers in [0, 1), e.g. [0.0, 0.999]");
        var sched = o.String("fake_score_lr_scheduler", null)
            ?? throw new UserError("method.fake_score_lr_scheduler: required for dmd2 (e.g. constant)");
        CfgUncondPolicy? cfgUncond = null;
        o.Allow("cfg_uncond");
        if (map.TryGetValue("cfg_uncond", out var cu) && cu is not null)
            cfgUncond = CfgUncondPolicy.Parse(cu as IReadOnlyDictionary<string, object?> ?? (cu as IDictionary<string, object?>)?.ToDictionary()
                ?? throw new UserError("method.cfg_uncond: expected a map, e.g. {text: negative_prompt}"));
        var result = new DMD2Options(
            mode,
            o.Int("generator_update_interval", 1),
            steps,
            o.Bool("warp_denoising_step", false),
            o.Double("real_score_guidance_scale", 1.0),
            lr, betas, sched, cfgUncond);
        o.Allow("lr_step_rules");
        o.RejectUnknown();
        return result;
    }
}

/// <summary>
/// DMD2 distribution-matching distillation (spec 6.3). The student is a few-step generator; a frozen teacher gives
/// the real score and a trainable critic (fake score) tracks the student's distribution. The student's gradient is
/// (fake x0 - real x0) normalised by mean |x_gen - real x0|; the critic learns flow matching on student samples.
/// </summary>
public sealed class DMD2Method : TrainingMethod
{
    public static MethodDescriptor Descriptor { get; } = new("dmd2", CheckRoles, (cfg, roles) => new DMD2Method(cfg, roles));

    public static void CheckRoles(RunConfig config)
    {
        MethodRegistry.RequireRole(config, "dmd2", "student", trainable: true);
        MethodRegistry.RequireRole(config, "dmd2", "teacher", trainable: false);
        MethodRegistry.RequireRole(config, "dmd2", "critic", trainable: true);
        if (!(config.Training.Optimizer.LearningRate > 0))
            throw new UserError($"training.optimizer.learning_rate: dmd2 needs a student learning rate > 0, got {config.Training.Optimizer.LearningRate}");
        DMD2Options.Parse(config);
    }

    private readonly RoleOptimizer _studentOpt, _criticOpt;

    public DMD2Method(RunConfig config, IReadOnlyDictionary<string, ModelBase> roles) : base(config, roles)
    {
        CheckRoles(config);
        Options = DMD2Options.Parse(config);
        Teacher = roles["teacher"];
        Critic = roles["critic"];
        Student.InitPreprocessors();
        _studentOpt = CreateOptimizer(Student);
        var criticCfg = Training.Optimizer with
        {
            LearningRate = Options.FakeScoreLearningRate,
            Betas = Options.FakeScoreBetas,
            LrScheduler = Options.FakeScoreLrScheduler,
        };
        _criticOpt = CreateOptimizer(Critic, criticCfg, "method.fake_score");
        DenoisingSteps = BuildSteps();
    }

    public DMD2Options Options { get; }
    public ModelBase Teacher { get; }
    public ModelBase Critic { get; }
    /// <summary>Student rollout timesteps (after warping when asked).</summary>
    public float[] DenoisingSteps { get; }

    public override IReadOnlyDictionary<string, RoleOptimizer> Optimizers =>
        new Dictionary<string, RoleOptimizer> { ["student"] = _studentOpt, ["critic"] = _criticOpt };

    public bool UpdatesStudent(int iteration) =>
        Options.GeneratorUpdateInterval <= 0 || iteration % Options.GeneratorUpdateInterval == 0;

    public override IEnumerable<RoleOptimizer> GetOptimizers(int iteration) =>
        UpdatesStudent(iteration) ? [_studentOpt, _criticOpt] : [_criticOpt];

    public override IReadOnlyDictionary<string, nn.Module> GetGradClipTargets(int iteration)
    {
        var targets = new Dictionary<string, nn.Module>();
        if (UpdatesStudent(iteration)) targets["student"] = Student.Transformer;
        targets["critic"] = Critic.Transformer;
        return targets;
    }

    public override string RoleOfLoss(string lossKey) => lossKey switch
    {
        "generator_loss" => "student",
        "fake_score_loss" => "critic",
        _ => "student+critic",
    };

    /// <summary>warp_denoising_step maps step k to the student's grid timestep of index 1000 - k (grid + final 0).</summary>
    private float[] BuildSteps()
    {
        if (!Options.WarpDenoisingStep) return Options.DmdDenoisingSteps.Select(s => (float)s).ToArray();
        var grid = Student.NoiseScheduler.TrainTimesteps;
        var ext = grid.Append(0f).ToArray();
        return Options.DmdDenoisingSteps.Select(k => ext[Student.NumTrainTimesteps - (int)k]).ToArray();
    }

    private int RandInt(int high)
    {
        using var r = randint(0, high, [1], dtype: ScalarType.Int64, device: Student.Device, generator: Generator);
        return (int)r.item<long>();
    }

    private Tensor Step(int index) => tensor(new[] { DenoisingSteps[index] }, device: Student.Device);

    public override StepResult SingleTrainStep(RawBatch batch, int iteration)
    {
        var tb = Student.PrepareBatch(batch, Generator, Options.RolloutMode == RolloutMode.Simulate ? LatentsSource.Zeros : LatentsSource.Data);
        bool update = UpdatesStudent(iteration);
        var generatorLoss = zeros([], dtype: ScalarType.Float32, device: Student.Device);
        var metrics = new Dictionary<string, Tensor> { ["update_student"] = tensor(update ? 1f : 0f) };
        if (update)
        {
            var xGen = StudentRollout(tb, withGrad: true, out var genT);
            metrics["generator_timestep"] = tensor(genT);
            generatorLoss = DmdLoss(xGen, tb, metrics);
        }
        var criticLoss = CriticLoss(tb);
        var losses = new Dictionary<string, Tensor>
        {
            ["total_loss"] = generatorLoss.detach() + criticLoss.detach(),
            ["generator_loss"] = generatorLoss,
            ["fake_score_loss"] = criticLoss,
        };
        var outputs = new Dictionary<string, object?> { [BackwardContextKey] = (update, tb.Timesteps) };
        return new StepResult(losses, outputs, metrics);
    }

    public override void Backward(StepResult result, int gradAccumRounds)
    {
        var (update, timesteps) = ((bool, Tensor))result.Outputs[BackwardContextKey]!;
        if (update) Student.Backward(result.Losses["generator_loss"], timesteps, gradAccumRounds);
        Critic.Backward(result.Losses["fake_score_loss"], timesteps, gradAccumRounds);
    }

    /// <summary>
    /// A student sample x0 [B,T,C,H,W]. Simulate: noise through the student's chain to a random step k (no grad),
    /// then the step-k prediction (with grad iff <paramref name="withGrad"/>). Data latent: one prediction from data
    /// latents noised to a random step. Unlike upstream, the simulated chain stops at k instead of always running to
    /// the end: the extra steps are discarded upstream, so this only saves compute.
    /// </summary>
    public Tensor StudentRollout(TrainingBatch tb, bool withGrad, out float chosenTimestep)
    {
        int k = DenoisingSteps.Length;
        var shape = tb.Latents.shape;
        if (Options.RolloutMode == RolloutMode.DataLatent)
        {
            int idx = RandInt(k);
            chosenTimestep = DenoisingSteps[idx];
            using var t = Step(idx);
            using var eps = randn(shape, dtype: tb.Latents.dtype, device: Student.Device, generator: Generator);
            using var xt = Student.AddNoise(tb.Latents, eps, t);
            using var gradMode = withGrad ? null : no_grad();
            return Student.PredictX0(xt, t, tb, conditional: true, Options.CfgUncond, AttnKind.Vsa);
        }

        int target = RandInt(k);
        chosenTimestep = DenoisingSteps[target];
        var x = randn(shape, dtype: tb.Latents.dtype, device: Student.Device, generator: Generator);
        using (no_grad())
        {
            for (int i = 0; i < target; i++)
            {
                using var scope = NewDisposeScope();
                var x0 = Student.PredictX0(x, Step(i), tb, conditional: true, Options.CfgUncond, AttnKind.Vsa);
                var eps = randn(shape, dtype: tb.Latents.dtype, device: Student.Device, generator: Generator);
                var next = Student.AddNoise(x0, eps, Step(i + 1)).MoveToOuterDisposeScope();
                x.Dispose();
                x = next;
            }
        }
        using var tt = Step(target);
        using (var gradMode = withGrad ? null : no_grad())
        {
            var result = Student.PredictX0(x, tt, tb, conditional: true, Options.CfgUncond, AttnKind.Vsa);
            x.Dispose();
            return result;
        }
    }

    /// <summary>Random score timestep: the student's shift_and_clamp of an integer in [0, 1000).</summary>
    private Tensor ScoreTimestep()
    {
        using var raw = randint(0, Student.NumTrainTimesteps, [1], dtype: ScalarType.Int64, device: Student.Device, generator: Generator);
        using var f = raw.to_type(ScalarType.Float32);
        return Student.ShiftAndClampTimestep(f);
    }

    /// <summary>0.5 MSE(x_gen, x_gen - g) with g = (fake - real) / mean|x_gen - real|, so d loss / d x_gen = g / numel.</summary>
    private Tensor DmdLoss(Tensor xGen, TrainingBatch tb, Dictionary<string, Tensor> metrics)
    {
        Tensor grad;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var t = ScoreTimestep();
            var eps = randn(xGen.shape, dtype: xGen.dtype, device: Student.Device, generator: Generator);
            var xt = Student.AddNoise(xGen.detach(), eps, t);
            var fake = Critic.PredictX0(xt, t, tb, conditional: true, Options.CfgUncond, AttnKind.Dense);
            var real = Teacher.PredictX0(xt, t, tb, conditional: true, Options.CfgUncond, AttnKind.Dense);
            double g = Options.RealScoreGuidanceScale;
            if (g != 1.0)
            {
                // One unconditional teacher pass only when guidance needs it.
                var realU = Teacher.PredictX0(xt, t, tb, conditional: false, Options.CfgUncond, AttnKind.Dense);
                real = realU + (real - realU) * g;
            }
            var norm = (xGen.detach() - real).abs().mean();
            grad = ((fake - real) / norm).nan_to_num().MoveToOuterDisposeScope();
            metrics["dmd_timestep"] = t.reshape(-1)[0].cpu().MoveToOuterDisposeScope();
        }
        using var target = (xGen.detach() - grad).to_type(ScalarType.Float32);
        grad.Dispose();
        return 0.5 * nn.functional.mse_loss(xGen.to_type(ScalarType.Float32), target);
    }

    /// <summary>Critic flow matching on a fresh, detached student sample: MSE(v, eps - x_gen).</summary>
    private Tensor CriticLoss(TrainingBatch tb)
    {
        Tensor xGen;
        using (no_grad()) xGen = StudentRollout(tb, withGrad: false, out _);
        using var scope = NewDisposeScope();
        var t = ScoreTimestep();
        var eps = randn(xGen.shape, dtype: xGen.dtype, device: Student.Device, generator: Generator);
        var xt = Student.AddNoise(xGen, eps, t);
        var v = Critic.PredictNoise(xt, t, tb, conditional: true, Options.CfgUncond, AttnKind.Dense);
        var loss = (v.to_type(ScalarType.Float32) - (eps - xGen).to_type(ScalarType.Float32)).pow(2).mean();
        xGen.Dispose();
        return loss.MoveToOuterDisposeScope();
    }
}

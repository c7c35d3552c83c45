using FastVideo.Sampling;
using System.ComponentModel;
using System.Globalization;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Schedulers;
using FastVideo.Train.Models;
using FastVideo.Train.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.DistributionMatching;

/// <summary>How the student's training samples are produced.</summary>
public enum RolloutMode
{
    /// <summary>From pure noise through the student's own few-step chain (no data latents needed).</summary>
    [Aliases("sim")]
    Simulate,
    /// <summary>One student step from data latents noised to a randomly chosen denoising step.</summary>
    [Aliases("data", "vae_latent")]
    DataLatent,
}

/// <summary>The <c>method:</c> options of DMD2, bound and checked when the recipe is loaded (Self-Forcing's extend them).</summary>
public record DMD2Options : MethodOptions, ICheckedOptions
{
    [Description("how the student's samples are made: from noise through its own chain (simulate) or from noised data latents (data_latent)")]
    public required RolloutMode RolloutMode { get; init; }

    [Description("update the student every N steps (the critic learns every step); 0 = every step")]
    public int GeneratorUpdateInterval { get; init; } = 1;

    [CommaSeparated]
    [Description("the student's denoising timesteps, each an integer in 1..1000, e.g. [1000, 750, 500, 250]")]
    public required IReadOnlyList<int> DmdDenoisingSteps { get; init; }

    [Description("map step k to the student scheduler's grid timestep of index 1000 - k")]
    public bool WarpDenoisingStep { get; init; }

    [Description("classifier-free guidance of the teacher's (real) score; 1 = the conditional teacher alone")]
    public double RealScoreGuidanceScale { get; init; } = 1.0;

    [Description("the critic's (fake score's) learning rate, > 0")]
    public required double FakeScoreLearningRate { get; init; }

    [CommaSeparated]
    [Description("the critic's AdamW betas, two numbers in [0, 1), e.g. [0.0, 0.999]")]
    public required IReadOnlyList<double> FakeScoreBetas { get; init; }

    [Description("the critic's LR schedule (as training.optimizer.lr_scheduler)")]
    public required string FakeScoreLrScheduler { get; init; }

    [Description("lower bound of the teacher's and critic's random score timestep, as a fraction of the 1000 training timesteps (applied after the shift), in [0, max_timestep_ratio]")]
    public double MinTimestepRatio { get; init; }

    [Description("upper bound of the random score timestep, as a fraction of the 1000 training timesteps, in [min_timestep_ratio, 1]")]
    public double MaxTimestepRatio { get; init; } = 1.0;

    [Description("what the unconditional branch sees per channel: {text: negative_prompt|keep|zero|drop, on_missing: error|ignore, <channel>: keep|zero|drop}; null = negative_prompt")]
    public IReadOnlyDictionary<string, object?>? CfgUncond { get; init; }

    public virtual IEnumerable<OptionProblem> Check()
    {
        if (DmdDenoisingSteps.Count == 0)
            yield return new("dmd_denoising_steps", "must list at least one timestep, e.g. [1000, 750, 500, 250]");
        for (int i = 0; i < DmdDenoisingSteps.Count; i++)
            if (DmdDenoisingSteps[i] is < 1 or > 1000)
                yield return new($"dmd_denoising_steps[{i}]", $"each step must be an integer in 1..1000, got {DmdDenoisingSteps[i]}");
        if (!(FakeScoreLearningRate > 0))
            yield return new("fake_score_learning_rate", $"must be > 0, got {FakeScoreLearningRate.ToString(CultureInfo.InvariantCulture)}");
        if (FakeScoreBetas.Count != 2 || FakeScoreBetas.Any(b => !(b is >= 0 and < 1)))
            yield return new("fake_score_betas", "expected two numbers in [0, 1), e.g. [0.0, 0.999]");
        if (!RecipeLoader.LrSchedulers.Contains(FakeScoreLrScheduler))
            yield return new("fake_score_lr_scheduler",
                $"invalid value \"{FakeScoreLrScheduler}\" (expected one of: {string.Join(", ", RecipeLoader.LrSchedulers)})");
        if (CfgUncondPolicy.Problem(CfgUncond) is { } problem)
            yield return new($"cfg_uncond.{problem.Key}", problem.Detail);
        if (!(MinTimestepRatio >= 0 && MinTimestepRatio <= MaxTimestepRatio && MaxTimestepRatio <= 1))
            yield return new(MinTimestepRatio is >= 0 and <= 1 ? "max_timestep_ratio" : "min_timestep_ratio",
                $"must satisfy 0 <= min_timestep_ratio <= max_timestep_ratio <= 1, got min {MinTimestepRatio.ToString(CultureInfo.InvariantCulture)}, max {MaxTimestepRatio.ToString(CultureInfo.InvariantCulture)}");
    }
}

/// <summary>
/// DMD2 distribution-matching distillation (spec 6.3). The student is a few-step generator; a frozen teacher gives
/// the real score and a trainable critic (fake score) tracks the student's distribution. The student's gradient is
/// (fake x0 - real x0) normalised by mean |x_gen - real x0|; the critic learns flow matching on student samples.
/// <para>Self-Forcing derives from it: its own student rollout, and one scheduler (<see cref="ScoreScheduler"/>) for
/// every forward process and x0 conversion of the losses instead of each model's own.</para>
/// </summary>
public class DMD2Method : TrainingMethod
{
    public static MethodDescriptor Descriptor { get; } = MethodDescriptor.Of<DMD2Options>("dmd2",
        "DMD2 distribution-matching distillation: a few-step student, a frozen teacher (real score) and a trainable critic (fake score)",
        CheckRoles, (cfg, options, roles) => new DMD2Method(cfg, options, roles)) with
    {
        DataParallelDraws = true,
        ClassPaths = ["fastvideo.train.methods.distribution_matching.dmd2.DMD2Method",
            "fastvideo.train.methods.distribution_matching.DMD2Method", "fastvideo.train.methods.DMD2Method"],
    };

    public static void CheckRoles(RunConfig config) => CheckRoles(config, "dmd2");

    public static void CheckRoles(RunConfig config, string method)
    {
        MethodRegistry.RequireRole(config, method, "student", trainable: true);
        MethodRegistry.RequireRole(config, method, "teacher", trainable: false);
        MethodRegistry.RequireRole(config, method, "critic", trainable: true);
        if (!(config.Training.Optimizer.LearningRate > 0))
            throw new UserError($"training.optimizer.learning_rate: {method} needs a student learning rate > 0, got {config.Training.Optimizer.LearningRate}");
    }

    private readonly RoleOptimizer _studentOpt, _criticOpt;

    /// <param name="options">Bound and checked by the recipe loader (or <see cref="RecipeLoader.BindOptions{T}"/>).</param>
    public DMD2Method(RunConfig config, DMD2Options options, IReadOnlyDictionary<string, ModelBase> roles) : this(config, options, roles, "dmd2", null) { }

    /// <param name="name">The method's name, for errors.</param>
    /// <param name="scoreScheduler">One scheduler for all forward processes and x0 conversions of the rollout and the
    /// losses (Self-Forcing's); null = each model's own, as DMD2 does.</param>
    protected DMD2Method(RunConfig config, DMD2Options options, IReadOnlyDictionary<string, ModelBase> roles, string name,
        INoiseScheduler? scoreScheduler) : base(config, options, roles)
    {
        CheckRoles(config, name);
        Options = options;
        ScoreScheduler = scoreScheduler;
        CfgUncond = options.CfgUncond is null ? null : CfgUncondPolicy.Parse(options.CfgUncond);
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
    /// <summary>The scheduler of every forward process and x0 conversion, or null for each model's own.</summary>
    protected INoiseScheduler? ScoreScheduler { get; }
    /// <summary><see cref="DMD2Options.CfgUncond"/> as a policy; null = the models' default.</summary>
    public CfgUncondPolicy? CfgUncond { get; }
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

    /// <summary>warp_denoising_step maps step k to the (score scheduler's, else student's) grid timestep of index 1000 - k (grid + final 0).</summary>
    private float[] BuildSteps()
    {
        if (!Options.WarpDenoisingStep) return Options.DmdDenoisingSteps.Select(s => (float)s).ToArray();
        var grid = (ScoreScheduler ?? Student.NoiseScheduler).TrainTimesteps;
        var ext = grid.Append(0f).ToArray();
        return Options.DmdDenoisingSteps.Select(k => ext[Student.NumTrainTimesteps - k]).ToArray();
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
        return StepOf(update, tb, generatorLoss, criticLoss, metrics);
    }

    /// <summary>A step's result: both losses and their total, and what <see cref="Backward"/> needs.</summary>
    protected static StepResult StepOf(bool update, TrainingBatch tb, Tensor generatorLoss, Tensor criticLoss, Dictionary<string, Tensor> metrics)
    {
        var losses = new Dictionary<string, Tensor>
        {
            ["total_loss"] = generatorLoss.detach() + criticLoss.detach(),
            ["generator_loss"] = generatorLoss,
            ["fake_score_loss"] = criticLoss,
        };
        return new StepResult(losses, new Dictionary<string, object?> { [BackwardContextKey] = (update, tb.Timesteps) }, metrics);
    }

    public override void Backward(StepResult result, int gradAccumRounds)
    {
        var (update, timesteps) = ((bool, Tensor))result.Outputs[BackwardContextKey]!;
        if (update) Student.Backward(result.Losses["generator_loss"], timesteps, gradAccumRounds);
        Critic.Backward(result.Losses["fake_score_loss"], timesteps, gradAccumRounds);
    }

    /// <summary>
    /// A student sample x0 [B,T,C,H,W]. Simulate: noise through the student's few-step chain
    /// (<see cref="ModelSampling.FewStep(ModelBase, TrainingBatch, Tensor, IReadOnlyList{double}, NoiseDraw, double, CfgUncondPolicy?, bool, AttnKind, SamplingProgress?)"/>)
    /// to a random step k, without grad but for the step-k prediction (with grad iff <paramref name="withGrad"/>). Data latent: one prediction from data
    /// latents noised to a random step. Unlike upstream, the simulated chain stops at k instead of always running to
    /// the end: the extra steps are discarded upstream, so this only saves compute.
    /// </summary>
    public virtual Tensor StudentRollout(TrainingBatch tb, bool withGrad, out float chosenTimestep)
    {
        int k = DenoisingSteps.Length;
        var shape = tb.Latents.shape;
        if (Options.RolloutMode == RolloutMode.DataLatent)
        {
            int idx = RandInt(k);
            chosenTimestep = DenoisingSteps[idx];
            using var t = Step(idx);
            using var eps = PerSampleNoise(shape, tb.Latents.dtype, Student.Device);
            using var xt = Student.AddNoise(tb.Latents, eps, t);
            using var noGrad = withGrad ? null : no_grad();
            return Student.PredictX0(xt, t, tb, conditional: true, CfgUncond, AttnKind.Vsa);
        }

        int target = RandInt(k);
        chosenTimestep = DenoisingSteps[target];
        // The student's few-step chain through the shared sampler, stopped at step `target`: every draw from the
        // method's generator, in the latents' dtype on the student's device; autograd only on the last prediction.
        NoiseDraw draw = like => PerSampleNoise(like.shape, like.dtype, Student.Device);
        using var x = draw(tb.Latents);
        var timesteps = DenoisingSteps.Take(target + 1).Select(t => (double)t).ToList();
        using var chainNoGrad = withGrad ? null : no_grad();
        return ModelSampling.FewStep(Student, tb, x, timesteps, draw, cfgUncond: CfgUncond, gradOnLastStep: withGrad, attnKind: AttnKind.Vsa);
    }

    /// <summary>
    /// Random score timesteps [<paramref name="count"/>]: the student's shift_and_clamp of integers in [0, 1000),
    /// clamped to [min, max]_timestep_ratio x 1000. DMD2 draws one and truncates the bounds to integers, as upstream;
    /// streaming long tuning draws one per sample and rounds them, as FastVideo's method does.
    /// </summary>
    internal Tensor ScoreTimestep(long count = 1, bool roundBounds = false)
    {
        using var raw = randint(0, Student.NumTrainTimesteps, [count], dtype: ScalarType.Int64, device: Student.Device, generator: Generator);
        using var f = raw.to_type(ScalarType.Float32);
        var t = Student.ShiftAndClampTimestep(f);
        if (Options.MinTimestepRatio == 0 && Options.MaxTimestepRatio == 1) return t;
        double Bound(double ratio) => roundBounds ? Math.Round(ratio * Student.NumTrainTimesteps) : (int)(ratio * Student.NumTrainTimesteps);
        using (t)
            return t.clamp(Bound(Options.MinTimestepRatio), Bound(Options.MaxTimestepRatio));
    }

    /// <summary>0.5 MSE(x_gen, x_gen - g) with g = (fake - real) / mean|x_gen - real|, so d loss / d x_gen = g / numel.
    /// Internal for the test that checks it against the formula.</summary>
    internal Tensor DmdLoss(Tensor xGen, TrainingBatch tb, Dictionary<string, Tensor> metrics)
    {
        Tensor grad;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var t = ScoreTimestep();
            var eps = PerSampleNoise(xGen.shape, xGen.dtype, Student.Device);
            var xt = AddScoreNoise(xGen.detach(), eps, t);
            var fake = ScoreX0(Critic, xt, t, tb, conditional: true);
            // One unconditional teacher pass only when guidance needs it.
            var real = Guidance.Guide(Options.RealScoreGuidanceScale, c => ScoreX0(Teacher, xt, t, tb, conditional: c));
            var norm = (xGen.detach() - real).abs().mean();
            grad = ((fake - real) / norm).nan_to_num().MoveToOuterDisposeScope();
            metrics["dmd_timestep"] = t.reshape(-1)[0].cpu().MoveToOuterDisposeScope();
        }
        using var target = (xGen.detach() - grad).to_type(ScalarType.Float32);
        grad.Dispose();
        return 0.5 * nn.functional.mse_loss(xGen.to_type(ScalarType.Float32), target);
    }

    /// <summary>The forward process of the losses: the student's, or <see cref="ScoreScheduler"/>'s.</summary>
    protected Tensor AddScoreNoise(Tensor x0, Tensor eps, Tensor t) =>
        ScoreScheduler is null ? Student.AddNoise(x0, eps, t) : ModelBase.AddNoise(x0, eps, t, ScoreScheduler);

    /// <summary>A role's x0 (dense attention): its own conversion, or through <see cref="ScoreScheduler"/>.</summary>
    protected Tensor ScoreX0(ModelBase model, Tensor xt, Tensor t, TrainingBatch tb, bool conditional)
    {
        if (ScoreScheduler is null) return model.PredictX0(xt, t, tb, conditional, CfgUncond, AttnKind.Dense);
        using var scope = NewDisposeScope();
        var v = model.PredictNoise(xt, t, tb, conditional, CfgUncond, AttnKind.Dense);
        return ModelBase.NoiseToX0(v, xt, t, ScoreScheduler).MoveToOuterDisposeScope();
    }

    /// <summary>Critic flow matching on a fresh, detached student sample: MSE(v, eps - x_gen).</summary>
    private Tensor CriticLoss(TrainingBatch tb)
    {
        Tensor xGen;
        using (no_grad()) xGen = StudentRollout(tb, withGrad: false, out _);
        using var scope = NewDisposeScope();
        var t = ScoreTimestep();
        var eps = PerSampleNoise(xGen.shape, xGen.dtype, Student.Device);
        var xt = AddScoreNoise(xGen, eps, t);
        var v = Critic.PredictNoise(xt, t, tb, conditional: true, CfgUncond, AttnKind.Dense);
        var loss = (v.to_type(ScalarType.Float32) - (eps - xGen).to_type(ScalarType.Float32)).pow(2).mean();
        xGen.Dispose();
        return loss.MoveToOuterDisposeScope();
    }
}

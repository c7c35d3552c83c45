using System.ComponentModel;
using System.Globalization;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Schedulers;
using FastVideo.Train.Models;
using FastVideo.Train.Optim;
using FastVideo.Train.State;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.ConsistencyModel;

/// <summary>The <c>method:</c> options of causal_cd.</summary>
public sealed record CausalCDOptions : MethodOptions, ICheckedOptions
{
    [RecipeKey("discrete_cd_N")]
    [Description("points of the discrete consistency grid (the Self-Forcing ODE grid at pipeline.flow_shift), >= 2")]
    public int DiscreteCdN { get; init; } = 48;

    [Description("classifier-free guidance of the teacher's one Euler step")]
    public double GuidanceScale { get; init; } = 3.0;

    [Description("decay of the EMA copy of the student that gives the consistency target, in [0, 1]")]
    public double EmaDecay { get; init; } = 0.99;

    [Description("first step after which the EMA role follows the student (before it, it stays as loaded)")]
    public int EmaStartStep { get; init; } = 200;

    [Description("what the teacher's unconditional branch sees per channel (as dmd2's); null = the negative prompt, as FastVideo")]
    public IReadOnlyDictionary<string, object?>? CfgUncond { get; init; }

    public IEnumerable<OptionProblem> Check()
    {
        if (DiscreteCdN < 2) yield return new("discrete_cd_N", $"must be >= 2, got {DiscreteCdN}");
        if (!(EmaDecay is >= 0 and <= 1)) yield return new("ema_decay", $"must be in [0, 1], got {EmaDecay.ToString(CultureInfo.InvariantCulture)}");
        if (EmaStartStep < 0) yield return new("ema_start_step", $"must be >= 0, got {EmaStartStep}");
        if (CfgUncondPolicy.Problem(CfgUncond) is { } problem) yield return new($"cfg_uncond.{problem.Key}", problem.Detail);
    }
}

/// <summary>
/// Causal consistency distillation (FastVideo's CausalConsistencyDistillationMethod, main at 2f3d4074): no ODE data.
/// Data latents are noised to a point t of an N-point grid; a frozen teacher takes one guided Euler step to the next
/// point t'; the student's x0 at t is regressed onto an EMA copy of itself at t'. All three roles run with clean-history
/// teacher forcing (each block sees the clean frames of the earlier blocks). The EMA role follows the student after
/// every optimizer step from <c>ema_start_step</c> on, and is checkpointed with the training state.
/// </summary>
public sealed class CausalConsistencyDistillationMethod : TrainingMethod
{
    public static MethodDescriptor Descriptor { get; } = MethodDescriptor.Of<CausalCDOptions>("causal_cd",
        "causal consistency distillation: the student's x0 at t matched to an EMA copy of itself after one guided teacher Euler step, under clean-history teacher forcing (roles: causal student, frozen causal teacher, frozen causal ema)",
        CheckRoles, (cfg, options, roles) => new CausalConsistencyDistillationMethod(cfg, options, roles)) with
    {
        DataParallelDraws = true,
        ClassPaths = ["fastvideo.train.methods.consistency_model.causal_cd.CausalConsistencyDistillationMethod",
            "fastvideo.train.methods.consistency_model.CausalConsistencyDistillationMethod", "fastvideo.train.methods.CausalConsistencyDistillationMethod"],
    };

    public static void CheckRoles(RunConfig config)
    {
        MethodRegistry.RequireRole(config, "causal_cd", "student", trainable: true);
        MethodRegistry.RequireRole(config, "causal_cd", "teacher", trainable: false);
        MethodRegistry.RequireRole(config, "causal_cd", "ema", trainable: false);
        if (!(config.Training.Optimizer.LearningRate > 0))
            throw new UserError($"training.optimizer.learning_rate: causal_cd needs a student learning rate > 0, got {config.Training.Optimizer.LearningRate}");
    }

    private readonly RoleOptimizer _opt;

    public CausalConsistencyDistillationMethod(RunConfig config, CausalCDOptions options, IReadOnlyDictionary<string, ModelBase> roles)
        : base(config, options, roles)
    {
        Options = options;
        Teacher = roles["teacher"];
        Ema = roles["ema"];
        CausalStudent = AsCausal(Student, "student");
        CausalTeacher = AsCausal(Teacher, "teacher");
        CausalEma = AsCausal(Ema, "ema");
        var s = Student.Transformer.named_parameters().Select(p => (p.name, p.parameter.shape)).ToList();
        var e = Ema.Transformer.named_parameters().Select(p => (p.name, p.parameter.shape)).ToList();
        if (s.Count != e.Count || s.Zip(e).Any(x => x.First.name != x.Second.name || !x.First.shape.SequenceEqual(x.Second.shape)))
            throw new UserError("roles.ema: causal_cd keeps the ema role as a copy of the student, so it needs the student's architecture " +
                                "(initialise both from the same checkpoint)");
        Student.InitPreprocessors();
        // FastVideo: pipeline.flow_shift, or 5 when it is unset or 0.
        FlowShift = Config.Pipeline.FlowShift is > 0 and var shift ? shift : 5.0;
        Grid = SelfForcingFlowMatchScheduler.OdeGrid(options.DiscreteCdN, FlowShift, Student.NumTrainTimesteps);
        AttnKind = Training.Vsa.Sparsity > 0 ? AttnKind.Vsa : AttnKind.Dense;
        CfgUncond = options.CfgUncond is null ? null : CfgUncondPolicy.Parse(options.CfgUncond);
        _opt = CreateOptimizer(Student);
    }

    private static ICausalModel AsCausal(ModelBase model, string role) => model as ICausalModel ?? throw new UserError(
        $"roles.{role}: causal_cd runs the {role} with clean-history teacher forcing, which needs a causal family (wan_causal), got {model.Context.Family.Name}");

    public CausalCDOptions Options { get; }
    public ModelBase Teacher { get; }
    public ModelBase Ema { get; }
    private ICausalModel CausalStudent { get; }
    private ICausalModel CausalTeacher { get; }
    private ICausalModel CausalEma { get; }
    public double FlowShift { get; }
    /// <summary>The N-point consistency grid (sigma_min 0, extra_one_step): point i has TrainTimesteps[i], TrainSigmas[i].</summary>
    public SelfForcingFlowMatchScheduler Grid { get; }
    public AttnKind AttnKind { get; }
    /// <summary><see cref="CausalCDOptions.CfgUncond"/> as a policy; null = the negative prompt.</summary>
    public CfgUncondPolicy? CfgUncond { get; }

    public override IReadOnlyDictionary<string, RoleOptimizer> Optimizers => new Dictionary<string, RoleOptimizer> { ["student"] = _opt };

    /// <summary>
    /// Draws in order: prepare_batch's (noise, timesteps; unused), the grid index i in [0, N-1), the noise. Then
    /// x_t = (1-σ_i) x + σ_i ε; x_t' = x_t - (t_i - t_i+1)/1000 · v_guided(x_t, t_i); loss = MSE(x_t - σ_i v_student(x_t, t_i),
    /// x_t' - σ_i+1 v_ema(x_t', t_i+1)), every prediction with the clean clip as history.
    /// </summary>
    public override StepResult SingleTrainStep(RawBatch batch, int iteration)
    {
        var tb = Student.PrepareBatch(batch, Generator, LatentsSource.Data);
        var x = tb.Latents;
        long b = x.shape[0], frames = x.shape[1];
        int i;
        using (var draw = randint(0, Options.DiscreteCdN - 1, [1], dtype: ScalarType.Int64, device: Student.Device, generator: Generator))
            i = (int)draw.item<long>();
        float t = Grid.TrainTimesteps[i], tNext = Grid.TrainTimesteps[i + 1];
        double sigma = Grid.TrainSigmas[i], sigmaNext = Grid.TrainSigmas[i + 1];
        var tPerFrame = full([b, frames], t, dtype: ScalarType.Float32, device: Student.Device);
        Tensor x0Target, xt;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var noise = PerSampleNoise(x.shape, x.dtype, Student.Device);
            xt = ((1.0 - sigma) * x + sigma * noise).MoveToOuterDisposeScope();
            var v = FastVideo.Sampling.Guidance.Guide(Options.GuidanceScale,
                c => CausalTeacher.PredictNoiseTeacherForcing(xt, tPerFrame, tb, x, conditional: c, cfgUncond: CfgUncond, attnKind: AttnKind));
            var xNext = xt - (t - tNext) / Student.NumTrainTimesteps * v;
            var tNextPerFrame = full([b, frames], tNext, dtype: ScalarType.Float32, device: Student.Device);
            x0Target = (xNext - sigmaNext * CausalEma.PredictNoiseTeacherForcing(xNext, tNextPerFrame, tb, x, conditional: true, attnKind: AttnKind))
                .to_type(ScalarType.Float32).MoveToOuterDisposeScope();
        }
        using var flow = CausalStudent.PredictNoiseTeacherForcing(xt, tPerFrame, tb, x, conditional: true, attnKind: AttnKind);
        using var x0 = (xt - sigma * flow).to_type(ScalarType.Float32);
        var loss = nn.functional.mse_loss(x0, x0Target);
        x0Target.Dispose();
        xt.Dispose();
        var losses = new Dictionary<string, Tensor> { ["total_loss"] = loss, ["causal_cd_loss"] = loss.alias() };
        var metrics = new Dictionary<string, Tensor> { ["cd_step_idx"] = tensor((float)i) };
        return new StepResult(losses, new Dictionary<string, object?> { [BackwardContextKey] = tPerFrame }, metrics);
    }

    /// <summary>Then, from ema_start_step on, ema = decay · ema + (1 - decay) · student, parameter by parameter.</summary>
    public override void OptimizersSchedulersStep(int iteration)
    {
        base.OptimizersSchedulersStep(iteration);
        if (iteration < Options.EmaStartStep) return;
        using var _ = no_grad();
        foreach (var (e, s) in Ema.Transformer.parameters().Zip(Student.Transformer.parameters()))
        {
            e.mul_(Options.EmaDecay);
            using var sv = s.detach().to_type(e.dtype);
            e.add_(sv, alpha: 1.0 - Options.EmaDecay);
        }
    }

    /// <summary>The EMA role is frozen but changes every step: its weights are part of the training state.</summary>
    public override void SaveState(StateScope s)
    {
        base.SaveState(s);
        foreach (var (name, p) in Ema.Transformer.named_parameters()) s.Scope("ema").PutTensor(name, p);
    }

    public override void LoadState(StateScope s)
    {
        base.LoadState(s);
        using var _ = no_grad();
        foreach (var (name, p) in Ema.Transformer.named_parameters()) p.copy_(s.Scope("ema").GetTensor(name, p.shape));
    }
}

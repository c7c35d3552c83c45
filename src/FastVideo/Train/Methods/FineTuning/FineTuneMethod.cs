using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Train.Models;
using FastVideo.Train.Optim;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.FineTuning;

/// <summary>The <c>method:</c> options of finetune: only the common ones (<c>lr_step_rules</c>); the loss is shaped by
/// <c>training.model</c> (weighting_scheme, precondition_outputs) and <c>training.vsa.sparsity</c>.</summary>
public sealed record FineTuneOptions : MethodOptions;

/// <summary>
/// Flow-matching supervised finetuning (spec 6.2): the student predicts v = ε − x0 at a sampled timestep; the loss
/// is MSE in float32 on v, or on x0 = x_t − σ·v with <c>training.model.precondition_outputs</c>.
/// </summary>
public sealed class FineTuneMethod : TrainingMethod
{
    public static MethodDescriptor Descriptor { get; } = MethodDescriptor.Of<FineTuneOptions>("finetune",
        "flow-matching supervised finetuning of the student (v = noise - x0; x0-space with training.model.precondition_outputs)",
        CheckRoles, (cfg, options, roles) => new FineTuneMethod(cfg, options, roles)) with
    {
        DataParallelDraws = true,
        ClassPaths = ["fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod",
            "fastvideo.train.methods.fine_tuning.FineTuneMethod", "fastvideo.train.methods.FineTuneMethod"],
    };

    private readonly RoleOptimizer _student;

    public static void CheckRoles(RunConfig config)
    {
        MethodRegistry.RequireRole(config, "finetune", "student", trainable: true);
        if (!(config.Training.Optimizer.LearningRate > 0))
            throw new UserError($"training.optimizer.learning_rate: finetune needs a learning rate > 0, got {config.Training.Optimizer.LearningRate}");
    }

    public FineTuneMethod(RunConfig config, FineTuneOptions options, IReadOnlyDictionary<string, ModelBase> roles) : base(config, options, roles)
    {
        CheckRoles(config);
        AttnKind = Training.Vsa.Sparsity > 0 ? AttnKind.Vsa : AttnKind.Dense;
        Student.InitPreprocessors();
        _student = CreateOptimizer(Student);
    }

    public AttnKind AttnKind { get; }

    public override IReadOnlyDictionary<string, RoleOptimizer> Optimizers => new Dictionary<string, RoleOptimizer> { ["student"] = _student };

    public override StepResult SingleTrainStep(RawBatch batch, int iteration)
    {
        var tb = Student.PrepareBatch(batch, Generator, LatentsSource.Data);
        var x0 = tb.Latents;                                   // [B,T,C,H,W]
        var xt = tb.NoisyModelInput.permute(0, 2, 1, 3, 4);    // [B,C,T,H,W] -> [B,T,C,H,W]
        var eps = tb.Noise.permute(0, 2, 1, 3, 4);
        var v = Student.PredictNoise(xt, tb.Timesteps, tb, conditional: true, attnKind: AttnKind);

        var (pred, target) = LossPair(v, xt, x0, eps, tb.Sigmas, Training.Model.PreconditionOutputs);
        var loss = nn.functional.mse_loss(pred, target);

        var losses = new Dictionary<string, Tensor> { ["total_loss"] = loss, ["finetune_loss"] = loss };
        var outputs = new Dictionary<string, object?> { [BackwardContextKey] = tb.Timesteps };
        return new StepResult(losses, outputs, new Dictionary<string, Tensor>());
    }

    /// <summary>
    /// What flow-matching SFT compares, in float32 whatever the master dtype (as upstream): (x_t - v·sigma, x0) with
    /// <paramref name="precondition"/>, else (v, eps - x0). Sigma broadcasts: [B,1,1,1,1] or per frame [B,T,1,1,1].
    /// </summary>
    public static (Tensor Prediction, Tensor Target) LossPair(Tensor v, Tensor xt, Tensor x0, Tensor eps, Tensor sigma, bool precondition) =>
        precondition
            ? ((xt - v * sigma).to(ScalarType.Float32), x0.to(ScalarType.Float32))
            : (v.to(ScalarType.Float32), (eps - x0).to(ScalarType.Float32));
}

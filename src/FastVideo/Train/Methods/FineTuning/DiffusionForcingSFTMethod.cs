using System.ComponentModel;
using System.Globalization;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Train.Models;
using FastVideo.Train.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.FineTuning;

/// <summary>How DFSFT weighs each frame's loss by its timestep.</summary>
public enum TimestepLossWeighting
{
    /// <summary>Every frame alike (FastVideo 9a8bbe18f, the spec).</summary>
    None,
    /// <summary>FastVideo HEAD's weight over grid indices i: exp(-2((i - n/2)/n)^2), shifted to min 0, mean 1.</summary>
    Gaussian,
}

/// <summary>The <c>method:</c> options of dfsft and tfsft (spec 6.5).</summary>
public sealed record DiffusionForcingSFTOptions : MethodOptions, ICheckedOptions
{
    [Description("frames that share one noise level: the student's num_frames_per_block (1 = frame-wise)")]
    public int ChunkSize { get; init; } = 3;

    [Description("sampled grid indices start at this ratio of the student's 1000-step grid (index 0 = pure noise), in [0, 1]")]
    public double MinTimestepRatio { get; init; }

    [Description("sampled grid indices end at this ratio of the grid, in [0, 1] and >= min_timestep_ratio")]
    public double MaxTimestepRatio { get; init; } = 1.0;

    [Description("per-frame loss weight by timestep: none (the spec) or gaussian (FastVideo HEAD: mid-noise frames weigh most)")]
    public TimestepLossWeighting LossWeighting { get; init; } = TimestepLossWeighting.None;

    public IEnumerable<OptionProblem> Check()
    {
        if (ChunkSize < 1) yield return new("chunk_size", $"must be > 0, got {ChunkSize}");
        foreach (var (key, value) in new[] { ("min_timestep_ratio", MinTimestepRatio), ("max_timestep_ratio", MaxTimestepRatio) })
            if (!(value is >= 0 and <= 1)) yield return new(key, $"must be in [0, 1], got {value.ToString(CultureInfo.InvariantCulture)}");
        if (MaxTimestepRatio < MinTimestepRatio)
            yield return new("max_timestep_ratio", $"({MaxTimestepRatio.ToString(CultureInfo.InvariantCulture)}) must be >= min_timestep_ratio ({MinTimestepRatio.ToString(CultureInfo.InvariantCulture)})");
    }
}

/// <summary>
/// Diffusion-forcing SFT (spec 6.5): flow matching of a causal student with inhomogeneous timesteps, one grid index per
/// chunk of <c>chunk_size</c> frames drawn from the method's generator, through the block-causal training forward. The
/// loss is <see cref="FineTuneMethod"/>'s (on v, or on x0 with <c>training.model.precondition_outputs</c>) with
/// per-frame sigmas.
/// </summary>
public class DiffusionForcingSFTMethod : TrainingMethod
{
    public static MethodDescriptor Descriptor { get; } = MethodDescriptor.Of<DiffusionForcingSFTOptions>("dfsft",
        "diffusion-forcing SFT of a causal student: flow matching with one random noise level per chunk of frames (chunk_size 1 = frame-wise)",
        cfg => CheckRoles(cfg, "dfsft"), (cfg, options, roles) => new DiffusionForcingSFTMethod(cfg, options, roles)) with
    {
        ClassPaths = ["fastvideo.train.methods.fine_tuning.dfsft.DiffusionForcingSFTMethod",
            "fastvideo.train.methods.fine_tuning.DiffusionForcingSFTMethod", "fastvideo.train.methods.DiffusionForcingSFTMethod"],
    };

    private readonly RoleOptimizer _student;
    private readonly long _low, _high;   // grid indices sampled in [low, high)

    public static void CheckRoles(RunConfig config, string method)
    {
        MethodRegistry.RequireRole(config, method, "student", trainable: true);
        if (!(config.Training.Optimizer.LearningRate > 0))
            throw new UserError($"training.optimizer.learning_rate: {method} needs a learning rate > 0, got {config.Training.Optimizer.LearningRate}");
    }

    public DiffusionForcingSFTMethod(RunConfig config, DiffusionForcingSFTOptions options, IReadOnlyDictionary<string, ModelBase> roles)
        : this(config, options, roles, "dfsft") { }

    protected DiffusionForcingSFTMethod(RunConfig config, DiffusionForcingSFTOptions options, IReadOnlyDictionary<string, ModelBase> roles, string name)
        : base(config, options, roles)
    {
        CheckRoles(config, name);
        Options = options;
        Causal = Student as ICausalModel ?? throw new UserError(
            $"roles.student: {name} trains a causal student (one timestep per frame), got the {Student.Context.Family.Name} family (use wan_causal)");
        // Upstream checks this at the first step; here before training starts.
        if (Causal.NumFramesPerBlock != options.ChunkSize)
            throw new UserError($"method.chunk_size: ({options.ChunkSize}) must equal the student's num_frames_per_block ({Causal.NumFramesPerBlock}), " +
                                "the blocks its causal attention uses");
        AttnKind = Training.Vsa.Sparsity > 0 ? AttnKind.Vsa : AttnKind.Dense;
        (_low, _high) = IndexRange(options, Student.NumTrainTimesteps);
        Student.InitPreprocessors();
        _student = CreateOptimizer(Student);
    }

    public DiffusionForcingSFTOptions Options { get; }
    public ICausalModel Causal { get; }
    public AttnKind AttnKind { get; }

    public override IReadOnlyDictionary<string, RoleOptimizer> Optimizers => new Dictionary<string, RoleOptimizer> { ["student"] = _student };

    /// <summary>Upstream's index range [lo, hi + 1): lo = int(min·N), hi = int(max·N), both clamped to [0, N-1], hi &gt; lo.</summary>
    public static (long Low, long High) IndexRange(DiffusionForcingSFTOptions options, int numTrainTimesteps)
    {
        int n = numTrainTimesteps;
        long lo = Math.Clamp((long)(options.MinTimestepRatio * n), 0, n - 1);
        long hi = Math.Clamp((long)(options.MaxTimestepRatio * n), 0, n - 1);
        if (hi <= lo) hi = Math.Min(n - 1, lo + 1);
        return (lo, hi + 1);
    }

    /// <summary>Grid indices [B,T]: one draw per chunk of chunk_size frames, repeated over its frames.</summary>
    public Tensor SampleIndices(long batch, long frames)
    {
        using var scope = NewDisposeScope();
        long c = Options.ChunkSize;
        var chunks = randint(_low, _high, [batch, (frames + c - 1) / c], dtype: ScalarType.Int64, device: Student.Device, generator: Generator);
        return chunks.repeat_interleave(c, 1).narrow(1, 0, frames).MoveToOuterDisposeScope();
    }

    public override StepResult SingleTrainStep(RawBatch batch, int iteration)
    {
        var tb = Student.PrepareBatch(batch, Generator, LatentsSource.Data);
        var x0 = tb.Latents;                                 // [B,T,C,H,W]
        long b = x0.shape[0], frames = x0.shape[1];
        var idx = SampleIndices(b, frames);                  // [B,T]
        var scheduler = Student.NoiseScheduler;
        var t = tensor(scheduler.TrainTimesteps, device: Student.Device).index_select(0, idx.reshape(-1)).reshape(b, frames);
        tb.Timesteps.Dispose();
        tb.Timesteps = t;                                    // per frame, for the backward context
        var eps = tb.Noise.permute(0, 2, 1, 3, 4).to_type(x0.dtype);   // BCTHW -> BTCHW
        var xt = Student.AddNoise(x0, eps, t.reshape(-1));
        var v = Predict(xt, t, tb, x0);
        var sigma = tensor(scheduler.TrainSigmas, device: Student.Device).index_select(0, idx.reshape(-1)).reshape(b, frames, 1, 1, 1).to_type(x0.dtype);
        var (pred, target) = FineTuneMethod.LossPair(v, xt, x0, eps, sigma, Training.Model.PreconditionOutputs);
        Tensor loss;
        if (Options.LossWeighting == TimestepLossWeighting.None) loss = nn.functional.mse_loss(pred, target);
        else
        {
            var perFrame = (pred - target).pow(2).mean([2, 3, 4]);   // [B,T]
            loss = (perFrame * GaussianWeights(scheduler.TrainTimesteps.Length, Student.Device).index_select(0, idx.reshape(-1)).reshape(b, frames)).mean();
        }
        var losses = new Dictionary<string, Tensor> { ["total_loss"] = loss, ["dfsft_loss"] = loss };
        var outputs = new Dictionary<string, object?> { [BackwardContextKey] = tb.Timesteps };
        return new StepResult(losses, outputs, new Dictionary<string, Tensor>());
    }

    /// <summary>The student's v for noisy latents <paramref name="xt"/>: the block-causal training forward (teacher
    /// forcing overrides it to see the clean <paramref name="x0"/> as context).</summary>
    protected virtual Tensor Predict(Tensor xt, Tensor t, TrainingBatch tb, Tensor x0) =>
        Student.PredictNoise(xt, t, tb, conditional: true, attnKind: AttnKind);

    /// <summary>FastVideo HEAD's DFSFT weights over n grid indices: exp(-2((i - n/2)/n)^2), minus its min, scaled to mean 1.</summary>
    public static Tensor GaussianWeights(int n, Device device)
    {
        using var scope = NewDisposeScope();
        var x = arange(n, dtype: ScalarType.Float32, device: device);
        var y = exp(-2 * ((x - n / 2.0) / n).pow(2));
        var shifted = y - y.min();
        return (shifted * (n / shifted.sum())).MoveToOuterDisposeScope();
    }
}

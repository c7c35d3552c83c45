using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Schedulers;

/// <summary>
/// The Self-Forcing flow-matching scheduler (spec 3.2; FastVideo's scheduling_self_forcing_flow_match.py), which the
/// causal methods (Self-Forcing, KD) use for their sigma lookups instead of a model's own scheduler:
/// <code>
/// start = sigma_min + (sigma_max - sigma_min)
/// base  = linspace(start, sigma_min, n + 1)[:-1] if extra_one_step else linspace(start, sigma_min, n)
/// (flipped if inverse_timesteps)
/// sigma = s·base / (1 + (s - 1)·base)      (1 - sigma if reverse_sigmas)
/// t     = N·sigma
/// training: w(t) = exp(-2((t - n/2)/n)^2), shifted to min 0 and scaled to sum n (indexed by timestep values)
/// </code>
/// Built in float32 with libtorch's linspace, as upstream, so the grid is the same to the bit. With n = N = 1000,
/// sigma_min = 0 and extra_one_step (<see cref="ForTraining"/>) the grid equals the Euler training grid of the same
/// shift. Lookups take the nearest grid timestep.
/// </summary>
public sealed class SelfForcingFlowMatchScheduler : INoiseScheduler
{
    public SelfForcingFlowMatchScheduler(int numInferenceSteps = 100, int numTrainTimesteps = 1000, double shift = 3.0,
        double sigmaMax = 1.0, double sigmaMin = 0.003 / 1.002, bool inverseTimesteps = false, bool extraOneStep = false,
        bool reverseSigmas = false, bool training = false)
    {
        if (numInferenceSteps < 1) throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), "need at least one step");
        if (numTrainTimesteps < 1) throw new ArgumentOutOfRangeException(nameof(numTrainTimesteps));
        if (!(shift > 0)) throw new ArgumentOutOfRangeException(nameof(shift), $"flow shift must be > 0, got {shift}");
        NumTrainTimesteps = numTrainTimesteps;
        Shift = shift;
        InverseTimesteps = inverseTimesteps;
        ReverseSigmas = reverseSigmas;

        using var scope = NewDisposeScope();
        double start = sigmaMin + (sigmaMax - sigmaMin) * 1.0;   // denoising_strength = 1
        var sigmas = extraOneStep
            ? linspace(start, sigmaMin, numInferenceSteps + 1, dtype: ScalarType.Float32).narrow(0, 0, numInferenceSteps)
            : linspace(start, sigmaMin, numInferenceSteps, dtype: ScalarType.Float32);
        if (inverseTimesteps) sigmas = sigmas.flip(0);
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas);
        if (reverseSigmas) sigmas = 1 - sigmas;
        var timesteps = sigmas * numTrainTimesteps;
        TrainSigmas = sigmas.data<float>().ToArray();
        TrainTimesteps = timesteps.data<float>().ToArray();
        if (training)
        {
            var y = exp(-2 * ((timesteps - numInferenceSteps / 2.0) / numInferenceSteps).pow(2));
            var shifted = y - y.min();
            TrainingWeights = (shifted * (numInferenceSteps / shifted.sum())).data<float>().ToArray();
        }
    }

    /// <summary>The grid the causal methods use (spec 6.4, 6.6): 1000 steps, sigma_min 0, extra_one_step.</summary>
    public static SelfForcingFlowMatchScheduler ForTraining(double shift, int numTrainTimesteps = 1000, bool training = false) =>
        new(1000, numTrainTimesteps, shift, sigmaMin: 0.0, extraOneStep: true, training: training);

    /// <summary>A teacher's ODE grid of <paramref name="steps"/> steps (sigma_min 0, extra_one_step), as KD builds it.</summary>
    public static SelfForcingFlowMatchScheduler OdeGrid(int steps, double shift, int numTrainTimesteps = 1000) =>
        new(steps, numTrainTimesteps, shift, sigmaMin: 0.0, extraOneStep: true);

    public int NumTrainTimesteps { get; }
    public double Shift { get; }
    public bool InverseTimesteps { get; }
    public bool ReverseSigmas { get; }
    /// <summary>The grid's sigmas (descending unless inverted).</summary>
    public float[] TrainSigmas { get; }
    /// <summary>The grid's timesteps, N·sigma.</summary>
    public float[] TrainTimesteps { get; }
    /// <summary>The training weights per grid point (null unless built with training: true).</summary>
    public float[]? TrainingWeights { get; }

    /// <summary>Index of the nearest grid timestep for each value, flattened.</summary>
    public Tensor NearestIndex(Tensor timesteps) => FlowMatch.NearestIndex(TrainTimesteps, timesteps);

    public Tensor SigmasForTimesteps(Tensor timesteps) => FlowMatch.NearestSigmas(this, timesteps);

    /// <summary>(1 - sigma) x0 + sigma eps on [M, ...] rows, timesteps 1 or M values ([M] or [B,T]); result in eps's dtype.</summary>
    public Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var sigma = RowSigmas(timesteps, x0, "add_noise");
        var result = (1.0 - sigma) * x0.to_type(ScalarType.Float32) + sigma * noise.to_type(ScalarType.Float32);
        return result.to_type(noise.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One Euler step on [M, ...] rows: x + v·(sigma' - sigma_k), k the nearest grid index, sigma' = sigma_{k+1}, or
    /// the end of the path (0; 1 for an inverted or reversed grid) with <paramref name="toFinal"/> or when any row is
    /// at the last grid point (as upstream).
    /// </summary>
    public Tensor Step(Tensor modelOutput, Tensor timesteps, Tensor sample, bool toFinal = false)
    {
        using var scope = NewDisposeScope();
        var idx = NearestIndex(timesteps);
        var sig = tensor(TrainSigmas, device: sample.device);
        var shape = RowShape(sample, idx.numel());
        var sigma = sig.index_select(0, idx).reshape(shape);
        Tensor next;
        if (toFinal || idx.max().item<long>() + 1 >= TrainSigmas.Length)
            next = full(shape, InverseTimesteps || ReverseSigmas ? 1f : 0f, device: sample.device);
        else
            next = sig.index_select(0, idx + 1).reshape(shape);
        return (sample + modelOutput * (next - sigma)).MoveToOuterDisposeScope();
    }

    /// <summary>The training weight of each timestep (nearest grid point), flattened.</summary>
    public Tensor TrainingWeight(Tensor timesteps)
    {
        if (TrainingWeights is null) throw new InvalidOperationException("this scheduler was built without training weights (training: false)");
        using var scope = NewDisposeScope();
        return tensor(TrainingWeights, device: timesteps.device).index_select(0, NearestIndex(timesteps)).MoveToOuterDisposeScope();
    }

    /// <summary>Flow-matching target v = eps - x0.</summary>
    public static Tensor TrainingTarget(Tensor x0, Tensor noise) => noise - x0;

    private Tensor RowSigmas(Tensor timesteps, Tensor x, string what)
    {
        long m = x.shape[0], n = timesteps.numel();
        if (n != 1 && n != m)
            throw new ArgumentException($"{what}: timestep has {n} values ({FlowMatchEulerDiscreteScheduler.Shape(timesteps)}) but the sample has {m} rows; expected 1 or {m}");
        return SigmasForTimesteps(timesteps).to_type(ScalarType.Float32).reshape(RowShape(x, n));
    }

    private static long[] RowShape(Tensor x, long rows)
    {
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[0] = rows;
        return shape;
    }
}

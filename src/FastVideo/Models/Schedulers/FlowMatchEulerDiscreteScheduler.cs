using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Schedulers;

/// <summary>
/// Flow-matching Euler scheduler with Diffusers' defaults (no dynamic shifting, no karras/exponential/beta sigmas).
/// Convention: x_t = (1 - sigma) x0 + sigma eps, and the network predicts v = eps - x0.
/// The training grid is built once; <see cref="SetTimesteps"/> builds the inference grid used by <see cref="Step"/>.
/// </summary>
public sealed class FlowMatchEulerDiscreteScheduler : INoiseScheduler
{
    public int NumTrainTimesteps { get; }
    public double Shift { get; }

    /// <summary>Training grid, descending: sigma_0 = 1 (noisiest) ... sigma_{N-1} (about 1/N before shifting).</summary>
    public float[] TrainSigmas { get; }
    /// <summary>Training grid timesteps t_i = N sigma_i (non-integer when shift != 1).</summary>
    public float[] TrainTimesteps { get; }
    public double SigmaMax => TrainSigmas[0];
    public double SigmaMin => TrainSigmas[^1];

    /// <summary>Inference grid after <see cref="SetTimesteps"/>: n timesteps and n + 1 sigmas ending at 0.</summary>
    public float[] Timesteps { get; private set; }
    public float[] Sigmas { get; private set; }
    private int? _stepIndex;

    public FlowMatchEulerDiscreteScheduler(double shift = 1.0, int numTrainTimesteps = 1000)
    {
        if (numTrainTimesteps < 1) throw new ArgumentOutOfRangeException(nameof(numTrainTimesteps));
        if (!(shift > 0)) throw new ArgumentOutOfRangeException(nameof(shift), "flow shift must be > 0");
        NumTrainTimesteps = numTrainTimesteps;
        Shift = shift;
        int n = numTrainTimesteps;
        TrainSigmas = new float[n];
        TrainTimesteps = new float[n];
        for (int i = 0; i < n; i++)
        {
            // Diffusers builds the grid in float32: timesteps = linspace(1, N, N)[::-1], sigmas = timesteps / N.
            float u = (float)(n - i) / n;
            float s = ShiftSigma(u, shift);
            TrainSigmas[i] = s;
            TrainTimesteps[i] = s * n;
        }
        Timesteps = TrainTimesteps;
        Sigmas = [.. TrainSigmas, 0f];
    }

    /// <summary>sigma' = s u / (1 + (s - 1) u), in float32 like Diffusers.</summary>
    public static float ShiftSigma(float u, double shift)
    {
        // float32 arithmetic, as torch does it on a float32 tensor with a Python float shift.
        float s = (float)shift;
        return s * u / (1f + (s - 1f) * u);
    }

    /// <summary>
    /// Inference grid of <paramref name="numInferenceSteps"/> steps: timesteps spaced linearly between the training
    /// grid's ends, then shifted again (Diffusers applies the shift on top of the already-shifted ends).
    /// </summary>
    public void SetTimesteps(int numInferenceSteps)
    {
        if (numInferenceSteps < 1) throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), "need at least one step");
        int n = numInferenceSteps, nt = NumTrainTimesteps;
        float hi = (float)(SigmaMax * nt), lo = (float)(SigmaMin * nt);
        var sig = new float[n];
        for (int i = 0; i < n; i++)
        {
            // numpy.linspace: start + i * step, with the last value pinned to stop.
            double tt = n == 1 ? hi : i == n - 1 ? lo : i * (((double)lo - hi) / (n - 1)) + hi;
            double u = tt / nt;
            // Diffusers shifts these in float64 (numpy) and only then casts to float32.
            sig[i] = (float)(Shift * u / (1 + (Shift - 1) * u));
        }
        SetSigmas(sig);
    }

    /// <summary>
    /// linspace(1, 0, n + 1) without its last point: the sigmas Diffusers' HunyuanVideo pipeline passes to
    /// <see cref="SetCustomSigmas"/> (which shifts them; the terminal 0 is appended there).
    /// </summary>
    public static double[] LinearSigmas(int steps)
    {
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), "need at least one step");
        double step = -1.0 / steps;   // numpy.linspace: start + i · step
        return Enumerable.Range(0, steps).Select(i => i * step + 1.0).ToArray();
    }

    /// <summary>Custom sigmas (descending, in (0,1]); the shift is applied to them as Diffusers does.</summary>
    public void SetCustomSigmas(IReadOnlyList<double> sigmas)
    {
        if (sigmas.Count == 0) throw new ArgumentException("need at least one sigma", nameof(sigmas));
        SetSigmas(sigmas.Select(s => ShiftSigma((float)s, Shift)).ToArray());
    }

    private void SetSigmas(float[] shifted)
    {
        Timesteps = shifted.Select(s => s * NumTrainTimesteps).ToArray();
        Sigmas = [.. shifted, 0f];
        _stepIndex = null;
    }

    /// <summary>One Euler step: x_next = x + (sigma_{k+1} - sigma_k) v, computed in float32.</summary>
    public Tensor Step(Tensor modelOutput, float timestep, Tensor sample)
    {
        _stepIndex ??= IndexForTimestep(timestep);
        int k = _stepIndex.Value;
        if (k + 1 >= Sigmas.Length) throw new InvalidOperationException("Step called more times than there are timesteps");
        double dt = Sigmas[k + 1] - Sigmas[k];
        _stepIndex = k + 1;
        using var x32 = sample.to_type(ScalarType.Float32);
        using var v32 = modelOutput.to_type(ScalarType.Float32);
        using var next = x32 + v32 * dt;
        return next.to_type(modelOutput.dtype);
    }

    /// <summary>Index of an exact timestep in the inference grid; the second occurrence if it repeats (Diffusers' rule).</summary>
    private int IndexForTimestep(float t)
    {
        var hits = Enumerable.Range(0, Timesteps.Length).Where(i => Timesteps[i] == t).ToList();
        if (hits.Count == 0) throw new ArgumentException($"timestep {t} is not on the scheduler's grid", nameof(t));
        return hits.Count > 1 ? hits[1] : hits[0];
    }

    /// <summary>Index of the training-grid timestep nearest to each value of <paramref name="timesteps"/>.</summary>
    public Tensor NearestTrainIndex(Tensor timesteps) => FlowMatch.NearestIndex(TrainTimesteps, timesteps);

    /// <summary>Training-grid sigmas for arbitrary timesteps (nearest lookup), flattened, as float64.</summary>
    public Tensor SigmasForTimesteps(Tensor timesteps) => FlowMatch.NearestSigmas(this, timesteps);

    /// <summary>
    /// Forward process on [M, ...] tensors: (1 - sigma) x0 + sigma eps, sigma looked up per row from the nearest
    /// training-grid timestep. <paramref name="timesteps"/> may hold 1 value (broadcast) or M values ([M] or [B,T]).
    /// </summary>
    public Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        long m = x0.shape[0];
        long n = timesteps.numel();
        if (n != 1 && n != m)
            throw new ArgumentException($"add_noise: timestep has {n} values ({Shape(timesteps)}) but the sample has {m} rows; expected 1 or {m}");
        var sigma = SigmasForTimesteps(timesteps).to_type(ScalarType.Float32);
        var shape = new long[x0.dim()];
        Array.Fill(shape, 1L);
        shape[0] = n;
        sigma = sigma.reshape(shape);
        var result = (1.0 - sigma) * x0.to_type(ScalarType.Float32) + sigma * noise.to_type(ScalarType.Float32);
        return result.to_type(noise.dtype).MoveToOuterDisposeScope();
    }

    internal static string Shape(Tensor t) => "[" + string.Join(",", t.shape) + "]";
}

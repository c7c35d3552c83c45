using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Schedulers;

/// <summary>
/// Flow-matching helpers shared by the model plugins, the methods and the samplers (spec 3.3-3.5): grid timesteps,
/// exact-grid sigmas, timestep shifting, and v -> x0.
/// </summary>
public static class FlowMatch
{
    /// <summary>
    /// Maps u in [0,1) to training-grid timesteps: t = grid[floor(u N)]. Index 0 is the noisiest (sigma = 1).
    /// Clamped to N - 1 so a logit-normal u that rounds to 1.0 cannot index past the grid (an upstream quirk).
    /// </summary>
    public static Tensor GridTimesteps(INoiseScheduler scheduler, Tensor u)
    {
        using var scope = NewDisposeScope();
        int n = scheduler.NumTrainTimesteps;
        var idx = (u.to_type(ScalarType.Float64) * n).floor().to_type(ScalarType.Int64).clamp(0, n - 1);
        var grid = tensor(scheduler.TrainTimesteps, device: u.device);
        return grid.index_select(0, idx.to(u.device)).MoveToOuterDisposeScope();
    }

    /// <summary>Index of the grid timestep nearest to each value of <paramref name="timesteps"/> (argmin |grid - t|), flattened.</summary>
    public static Tensor NearestIndex(float[] gridTimesteps, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var grid = tensor(gridTimesteps, device: timesteps.device);
        var diff = (grid.unsqueeze(0) - timesteps.to_type(ScalarType.Float32).reshape(-1, 1)).abs();
        return diff.argmin(1).MoveToOuterDisposeScope();
    }

    /// <summary>The sigma of the nearest grid timestep for each value, flattened, as float64.</summary>
    public static Tensor NearestSigmas(INoiseScheduler scheduler, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var sig = tensor(scheduler.TrainSigmas, device: timesteps.device).to_type(ScalarType.Float64);
        return sig.index_select(0, NearestIndex(scheduler.TrainTimesteps, timesteps)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Sigmas for timesteps that lie exactly on the scheduler's training grid (upstream get_sigmas), reshaped to
    /// [B, 1, ..., 1] with <paramref name="nDim"/> dims. A timestep that is not on the grid is an error.
    /// </summary>
    public static Tensor GetSigmas(INoiseScheduler scheduler, Tensor timesteps, int nDim, ScalarType dtype)
    {
        var t = timesteps.to_type(ScalarType.Float32).cpu().data<float>().ToArray();
        var grid = scheduler.TrainTimesteps;
        var sig = new float[t.Length];
        for (int b = 0; b < t.Length; b++)
        {
            int idx = Array.IndexOf(grid, t[b]);
            if (idx < 0) throw new ArgumentException($"get_sigmas: timestep {t[b]} is not on the training grid");
            sig[b] = scheduler.TrainSigmas[idx];
        }
        var shape = Enumerable.Repeat(1L, nDim).ToArray();
        shape[0] = t.Length;
        using var s = tensor(sig, device: timesteps.device);
        return s.reshape(shape).to_type(dtype);
    }

    /// <summary>shift_timestep: N s x / (1 + (s - 1) x) with x = t / N; identity when s == 1.</summary>
    public static Tensor ShiftTimestep(Tensor timesteps, double shift, int numTrainTimesteps)
    {
        if (shift == 1.0) return timesteps.alias();
        using var scope = NewDisposeScope();
        var x = timesteps.to_type(ScalarType.Float32) / numTrainTimesteps;
        return (numTrainTimesteps * (shift * x / (1 + (shift - 1) * x))).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The deterministic (ODE) move of x_t at <paramref name="sigmaCurrent"/> with clean prediction <paramref name="x0"/>
    /// to <paramref name="sigmaNext"/>, as Self-Forcing's ode rollout and KD's teacher write it: the implied noise
    /// eps = (x_t - (1 - sigma) x0) / max(sigma, 1e-8), then (1 - sigma') x0 + sigma' eps. With x0 = x_t - sigma v this is
    /// the Euler step x_t + (sigma' - sigma) v. Sigmas broadcast against the latents.
    /// </summary>
    public static Tensor DeterministicStep(Tensor xt, Tensor x0, Tensor sigmaCurrent, Tensor sigmaNext)
    {
        using var scope = NewDisposeScope();
        var eps = ImpliedNoise(xt, x0, sigmaCurrent);
        return ((1 - sigmaNext) * x0 + sigmaNext * eps).to_type(xt.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>The noise of x_t = (1 - sigma) x0 + sigma eps given x0: (x_t - (1 - sigma) x0) / max(sigma, 1e-8).</summary>
    public static Tensor ImpliedNoise(Tensor xt, Tensor x0, Tensor sigma)
    {
        using var scope = NewDisposeScope();
        return ((xt - (1 - sigma) * x0) / sigma.clamp_min(1e-8)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// x0 = x_t - sigma(t) v, in float64, cast back to v's dtype (upstream pred_noise_to_pred_video). Inputs are
    /// [M, ...]; <paramref name="timestep"/> has 1 value (broadcast) or M values ([M] or [B,T] flattened); sigma is
    /// the nearest training-grid sigma of <paramref name="scheduler"/>.
    /// </summary>
    public static Tensor PredNoiseToPredVideo(Tensor predNoise, Tensor noiseInputLatent, Tensor timestep,
        INoiseScheduler scheduler)
    {
        using var scope = NewDisposeScope();
        long m = predNoise.shape[0];
        long n = timestep.numel();
        if (n != 1 && n != m)
            throw new ArgumentException($"pred_noise_to_pred_video: timestep has {n} values but the prediction has {m} rows; expected 1 or {m}");
        var sigma = scheduler.SigmasForTimesteps(timestep);
        var shape = Enumerable.Repeat(1L, (int)predNoise.dim()).ToArray();
        shape[0] = n;
        var x0 = noiseInputLatent.to_type(ScalarType.Float64) - sigma.reshape(shape) * predNoise.to_type(ScalarType.Float64);
        return x0.to_type(predNoise.dtype).MoveToOuterDisposeScope();
    }
}

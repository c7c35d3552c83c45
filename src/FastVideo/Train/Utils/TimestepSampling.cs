using FastVideo.Models.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Utils;

/// <summary>Timestep density schemes for training (upstream compute_density_for_timestep_sampling).</summary>
public enum WeightingScheme { Uniform, LogitNormal, Mode }

public static class TimestepSampling
{
    public static WeightingScheme ParseScheme(string name) => name switch
    {
        "logit_normal" => WeightingScheme.LogitNormal,
        "mode" => WeightingScheme.Mode,
        _ => WeightingScheme.Uniform, // upstream: anything else is uniform; the recipe validator rejects unknown names
    };

    /// <summary>One u in [0,1) per sample, drawn from <paramref name="generator"/>.</summary>
    public static Tensor Density(WeightingScheme scheme, long batchSize, Generator generator,
        double logitMean = 0.0, double logitStd = 1.0, double modeScale = 1.0)
    {
        using var scope = NewDisposeScope();
        Tensor u;
        switch (scheme)
        {
            case WeightingScheme.LogitNormal:
                u = sigmoid(normal(logitMean, logitStd, [batchSize], generator: generator));
                break;
            case WeightingScheme.Mode:
                var u0 = rand([batchSize], generator: generator, dtype: ScalarType.Float32);
                u = 1 - u0 - modeScale * (cos(Math.PI * u0 / 2).pow(2) - 1 + u0);
                break;
            default:
                u = rand([batchSize], generator: generator, dtype: ScalarType.Float32);
                break;
        }
        return u.to_type(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Maps u in [0,1) to training-grid timesteps: t = grid[floor(u N)]. Index 0 is the noisiest (sigma = 1).
    /// Clamped to N - 1 so a logit-normal u that rounds to 1.0 cannot index past the grid (an upstream quirk).
    /// </summary>
    public static Tensor GridTimesteps(FlowMatchEulerDiscreteScheduler scheduler, Tensor u)
    {
        using var scope = NewDisposeScope();
        int n = scheduler.NumTrainTimesteps;
        var idx = (u.to_type(ScalarType.Float64) * n).floor().to_type(ScalarType.Int64).clamp(0, n - 1);
        var grid = tensor(scheduler.TrainTimesteps, device: u.device);
        return grid.index_select(0, idx.to(u.device)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Sigmas for timesteps that lie exactly on the scheduler's training grid (upstream get_sigmas), reshaped to
    /// [B, 1, ..., 1] with <paramref name="nDim"/> dims. A timestep that is not on the grid is an error.
    /// </summary>
    public static Tensor GetSigmas(FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps, int nDim, ScalarType dtype)
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
}

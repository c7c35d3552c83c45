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
}

using FastVideo.Models.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Utils;

public static class FlowMatchMath
{
    /// <summary>
    /// x0 = x_t - sigma(t) v, in float64, cast back to v's dtype (upstream pred_noise_to_pred_video). Inputs are
    /// [M, ...]; <paramref name="timestep"/> has 1 value (broadcast) or M values ([M] or [B,T] flattened); sigma is
    /// the nearest training-grid sigma of <paramref name="scheduler"/>.
    /// </summary>
    public static Tensor PredNoiseToPredVideo(Tensor predNoise, Tensor noiseInputLatent, Tensor timestep,
        FlowMatchEulerDiscreteScheduler scheduler)
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

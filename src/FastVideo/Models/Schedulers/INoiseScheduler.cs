using static TorchSharp.torch;

namespace FastVideo.Models.Schedulers;

/// <summary>
/// What generic training and sampling code needs of a role's noise scheduler: the training grid, the nearest-grid
/// sigma lookup and the forward process x_t = (1 - sigma) x0 + sigma eps. <see cref="FlowMatchEulerDiscreteScheduler"/>
/// implements it; so will the Self-Forcing scheduler (spec 3.2), whose grid differs but whose contract is the same.
/// </summary>
public interface INoiseScheduler
{
    int NumTrainTimesteps { get; }
    /// <summary>The flow shift the grid was built with.</summary>
    double Shift { get; }
    /// <summary>Training grid timesteps, descending (noisiest first).</summary>
    float[] TrainTimesteps { get; }
    /// <summary>Training grid sigmas, aligned with <see cref="TrainTimesteps"/>.</summary>
    float[] TrainSigmas { get; }

    /// <summary>Sigmas of the nearest grid timestep for each value, flattened, as float64.</summary>
    Tensor SigmasForTimesteps(Tensor timesteps);

    /// <summary>Forward process on [M, ...]: timesteps hold 1 value (broadcast) or M values ([M] or [B,T]).</summary>
    Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps);
}

using FastVideo.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models;

/// <summary>
/// Forward primitives built by a model plugin from a loader batch. Layouts (upstream's contract):
/// <see cref="Latents"/> is BTCHW; <see cref="NoisyModelInput"/> and <see cref="Noise"/> stay BCTHW. Conditioning is
/// carried as named channels (<see cref="Conditioning"/>), already on the model's device and dtype.
/// </summary>
public sealed class TrainingBatch : IDisposable
{
    /// <summary>Normalised clean latents, [B,T,C,H,W].</summary>
    public required Tensor Latents { get; set; }
    /// <summary>Shape of the latents as [B,C,T,H,W].</summary>
    public required long[] RawLatentShape { get; init; }
    /// <summary>(1 - sigma) x0 + sigma eps, [B,C,T,H,W].</summary>
    public required Tensor NoisyModelInput { get; set; }
    /// <summary>eps, [B,C,T,H,W].</summary>
    public required Tensor Noise { get; set; }
    /// <summary>[B] float32 training-grid timesteps (per-frame [B,T] for causal methods that override it).</summary>
    public required Tensor Timesteps { get; set; }
    /// <summary>[B,1,1,1,1].</summary>
    public required Tensor Sigmas { get; set; }
    /// <summary>The batch's own conditioning (upstream's conditional_dict).</summary>
    public required Conditioning Conditional { get; init; }
    /// <summary>The negative side for classifier-free guidance, with the same channels, expanded to the batch; null
    /// when the model has none (upstream's unconditional_dict).</summary>
    public Conditioning? Unconditional { get; init; }

    public void Dispose()
    {
        foreach (var t in new[] { Latents, NoisyModelInput, Noise, Timesteps, Sigmas }) t.Dispose();
        Conditional.Dispose();
        Unconditional?.Dispose();
    }
}

using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models;

/// <summary>Text conditioning handed to a transformer: embeddings [B,L,D] and mask [B,L].</summary>
public sealed record TextConditioning(Tensor EncoderHiddenStates, Tensor EncoderAttentionMask);

/// <summary>
/// Forward primitives built by a model plugin from a loader batch. Layouts (upstream's contract):
/// <see cref="Latents"/> is BTCHW; <see cref="NoisyModelInput"/> and <see cref="Noise"/> stay BCTHW.
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
    public required Tensor EncoderHiddenStates { get; init; }
    public required Tensor EncoderAttentionMask { get; init; }
    public IReadOnlyList<IReadOnlyDictionary<string, object?>> Infos { get; init; } = [];
    public required TextConditioning ConditionalDict { get; init; }
    /// <summary>Negative-prompt conditioning expanded to the batch; null when the model has none.</summary>
    public TextConditioning? UnconditionalDict { get; init; }
    /// <summary>Attention metadata for dense and sparse attention; null until sparse attention exists.</summary>
    public object? AttnMetadata { get; init; }
    public object? AttnMetadataVsa { get; init; }
    /// <summary>Tensors methods keep for visualisation (e.g. the generator's timestep).</summary>
    public Dictionary<string, Tensor> DmdLatentVisDict { get; } = new();
    public Dictionary<string, Tensor> FakeScoreLatentVisDict { get; } = new();

    public void Dispose()
    {
        foreach (var t in new[] { Latents, NoisyModelInput, Noise, Timesteps, Sigmas, EncoderHiddenStates, EncoderAttentionMask }) t.Dispose();
        UnconditionalDict?.EncoderHiddenStates.Dispose();
        UnconditionalDict?.EncoderAttentionMask.Dispose();
        foreach (var t in DmdLatentVisDict.Values) t.Dispose();
        foreach (var t in FakeScoreLatentVisDict.Values) t.Dispose();
    }
}

using System.Diagnostics.CodeAnalysis;
using static TorchSharp.torch;

namespace FastVideo.Data;

/// <summary>
/// One collated batch, the dict upstream's collator builds (reference spec 2.4): <c>vae_latent</c>, the
/// conditioning (<c>text_embedding</c> and <c>text_attention_mask</c> as the <see cref="Conditioning.Text"/> channel),
/// <c>info_list</c>, <c>caption_text</c>. Owns its tensors.
/// </summary>
public sealed class RawBatch : IDisposable
{
    /// <summary>For object initializers (tests, in-memory sources).</summary>
    public RawBatch() { }

    [SetsRequiredMembers]
    public RawBatch(Tensor vaeLatent, Conditioning conditioning,
        IReadOnlyList<IReadOnlyDictionary<string, object?>> infoList, IReadOnlyList<string> captions,
        IReadOnlyList<long> sampleIndices, IReadOnlyList<bool> textDropped)
    {
        VaeLatent = vaeLatent;
        Conditioning = conditioning;
        InfoList = infoList;
        Captions = captions;
        SampleIndices = sampleIndices;
        TextDropped = textDropped;
    }

    /// <summary>float32 [B, C, T, H, W], un-normalised VAE latents as stored (null for text-only batches).</summary>
    public Tensor? VaeLatent { get; init; }
    /// <summary>
    /// The conditioning channels the data has. FastVideo's T2V parquet fills <see cref="Conditioning.Text"/>: float32
    /// [B, text_len, D], padded with zero rows or cut to text_len, with the mask [B, text_len] (1 real, 0 padding).
    /// </summary>
    public required Conditioning Conditioning { get; init; }
    /// <summary>Per sample: every metadata column plus "prompt" (the caption).</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, object?>> InfoList { get; init; } = [];
    /// <summary>Per sample caption (the original one, also when its text was dropped for CFG).</summary>
    public IReadOnlyList<string> Captions { get; init; } = [];
    /// <summary>Global sample index of each row (the dataset index, as upstream's <c>_sample_index</c>).</summary>
    public IReadOnlyList<long> SampleIndices { get; init; } = [];
    /// <summary>Per sample: whether CFG dropout replaced its text with the unconditional embedding.</summary>
    public IReadOnlyList<bool> TextDropped { get; init; } = [];

    /// <summary>
    /// Further per-sample tensors of sources other than the parquet loader, by name (KD's trajectory cache:
    /// <c>trajectory_latents</c> [B,S,T,C,H,W], <c>trajectory_timesteps</c> [B,S]); disposed with the batch.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> Extras { get; init; } = new Dictionary<string, Tensor>();

    public int BatchSize => (int)Conditioning.BatchSize;

    public void Dispose()
    {
        VaeLatent?.Dispose();
        foreach (var t in Extras.Values) t.Dispose();
        Conditioning.Dispose();
    }
}

using System.Diagnostics.CodeAnalysis;
using static TorchSharp.torch;

namespace FastVideo.Data;

/// <summary>
/// One collated batch, the dict upstream's collator builds (reference spec 2.4): <c>vae_latent</c>,
/// <c>text_embedding</c>, <c>text_attention_mask</c>, <c>info_list</c>, <c>caption_text</c>. Owns its tensors.
/// </summary>
public sealed class RawBatch : IDisposable
{
    /// <summary>For object initializers (tests, in-memory sources).</summary>
    public RawBatch() { }

    [SetsRequiredMembers]
    public RawBatch(Tensor vaeLatent, Tensor textEmbedding, Tensor textAttentionMask,
        IReadOnlyList<IReadOnlyDictionary<string, object?>> infoList, IReadOnlyList<string> captions,
        IReadOnlyList<long> sampleIndices, IReadOnlyList<bool> textDropped)
    {
        VaeLatent = vaeLatent;
        TextEmbedding = textEmbedding;
        TextAttentionMask = textAttentionMask;
        InfoList = infoList;
        Captions = captions;
        SampleIndices = sampleIndices;
        TextDropped = textDropped;
    }

    /// <summary>float32 [B, C, T, H, W], un-normalised VAE latents as stored (null for text-only batches).</summary>
    public Tensor? VaeLatent { get; init; }
    /// <summary>float32 [B, text_len, D], padded with zero rows or cut to text_len.</summary>
    public required Tensor TextEmbedding { get; init; }
    /// <summary>float32 [B, text_len]: 1 for real tokens, 0 for padding.</summary>
    public required Tensor TextAttentionMask { get; init; }
    /// <summary>Per sample: every metadata column plus "prompt" (the caption).</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, object?>> InfoList { get; init; } = [];
    /// <summary>Per sample caption (the original one, also when its text was dropped for CFG).</summary>
    public IReadOnlyList<string> Captions { get; init; } = [];
    /// <summary>Global sample index of each row (the dataset index, as upstream's <c>_sample_index</c>).</summary>
    public IReadOnlyList<long> SampleIndices { get; init; } = [];
    /// <summary>Per sample: whether CFG dropout replaced its text with the unconditional embedding.</summary>
    public IReadOnlyList<bool> TextDropped { get; init; } = [];

    public int BatchSize => (int)TextEmbedding.shape[0];

    public void Dispose()
    {
        VaeLatent?.Dispose();
        TextEmbedding.Dispose();
        TextAttentionMask.Dispose();
    }
}

using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>
/// The keys and values one attention layer has seen while streaming a sequence chunk by chunk. Tensors are
/// [B, heads, tokens, head_dim]; token positions count from the start of the sequence. How they are stored (one
/// buffer, rolled or grown) is the implementation's business; what a chunk sees is its <see cref="AttentionWindow"/>.
/// A cache never answers with other tokens than the window asks for: what it cannot serve is an error.
/// </summary>
public interface IKvCache : IDisposable
{
    /// <summary>Tokens written so far: where the next chunk starts.</summary>
    long End { get; }

    /// <summary>Token slots its key buffer holds (as many for the values); before the first write, the ones it will allocate.</summary>
    long Capacity { get; }

    /// <summary>
    /// The keys and values the chunk [<paramref name="start"/>, <paramref name="end"/>) attends to besides its own
    /// tokens: the earlier tokens of its window, in sequence order; null when there are none (the first chunk).
    /// </summary>
    (Tensor Keys, Tensor Values)? ReadWindow(long start, long end);

    /// <summary>
    /// Stores a chunk's keys and values at <paramref name="start"/> (at most <see cref="End"/>). Tokens from
    /// <paramref name="start"/> on are replaced: writing a chunk again (the same block at another denoising step, then
    /// its clean context) overwrites it and drops what came after it.
    /// </summary>
    void Append(long start, Tensor keys, Tensor values);

    /// <summary>Forgets every token (a new sequence starts); storage may be kept for reuse.</summary>
    void Reset();

    /// <summary>
    /// A view of what the cache holds now, for a call that runs again later (activation checkpointing recomputes it in
    /// backward): it reads the tokens held now even after the cache has moved on, and its appends change nothing but
    /// its own end. Reading a token the cache has overwritten since is an error.
    /// </summary>
    IKvCache Snapshot();
}

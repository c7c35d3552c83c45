using FastVideo.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

/// <summary>
/// What a <see cref="CausalWanTransformer3DModel"/>'s streaming forward reads and writes, one entry per block: the
/// self-attention's keys and values (an <see cref="IKvCache"/>, however stored) and the cross-attention's keys and
/// values of the text (computed on first use and again when the text changes). Made by
/// <see cref="CausalWanTransformer3DModel.NewCache"/> for one latent frame size.
/// </summary>
public sealed class CausalWanCache : IDisposable
{
    private readonly (Tensor Keys, Tensor Values)?[] _cross;
    private Tensor? _text;
    private readonly List<IKvCache> _snapshots = [];

    /// <param name="frameTokens">Tokens per latent frame of the latents it serves.</param>
    /// <param name="selfAttention">One cache per block.</param>
    public CausalWanCache(long frameTokens, IReadOnlyList<IKvCache> selfAttention)
    {
        FrameTokens = frameTokens;
        SelfAttention = selfAttention;
        _cross = new (Tensor, Tensor)?[selfAttention.Count];
    }

    public long FrameTokens { get; }
    public IReadOnlyList<IKvCache> SelfAttention { get; }

    /// <summary>Token slots of the largest block cache (<see cref="IKvCache.Capacity"/>).</summary>
    public long CapacityTokens => SelfAttention.Count == 0 ? 0 : SelfAttention.Max(c => c.Capacity);

    /// <summary>Latent frames written so far: where the next chunk starts.</summary>
    public long Frames => SelfAttention.Count == 0 ? 0 : SelfAttention[0].End / FrameTokens;

    /// <summary>Drops the cross-attention entries when <paramref name="text"/> (the padded raw text) is not the one they came from.</summary>
    internal void UseText(Tensor text)
    {
        if (_text is not null && _text.shape.SequenceEqual(text.shape) && _text.dtype == text.dtype && _text.device_type == text.device_type && _text.allclose(text, 0, 0)) return;
        DropCross();
        using var _ = no_grad();
        _text = text.detach().clone().DetachFromDisposeScope();
    }

    /// <summary>The text keys and values of block <paramref name="block"/>, computed by <paramref name="attention"/> on first use.</summary>
    internal (Tensor Keys, Tensor Values) CrossKeysValues(int block, WanAttention attention, Tensor context)
    {
        if (_cross[block] is { } kv) return kv;
        var (k, v) = attention.KeysValues(context);
        _cross[block] = (k.DetachFromDisposeScope(), v.DetachFromDisposeScope());
        return _cross[block]!.Value;
    }

    /// <summary>A snapshot of block <paramref name="block"/>'s cache for a checkpointed call, kept until <see cref="ReleaseSnapshots"/>.</summary>
    internal IKvCache SnapshotForRecomputation(int block)
    {
        var s = SelfAttention[block].Snapshot();
        _snapshots.Add(s);
        return s;
    }

    /// <summary>
    /// Frees the snapshots that checkpointed streaming calls took so that their recomputation in backward reads what
    /// they read: call it after that backward (they would otherwise hold the buffers until the garbage collector runs).
    /// </summary>
    public void ReleaseSnapshots()
    {
        foreach (var s in _snapshots) s.Dispose();
        _snapshots.Clear();
    }

    /// <summary>Starts a new sequence: every block's cache forgets its tokens; the text entries go too.</summary>
    public void Reset()
    {
        foreach (var c in SelfAttention) c.Reset();
        DropCross();
    }

    private void DropCross()
    {
        for (int i = 0; i < _cross.Length; i++)
        {
            if (_cross[i] is { } kv) { kv.Keys.Dispose(); kv.Values.Dispose(); }
            _cross[i] = null;
        }
        _text?.Dispose();
        _text = null;
    }

    /// <summary>Frees the caches; snapshots not yet released stay valid until <see cref="ReleaseSnapshots"/>.</summary>
    public void Dispose()
    {
        foreach (var c in SelfAttention) c.Dispose();
        DropCross();
    }
}

using static TorchSharp.torch;

namespace FastVideo.Data;

/// <summary>
/// One conditioning input of a batch: its values, batch first, and an optional mask over its tokens
/// (1 = attend, 0 = padding).
/// </summary>
public sealed record ConditioningChannel(Tensor Values, Tensor? Mask = null) : IDisposable
{
    public void Dispose()
    {
        Values.Dispose();
        Mask?.Dispose();
    }
}

/// <summary>
/// A batch's conditioning as named channels, so a family with another encoder layout needs no new fields in the
/// generic batch types: <see cref="Text"/> holds text tokens [B,L,D] with a mask [B,L] (Wan's umT5, HunyuanVideo's
/// LLaMA); <see cref="PooledText"/> a pooled vector [B,D] (HunyuanVideo's CLIP); image-to-video adds an image
/// channel. The unconditional side of classifier-free guidance is a second <see cref="Conditioning"/> with the same
/// channels. Owns its tensors.
/// </summary>
public sealed class Conditioning : IDisposable
{
    public const string Text = "text";
    public const string PooledText = "pooled_text";

    private readonly Dictionary<string, ConditioningChannel> _channels;

    public Conditioning(IEnumerable<KeyValuePair<string, ConditioningChannel>> channels)
    {
        _channels = new Dictionary<string, ConditioningChannel>(channels, StringComparer.Ordinal);
        if (_channels.Count == 0) throw new ArgumentException("conditioning needs at least one channel");
    }

    /// <summary>Text tokens and their mask only: the layout of FastVideo's T2V parquet data.</summary>
    public static Conditioning FromText(Tensor embeddings, Tensor mask) =>
        new([new(Text, new ConditioningChannel(embeddings, mask))]);

    public IReadOnlyCollection<string> Names => _channels.Keys;

    public bool Has(string name) => _channels.ContainsKey(name);

    public bool TryGet(string name, out ConditioningChannel channel) => _channels.TryGetValue(name, out channel!);

    /// <summary>A channel the caller's family requires; its absence is a data or setup mistake, said by name.</summary>
    public ConditioningChannel this[string name] => _channels.TryGetValue(name, out var c)
        ? c
        : throw new UserError($"the batch has no '{name}' conditioning (it has: {string.Join(", ", _channels.Keys)})");

    public long BatchSize => _channels.Values.First().Values.shape[0];

    /// <summary>A new conditioning with every tensor passed through <paramref name="map"/> (device, dtype, expand).</summary>
    public Conditioning Map(Func<Tensor, Tensor> map) =>
        new(_channels.Select(kv => KeyValuePair.Create(kv.Key,
            new ConditioningChannel(map(kv.Value.Values), kv.Value.Mask is null ? null : map(kv.Value.Mask)))));

    /// <summary>A new conditioning whose channels are built per channel (for per-channel policies).</summary>
    public Conditioning Select(Func<string, ConditioningChannel, ConditioningChannel> map) =>
        new(_channels.Select(kv => KeyValuePair.Create(kv.Key, map(kv.Key, kv.Value))));

    /// <summary>
    /// This conditioning for a batch of <paramref name="batch"/>: one row (a single negative prompt) is expanded,
    /// <paramref name="batch"/> rows are kept; <paramref name="what"/> names the source in the error otherwise.
    /// </summary>
    public Conditioning ExpandTo(long batch, string what)
    {
        long n = BatchSize;
        if (n != 1 && n != batch)
            throw new UserError($"{what}: holds {n} rows of conditioning; expected 1 (shared by every sample) or the batch size {batch}");
        return Map(t => n == batch ? t.alias() : t.expand([batch, .. t.shape[1..]]).contiguous());
    }

    /// <summary>Rows <paramref name="start"/>..+<paramref name="length"/> of every channel (views).</summary>
    public Conditioning Narrow(long start, long length) => Map(t => t.narrow(0, start, length));

    /// <summary>Hands every tensor to the enclosing dispose scope (returns this, for chaining).</summary>
    public Conditioning MoveToOuterDisposeScope() => Each(t => t.MoveToOuterDisposeScope());

    /// <summary>Takes every tensor out of dispose scopes: this object owns them from now on.</summary>
    public Conditioning DetachFromDisposeScope() => Each(t => t.DetachFromDisposeScope());

    private Conditioning Each(Action<Tensor> action)
    {
        foreach (var c in _channels.Values)
        {
            action(c.Values);
            if (c.Mask is not null) action(c.Mask);
        }
        return this;
    }

    public void Dispose()
    {
        foreach (var c in _channels.Values) c.Dispose();
    }
}

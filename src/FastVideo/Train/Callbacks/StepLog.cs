using static TorchSharp.torch;

namespace FastVideo.Train.Callbacks;

/// <summary>
/// One step's log: scalar tensors (kept on the device until <see cref="Materialize"/> reads them all with one
/// transfer, so a step synchronises once), plain numbers, and images for the trackers that show them.
/// </summary>
public sealed class StepLog
{
    private readonly List<(string Key, Tensor Value)> _pending = new();

    public SortedDictionary<string, double> Values { get; } = new(StringComparer.Ordinal);

    public List<Tracking.TrackedImage> Images { get; } = new();

    public void Add(string key, Tensor scalar) => _pending.Add((key, scalar.detach()));

    public void Add(string key, double value) => Values[key] = value;

    /// <summary>Moves every pending tensor into <see cref="Values"/> with one device-to-host copy.</summary>
    public void Materialize()
    {
        if (_pending.Count == 0) return;
        using var scope = NewDisposeScope();
        var all = stack(_pending.Select(p => p.Value.reshape(1).to(ScalarType.Float64)).ToArray()).cpu();
        var values = all.data<double>().ToArray();
        for (int i = 0; i < _pending.Count; i++) Values[_pending[i].Key] = values[i];
        _pending.Clear();
    }
}

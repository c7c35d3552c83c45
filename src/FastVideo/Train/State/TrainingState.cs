using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace FastVideo.Train.State;

/// <summary>
/// Everything a checkpoint holds besides the role weights: tensors (optimizer moments, EMA shadows, generator
/// states) under dotted keys, and small JSON values (steps, scheduler counters, loader positions). Components write
/// and read through <see cref="StateScope"/>s so each owns a key prefix (<c>optimizers.student</c>, <c>callbacks.ema</c>).
/// </summary>
public sealed class TrainingState : IDisposable
{
    public TrainingState(string source = "(memory)") { Source = source; }

    /// <summary>Where the state came from, for error messages.</summary>
    public string Source { get; }
    public Dictionary<string, Tensor> Tensors { get; } = new(StringComparer.Ordinal);
    public JsonObject Values { get; } = new();
    public StateScope Root => new(this, "");

    public void Dispose()
    {
        foreach (var t in Tensors.Values) t.Dispose();
        Tensors.Clear();
    }
}

public readonly record struct StateScope(TrainingState State, string Prefix)
{
    private string Key(string key) => Prefix.Length == 0 ? key : $"{Prefix}.{key}";

    public StateScope Scope(string name) => new(State, Key(name));

    /// <summary>Stores a CPU snapshot of <paramref name="t"/> (the checkpoint must not alias live training tensors).</summary>
    public void PutTensor(string key, Tensor t) => State.Tensors[Key(key)] = t.detach().cpu().clone().contiguous().DetachFromDisposeScope();

    public void PutValue<T>(string key, T value) => State.Values[Key(key)] = JsonSerializer.SerializeToNode(value);

    public void PutNode(string key, JsonNode? node) => State.Values[Key(key)] = node?.DeepClone();

    public bool HasValue(string key) => State.Values.ContainsKey(Key(key));

    public bool HasTensor(string key) => State.Tensors.ContainsKey(Key(key));

    public Tensor GetTensor(string key, long[]? expectShape = null)
    {
        if (!State.Tensors.TryGetValue(Key(key), out var t))
            throw new UserError($"checkpoint '{State.Source}' has no tensor '{Key(key)}' (was it written by a different recipe?)");
        if (expectShape is not null && !t.shape.SequenceEqual(expectShape))
            throw new UserError($"checkpoint '{State.Source}': tensor '{Key(key)}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", expectShape)}]");
        return t;
    }

    public T GetValue<T>(string key)
    {
        if (!State.Values.TryGetPropertyValue(Key(key), out var node) || node is null)
            throw new UserError($"checkpoint '{State.Source}' has no value '{Key(key)}' (was it written by a different recipe?)");
        return node.Deserialize<T>()!;
    }

    public JsonNode? GetNode(string key) => State.Values.TryGetPropertyValue(Key(key), out var node) ? node : null;

    /// <summary>Tensor keys under this scope, relative to it.</summary>
    public IEnumerable<string> TensorKeys()
    {
        var p = Prefix.Length == 0 ? "" : Prefix + ".";
        return State.Tensors.Keys.Where(k => k.StartsWith(p, StringComparison.Ordinal)).Select(k => k[p.Length..]);
    }
}

using System.Globalization;

namespace FastVideo.Train;

/// <summary>
/// Typed reading of a free option map from the recipe (<c>method</c>, <c>callbacks.&lt;name&gt;</c>): each getter
/// names the full key path in its error, and <see cref="RejectUnknown"/> catches typos.
/// </summary>
public sealed class Options
{
    private readonly IReadOnlyDictionary<string, object?> _map;
    private readonly HashSet<string> _read = new(StringComparer.Ordinal);

    public Options(IReadOnlyDictionary<string, object?> map, string path) { _map = map; Path = path; }

    public string Path { get; }

    private bool TryGet(string key, out object? value)
    {
        _read.Add(key);
        return _map.TryGetValue(key, out value) && value is not null;
    }

    public double Double(string key, double fallback)
    {
        if (!TryGet(key, out var v)) return fallback;
        return v switch
        {
            double d => d,
            long l => l,
            _ => throw new UserError($"{Path}.{key}: expected a number, got {Describe(v)}"),
        };
    }

    public int Int(string key, int fallback)
    {
        if (!TryGet(key, out var v)) return fallback;
        return v switch
        {
            long l when l is >= int.MinValue and <= int.MaxValue => (int)l,
            double d when Math.Floor(d) == d && Math.Abs(d) < int.MaxValue => (int)d,
            _ => throw new UserError($"{Path}.{key}: expected an integer, got {Describe(v)}"),
        };
    }

    public bool Bool(string key, bool fallback)
    {
        if (!TryGet(key, out var v)) return fallback;
        return v is bool b ? b : throw new UserError($"{Path}.{key}: expected true or false, got {Describe(v)}");
    }

    public string? String(string key, string? fallback)
    {
        if (!TryGet(key, out var v)) return fallback;
        return v is string s ? s : throw new UserError($"{Path}.{key}: expected a string, got {Describe(v)}");
    }

    /// <summary>A list of integers: a YAML list, or a comma-separated string (as <c>--set key=40,8</c> gives).</summary>
    public IReadOnlyList<int>? IntList(string key, IReadOnlyList<int>? fallback) =>
        ListOf(key, fallback, "an integer", item => item switch
        {
            long l when l is >= int.MinValue and <= int.MaxValue => (true, (int)l),
            double d when Math.Floor(d) == d && Math.Abs(d) < int.MaxValue => (true, (int)d),
            string s when int.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var i) => (true, i),
            _ => (false, 0),
        });

    /// <summary>A list of numbers (a YAML list, or "a,b" as <c>--set</c> gives it).</summary>
    public IReadOnlyList<double>? DoubleList(string key, IReadOnlyList<double>? fallback) =>
        ListOf(key, fallback, "a number", item => item switch
        {
            long l => (true, l),
            double d => (true, d),
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var x) => (true, x),
            _ => (false, 0.0),
        });

    /// <summary>A list of strings. A single string is a one-item list (not split: prompts contain commas).</summary>
    public IReadOnlyList<string>? StringList(string key, IReadOnlyList<string>? fallback)
    {
        if (TryGet(key, out var v) && v is string s) return [s];
        return ListOf(key, fallback, "a string", item => item is string t ? (true, t) : (false, ""));
    }

    private IReadOnlyList<T>? ListOf<T>(string key, IReadOnlyList<T>? fallback, string what, Func<object?, (bool Ok, T Value)> convert)
    {
        if (!TryGet(key, out var v)) return fallback;
        IEnumerable<object?> items = v switch
        {
            System.Collections.IList list => list.Cast<object?>(),
            string s => s.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
            _ => throw new UserError($"{Path}.{key}: expected a list, got {Describe(v)}"),
        };
        var result = new List<T>();
        foreach (var (item, i) in items.Select((x, i) => (x, i)))
        {
            var (ok, value) = convert(item);
            if (!ok) throw new UserError($"{Path}.{key}[{i}]: expected {what}, got {Describe(item)}");
            result.Add(value);
        }
        return result;
    }

    /// <summary>Marks keys that another component reads (so RejectUnknown accepts them).</summary>
    public void Allow(params string[] keys) { foreach (var k in keys) _read.Add(k); }

    /// <summary>Throws for the first key no getter asked for. Call after reading every option.</summary>
    public void RejectUnknown()
    {
        foreach (var key in _map.Keys)
            if (!_read.Contains(key) && key != "_target_")
                throw new UserError($"{Path}.{key}: unknown option (known: {string.Join(", ", _read.Order(StringComparer.Ordinal))})");
    }

    private static string Describe(object? v) => v switch
    {
        string s => $"'{s}'",
        IDictionary<string, object?> => "a map",
        System.Collections.IList => "a list",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v?.ToString() ?? "null",
    };
}

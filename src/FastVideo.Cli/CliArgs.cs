namespace FastVideo.Cli;

/// <summary>
/// Minimal option parser: <c>--name value</c>, <c>--name=value</c>, boolean flags, repeated options and positionals.
/// Unknown options are a usage error that names the valid ones.
/// </summary>
public sealed class CliArgs
{
    private readonly Dictionary<string, List<string>> _values = new();
    private readonly HashSet<string> _flags = new();
    public List<string> Positionals { get; } = new();

    public static CliArgs Parse(IEnumerable<string> args, string usage, IEnumerable<string> valueOptions, IEnumerable<string>? flagOptions = null)
    {
        var valueSet = valueOptions.ToHashSet();
        var flagSet = (flagOptions ?? []).ToHashSet();
        var result = new CliArgs();
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            var a = list[i];
            if (!a.StartsWith("--") || a == "--") { result.Positionals.Add(a); continue; }
            string name = a[2..];
            string? value = null;
            int eq = name.IndexOf('=');
            if (eq >= 0) { value = name[(eq + 1)..]; name = name[..eq]; }
            if (flagSet.Contains(name))
            {
                if (value is not null) throw new UserError($"option --{name} takes no value\n{usage}");
                result._flags.Add(name);
            }
            else if (valueSet.Contains(name))
            {
                if (value is null)
                {
                    if (i + 1 >= list.Count) throw new UserError($"option --{name} needs a value\n{usage}");
                    value = list[++i];
                }
                if (!result._values.TryGetValue(name, out var l)) result._values[name] = l = new List<string>();
                l.Add(value);
            }
            else
            {
                var known = valueSet.Concat(flagSet).OrderBy(x => x).Select(x => "--" + x);
                throw new UserError($"unknown option --{name} (valid: {string.Join(", ", known)})\n{usage}");
            }
        }
        return result;
    }

    public bool Flag(string name) => _flags.Contains(name);
    public bool Has(string name) => _values.ContainsKey(name);
    public IReadOnlyList<string> All(string name) => _values.TryGetValue(name, out var l) ? l : [];
    public string? Get(string name) => _values.TryGetValue(name, out var l) ? l[^1] : null;
    public string Require(string name, string usage) => Get(name) ?? throw new UserError($"missing required option --{name}\n{usage}");

    public int Int(string name, string usage, int? fallback = null)
    {
        var s = Get(name);
        if (s is null) return fallback ?? throw new UserError($"missing required option --{name}\n{usage}");
        return int.TryParse(s, out var v) ? v : throw new UserError($"--{name}: expected an integer, got '{s}'");
    }

    public double Double(string name, string usage, double? fallback = null)
    {
        var s = Get(name);
        if (s is null) return fallback ?? throw new UserError($"missing required option --{name}\n{usage}");
        return double.TryParse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v)
            ? v : throw new UserError($"--{name}: expected a number, got '{s}'");
    }
}

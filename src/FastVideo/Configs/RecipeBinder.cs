using System.Collections;
using System.Globalization;
using System.Reflection;

namespace FastVideo.Configs;

/// <summary>
/// Binds raw nodes into the typed recipe records by reflection over their <c>init</c> properties: <c>training:</c>,
/// the roles' family records, the method's and the callbacks' option records. Keys absent from the recipe keep the
/// record's default; a present key keeps its value as written (an explicit 0/false/"" is not replaced by the default,
/// unlike upstream). A C# <c>required</c> property that the recipe leaves out (or sets to null) is not an error at
/// once: it is collected, so <see cref="ThrowIfMissing"/> reports every missing value of the recipe in one message.
/// </summary>
internal sealed class RecipeBinder(string sourceName)
{
    private readonly List<RecipeError> _missing = [];
    private readonly List<RecipeNote> _notes = [];

    /// <summary>The notes recorded so far (<see cref="Note"/>), in order.</summary>
    public IReadOnlyList<RecipeNote> Notes => _notes;

    /// <summary>Records a note located at <paramref name="at"/> like <see cref="Error"/>.</summary>
    public void Note(RecipeNoteKind kind, RawNode? at, string path, string detail)
    {
        var note = at?.OverrideSource is { } source
            ? new RecipeNote(kind, source, null, path, detail)
            : new RecipeNote(kind, sourceName, at?.Line, path, detail);
        if (!_notes.Contains(note)) _notes.Add(note);
    }

    /// <summary>An error located at <paramref name="at"/>: its file line, or <c>--set</c> if an override wrote it.
    /// With no node (an absent top-level section) only the file is named.</summary>
    public RecipeError Error(RawNode? at, string path, string detail) =>
        at?.OverrideSource is { } source
            ? new RecipeError(source, null, path, detail)
            : new RecipeError(sourceName, at?.Line, path, detail);

    public RecipeError UnknownKey(RawScalar key, string path, IEnumerable<string> validKeys)
    {
        var valid = validKeys.ToList();
        var suggestion = Names.Suggest(key.Text, valid);
        return Error(key, path, suggestion is not null
            ? $"unknown key; did you mean '{suggestion}'?"
            : $"unknown key (valid keys: {string.Join(", ", valid)})");
    }

    /// <summary>Records a required value the recipe does not give; <paramref name="at"/> is the key or its map.</summary>
    public void Missing(RawNode? at, string path, string? hint = null) =>
        _missing.Add(Error(at, path, hint is null ? "required value is missing" : $"required value is missing ({hint})"));

    /// <summary>Throws one error naming every missing required value collected so far (none: returns).</summary>
    public void ThrowIfMissing()
    {
        if (_missing.Count > 0) throw RecipeError.Combine(_missing, sourceName, "required values are missing");
    }

    public static string Join(string path, string key) => path.Length == 0 ? key : $"{path}.{key}";

    public static bool IsNull(RawNode? node) => node is null or RawScalar { Value: null };

    /// <summary>Binds a map into a new <paramref name="type"/> record; an absent or null node gives the defaults
    /// (and records the required properties as missing).</summary>
    public object BindRecord(Type type, RawNode? node, string path)
    {
        var instance = RecordShape.CreateDefault(type);
        var properties = RecordShape.Of(type);
        if (!IsNull(node) && node is not RawMap)
            throw Error(node, path, $"expected a map, got {node!.Describe()}");
        var map = node as RawMap;

        var given = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, value) in map?.Entries ?? [])
        {
            var keyPath = Join(path, key.Text);
            var property = properties.FirstOrDefault(p => p.Key == key.Text).Property;
            if (property is null)
                throw UnknownKey(key, keyPath, properties.Select(p => p.Key));
            if (RecordShape.IsRequired(property) && IsNull(value))
                continue; // "key: null" on a required option reads as "not given"
            property.SetValue(instance, BindProperty(property, value, keyPath));
            given.Add(key.Text);
        }
        foreach (var (key, property) in properties)
            if (RecordShape.IsRequired(property) && !given.Contains(key))
                Missing(map?.Get(key) ?? node, Join(path, key), RequiredHint(property.PropertyType));
        return instance;
    }

    private static string? RequiredHint(Type type)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        return type.IsEnum ? $"one of: {string.Join(", ", RecordShape.EnumChoices(type))}" : null;
    }

    private object? BindProperty(PropertyInfo property, RawNode node, string path)
    {
        // The two keys that accept several spellings (reference spec 1.3 / our data_path extension).
        if (property.DeclaringType == typeof(OptimizerConfig) && property.Name == nameof(OptimizerConfig.Betas))
            return BindBetas(node, path);
        if (property.PropertyType == typeof(IReadOnlyList<DataSource>))
            return BindDataPath(node, path);

        var type = property.PropertyType;
        bool nullable = RecordShape.IsNullable(property);
        if (node is RawScalar { Value: string text } && type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IReadOnlyList<>))
        {
            // The two opt-in scalar forms of a list: "1000,757" for numbers, "a prompt" for strings.
            if (property.IsDefined(typeof(CommaSeparatedAttribute)))
                node = new RawList(text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                    .Select(item => (RawNode)new RawScalar(RawYaml.ResolvePlain(item), item, node.Line, node.OverrideSource)).ToList(),
                    node.Line, node.OverrideSource);
            else if (property.IsDefined(typeof(SingleStringAsListAttribute)))
                node = new RawList([node], node.Line, node.OverrideSource);
        }
        return Bind(type, nullable, node, path);
    }

    private object? Bind(Type type, bool nullable, RawNode node, string path)
    {
        if (Nullable.GetUnderlyingType(type) is { } underlying)
        {
            type = underlying;
            nullable = true;
        }

        if (IsNull(node))
        {
            if (nullable) return null;
            // "section:" with nothing under it means "all defaults" / "no entries", not an error.
            if (type == typeof(IReadOnlyDictionary<string, object?>)) return new Dictionary<string, object?>();
            if (RecordShape.IsRecord(type)) return BindRecord(type, null, path);
            throw Error(node, path, $"expected {Expected(type)}, got null");
        }

        if (type == typeof(string))
        {
            // A scalar the YAML resolved to a number or bool (run_name: 2024) is taken as written.
            if (node is RawScalar s) return s.Value as string ?? s.Text;
            throw Error(node, path, $"expected a string, got {node.Describe()}");
        }
        if (type == typeof(int) || type == typeof(long))
        {
            if (node is RawScalar s && AsInteger(s.Value) is { } l)
            {
                if (type == typeof(long)) return l;
                if (l is >= int.MinValue and <= int.MaxValue) return (int)l;
                throw Error(node, path, $"expected an integer in [{int.MinValue}, {int.MaxValue}], got {s.Text}");
            }
            throw Error(node, path, $"expected an integer, got {node.Describe()}");
        }
        if (type == typeof(double))
        {
            if (node is RawScalar { Value: double d }) return d;
            if (node is RawScalar { Value: long l }) return (double)l;
            throw Error(node, path, $"expected a number, got {node.Describe()}");
        }
        if (type == typeof(bool))
        {
            if (node is RawScalar { Value: bool b }) return b;
            throw Error(node, path, $"expected true or false, got {node.Describe()}");
        }
        if (type.IsEnum)
        {
            var names = RecordShape.EnumNames(type);
            if (node is RawScalar { Value: string text }
                && names.FirstOrDefault(n => string.Equals(n.Name, text.Trim(), StringComparison.OrdinalIgnoreCase)) is { Value: { } value })
                return value;
            var choices = RecordShape.EnumChoices(type);
            var suggestion = node is RawScalar s ? Names.Suggest(s.Text, names.Select(n => n.Name)) : null;
            var hint = suggestion is null ? "" : $"; did you mean '{suggestion}'?";
            throw Error(node, path, $"invalid value {node.Describe()}{hint} (expected one of: {string.Join(", ", choices)})");
        }
        if (type == typeof(IReadOnlyDictionary<string, object?>))
            return FreeMap(node, path);
        if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IReadOnlyList<>))
        {
            if (node is not RawList list)
                throw Error(node, path, $"expected a list, got {node.Describe()}");
            var elementType = type.GetGenericArguments()[0];
            var result = (IList)Activator.CreateInstance(typeof(List<>).MakeGenericType(elementType))!;
            for (int i = 0; i < list.Items.Count; i++)
                result.Add(Bind(elementType, false, list.Items[i], $"{path}[{i}]"));
            return result;
        }
        if (RecordShape.IsRecord(type))
            return BindRecord(type, node, path);

        throw new NotSupportedException($"recipe binder: property type {type} at {path} is not supported");
    }

    // Integral floats (1e3 for a step count) are accepted; 1.5 is not.
    private static long? AsInteger(object? value) => value switch
    {
        long l => l,
        double d when Math.Abs(d) < 9.2e18 && Math.Floor(d) == d => (long)d,
        _ => null,
    };

    private static string Expected(Type type) =>
        type == typeof(int) || type == typeof(long) ? "an integer"
        : type == typeof(double) ? "a number"
        : type == typeof(bool) ? "true or false"
        : type == typeof(string) ? "a string"
        : type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IReadOnlyList<>) ? "a list"
        : type.IsEnum ? $"one of {string.Join(", ", RecordShape.EnumChoices(type))}"
        : "a map";

    /// <summary>A free-form map (moba_config, a method's cfg_uncond, any IReadOnlyDictionary option) as plain .NET values.</summary>
    public IReadOnlyDictionary<string, object?> FreeMap(RawNode? node, string path)
    {
        if (IsNull(node)) return new Dictionary<string, object?>();
        if (node is not RawMap map) throw Error(node, path, $"expected a map, got {node!.Describe()}");
        return (Dictionary<string, object?>)ToPlain(map)!;
    }

    /// <summary>A plain value (what <see cref="ToPlain"/> gives, or code-built: int, float, arrays, dictionaries)
    /// as a raw node with no line, so code-built options go through the same binder as YAML.</summary>
    public static RawNode FromPlain(object? value) => value switch
    {
        null => new RawScalar(null, "null", null, null),
        string s => new RawScalar(s, s, null, null),
        bool b => new RawScalar(b, b ? "true" : "false", null, null),
        int or long or short or byte => new RawScalar(System.Convert.ToInt64(value, CultureInfo.InvariantCulture),
            System.Convert.ToString(value, CultureInfo.InvariantCulture)!, null, null),
        float or double => new RawScalar(System.Convert.ToDouble(value, CultureInfo.InvariantCulture),
            System.Convert.ToDouble(value, CultureInfo.InvariantCulture).ToString("R", CultureInfo.InvariantCulture), null, null),
        IEnumerable<KeyValuePair<string, object?>> map => PlainMap(map),
        IEnumerable list => new RawList(list.Cast<object?>().Select(FromPlain).ToList(), null, null),
        _ => throw new ArgumentException($"cannot bind a {value.GetType()} as a recipe value"),
    };

    private static RawMap PlainMap(IEnumerable<KeyValuePair<string, object?>> entries)
    {
        var map = new RawMap(null, null);
        foreach (var (key, value) in entries) map.Entries.Add((new RawScalar(key, key, null, null), FromPlain(value)));
        return map;
    }

    /// <summary>Raw node -> Dictionary&lt;string, object?&gt; (recipe order), List&lt;object?&gt;, bool, long,
    /// double, string or null.</summary>
    public static object? ToPlain(RawNode node) => node switch
    {
        RawScalar s => s.Value,
        RawList l => l.Items.Select(ToPlain).ToList(),
        RawMap m => m.Entries.ToDictionary(e => e.Key.Text, e => ToPlain(e.Value)),
        _ => throw new InvalidOperationException(node.GetType().Name),
    };

    /// <summary><c>betas</c>: a list <c>[b1, b2]</c> or a string <c>"b1,b2"</c> (upstream accepts both).</summary>
    private IReadOnlyList<double> BindBetas(RawNode node, string path)
    {
        const string expected = "expected two numbers, as [b1, b2] or \"b1,b2\"";
        if (node is RawList { Items.Count: 2 } list
            && list.Items.All(i => i is RawScalar { Value: double or long }))
            return list.Items.Select(i => System.Convert.ToDouble(((RawScalar)i).Value, CultureInfo.InvariantCulture)).ToList();
        if (node is RawScalar { Value: string text })
        {
            var parts = text.Split(',');
            var values = new List<double>();
            foreach (var part in parts)
            {
                if (!double.TryParse(part.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v)) break;
                values.Add(v);
            }
            if (parts.Length == 2 && values.Count == 2) return values;
        }
        throw Error(node, path, $"{expected}, got {node.Describe()}");
    }

    /// <summary>
    /// <c>data_path</c>: one folder (a string), several folders (a list, each weight 1), or a map folder -> repeat
    /// weight (a positive integer). Null means no data.
    /// </summary>
    private IReadOnlyList<DataSource> BindDataPath(RawNode node, string path)
    {
        if (IsNull(node)) return [];
        switch (node)
        {
            case RawScalar scalar:
                return [new DataSource(Folder(scalar, path), 1)];
            case RawList list:
                return list.Items.Select((item, i) => item is RawScalar s && !IsNull(s)
                        ? new DataSource(Folder(s, $"{path}[{i}]"), 1)
                        : throw Error(item, $"{path}[{i}]", $"expected a folder path, got {item.Describe()}"))
                    .ToList();
            case RawMap map:
                var sources = new List<DataSource>();
                foreach (var (key, value) in map.Entries)
                {
                    var entryPath = $"{path}.{key.Text}";
                    var folder = Folder(key, entryPath);
                    if (value is not RawScalar { Value: long weight } || weight < 1 || weight > int.MaxValue)
                        throw Error(value, entryPath, $"expected a positive integer weight, got {value.Describe()}");
                    sources.Add(new DataSource(folder, (int)weight));
                }
                return sources;
            default:
                throw new InvalidOperationException(node.GetType().Name);
        }
    }

    private string Folder(RawScalar scalar, string path)
    {
        var folder = scalar.Value as string ?? scalar.Text;
        if (string.IsNullOrWhiteSpace(folder))
            throw Error(scalar, path, "expected a folder path, got an empty string");
        return folder;
    }
}

using System.Globalization;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace FastVideo.Configs;

// The untyped recipe: what the YAML file says, plus overrides, before binding to records. Every node remembers
// where it came from (file line, or an override) so binding errors can point at it.

internal abstract class RawNode
{
    protected RawNode(int? line, string? overrideSource)
    {
        Line = line;
        OverrideSource = overrideSource;
    }

    /// <summary>1-based line in the recipe file; null when the node has no line (override, synthesised).</summary>
    public int? Line { get; }

    /// <summary>The override that wrote the node (<c>--set</c>, or the flag of a <c>--a.b.c VALUE</c> override), null
    /// when it was read from the file.</summary>
    public string? OverrideSource { get; }

    /// <summary>True when the node was written by an override rather than read from the file.</summary>
    public bool FromOverride => OverrideSource is not null;

    /// <summary>A short description of the node for "got ..." in error messages.</summary>
    public abstract string Describe();
}

internal sealed class RawScalar : RawNode
{
    public RawScalar(object? value, string text, int? line, string? overrideSource) : base(line, overrideSource)
    {
        Value = value;
        Text = text;
    }

    /// <summary>The resolved value: null, bool, long, double or string.</summary>
    public object? Value { get; }

    /// <summary>The text as written (used when a string is expected but the YAML resolved it to e.g. a number).</summary>
    public string Text { get; }

    public override string Describe() => Value switch
    {
        null => "null",
        string s => $"\"{s}\"",
        bool b => b ? "true" : "false",
        _ => Text,
    };
}

internal sealed class RawList : RawNode
{
    public RawList(List<RawNode> items, int? line, string? overrideSource) : base(line, overrideSource) => Items = items;

    public List<RawNode> Items { get; }

    public override string Describe() => "a list";
}

internal sealed class RawMap : RawNode
{
    public RawMap(int? line, string? overrideSource) : base(line, overrideSource) { }

    /// <summary>Entries in recipe order. The key is a scalar node so an unknown key can be reported at its own line.</summary>
    public List<(RawScalar Key, RawNode Value)> Entries { get; } = [];

    public IEnumerable<string> Keys => Entries.Select(e => e.Key.Text);

    public RawNode? Get(string key)
    {
        foreach (var (k, v) in Entries)
            if (k.Text == key) return v;
        return null;
    }

    public bool TryGetEntry(string key, out RawScalar keyNode, out RawNode value)
    {
        foreach (var (k, v) in Entries)
        {
            if (k.Text != key) continue;
            keyNode = k;
            value = v;
            return true;
        }
        keyNode = null!;
        value = null!;
        return false;
    }

    /// <summary>Replaces the value of an existing key (keeping its position) or appends a new entry.</summary>
    public void Set(RawScalar key, RawNode value)
    {
        for (int i = 0; i < Entries.Count; i++)
        {
            if (Entries[i].Key.Text != key.Text) continue;
            Entries[i] = (key, value);
            return;
        }
        Entries.Add((key, value));
    }

    public override string Describe() => "a map";
}

/// <summary>Reads recipe YAML into a <see cref="RawMap"/>, resolving plain scalars with the YAML 1.2 core schema.</summary>
internal static partial class RawYaml
{
    public static RawMap ParseDocument(string yaml, string sourceName)
    {
        var stream = new YamlStream();
        var parser = new Parser(new StringReader(yaml));
        try
        {
            stream.Load(parser);
        }
        catch (YamlException e)
        {
            // YamlDotNet messages start with "(Line: 3, Col: 5, ...): "; we print our own location instead.
            var detail = e.InnerException is YamlException inner ? inner.Message : e.Message;
            detail = LocationPrefix().Replace(detail, "");
            // YamlDotNet reports a tab in the indentation at 1:1; point at the first such line instead.
            int line = detail.Contains("tab", StringComparison.OrdinalIgnoreCase) && FirstTabIndentedLine(yaml) is { } tabLine
                ? tabLine
                : (int)e.Start.Line;
            throw new RecipeError(sourceName, line, "", $"invalid YAML: {detail}");
        }
        catch (InvalidOperationException)
        {
            // YamlDotNet 16 throws this (not a YamlException) for e.g. a flow list left open across lines.
            int? line = parser.Current is { } last ? (int)last.Start.Line : null;
            throw new RecipeError(sourceName, line, "", "invalid YAML: unexpected text (an unclosed [ ... ] or { ... }?)");
        }

        if (stream.Documents.Count == 0) return new RawMap(null, null);
        if (stream.Documents.Count > 1)
            throw new RecipeError(sourceName, (int)stream.Documents[1].RootNode.Start.Line, "",
                "expected a single YAML document, found several");

        var root = stream.Documents[0].RootNode;
        var converted = Convert(root, sourceName, "", overrideSource: null);
        return converted switch
        {
            RawMap map => map,
            // An empty document ("" or only comments) comes back as a null scalar: an empty recipe.
            RawScalar { Value: null } => new RawMap(converted.Line, null),
            _ => throw new RecipeError(sourceName, converted.Line, "",
                $"expected a map of sections (recipe, roles, method, training, callbacks, pipeline), got {converted.Describe()}"),
        };
    }

    /// <summary>Parses a YAML flow value such as <c>[1, 2]</c> given in the override <paramref name="source"/>; null if
    /// it is not valid YAML.</summary>
    public static RawNode? TryParseFlow(string text, string source)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (Exception e) when (e is YamlException or InvalidOperationException)
        {
            return null;
        }
        if (stream.Documents.Count != 1) return null;
        try
        {
            return Convert(stream.Documents[0].RootNode, source, "", overrideSource: source);
        }
        catch (RecipeError)
        {
            return null;
        }
    }

    private static RawNode Convert(YamlNode node, string source, string path, string? overrideSource)
    {
        int? line = overrideSource is not null ? null : (int)node.Start.Line;
        switch (node)
        {
            case YamlScalarNode scalar:
                return Scalar(scalar, line, overrideSource);
            case YamlSequenceNode seq:
            {
                var items = new List<RawNode>(seq.Children.Count);
                for (int i = 0; i < seq.Children.Count; i++)
                    items.Add(Convert(seq.Children[i], source, $"{path}[{i}]", overrideSource));
                return new RawList(items, line, overrideSource);
            }
            case YamlMappingNode mapping:
            {
                var map = new RawMap(line, overrideSource);
                foreach (var (keyNode, valueNode) in mapping.Children)
                {
                    int? keyLine = overrideSource is not null ? null : (int)keyNode.Start.Line;
                    if (keyNode is not YamlScalarNode keyScalar)
                        throw new RecipeError(source, keyLine, path, "map keys must be plain names, not lists or maps");
                    var key = keyScalar.Value ?? "";
                    var keyPath = path.Length == 0 ? key : $"{path}.{key}";
                    if (map.Get(key) is not null)
                        throw new RecipeError(source, keyLine, keyPath, "duplicate key");
                    map.Entries.Add((new RawScalar(key, key, keyLine, overrideSource),
                        Convert(valueNode, source, keyPath, overrideSource)));
                }
                return map;
            }
            default:
                // Aliases are resolved by YamlStream; anything else is unexpected.
                throw new RecipeError(source, line, path, $"unsupported YAML node ({node.NodeType})");
        }
    }

    private static RawScalar Scalar(YamlScalarNode scalar, int? line, string? overrideSource)
    {
        var text = scalar.Value ?? "";
        // Quoted, block and explicitly !!str-tagged scalars are always strings; only plain scalars are resolved.
        bool isString = scalar.Style is not (ScalarStyle.Plain or ScalarStyle.Any)
                        || (!scalar.Tag.IsEmpty && scalar.Tag.Value == "tag:yaml.org,2002:str");
        return new RawScalar(isString ? text : ResolvePlain(text), text, line, overrideSource);
    }

    /// <summary>YAML 1.2 core schema: null, bool, int, float, else string. (So <c>1e-4</c> is a float, unlike PyYAML.)</summary>
    public static object? ResolvePlain(string text)
    {
        switch (text)
        {
            case "" or "~" or "null" or "Null" or "NULL":
                return null;
            case "true" or "True" or "TRUE":
                return true;
            case "false" or "False" or "FALSE":
                return false;
            case ".inf" or ".Inf" or ".INF" or "+.inf" or "+.Inf" or "+.INF":
                return double.PositiveInfinity;
            case "-.inf" or "-.Inf" or "-.INF":
                return double.NegativeInfinity;
            case ".nan" or ".NaN" or ".NAN":
                return double.NaN;
        }
        if (IntPattern().IsMatch(text))
        {
            if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l)) return l;
            // Too big for a long: keep the magnitude as a float rather than failing.
            return double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
        }
        if (text.StartsWith("0x", StringComparison.Ordinal) && text.Length > 2
            && long.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var hex))
            return hex;
        if (text.StartsWith("0o", StringComparison.Ordinal) && text.Length > 2 && text[2..].All(c => c is >= '0' and <= '7'))
        {
            try { return System.Convert.ToInt64(text[2..], 8); }
            catch (OverflowException) { return text; }
        }
        if (FloatPattern().IsMatch(text))
            return double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
        return text;
    }

    private static int? FirstTabIndentedLine(string yaml)
    {
        var lines = yaml.Split('\n');
        for (int i = 0; i < lines.Length; i++)
            if (lines[i].TakeWhile(char.IsWhiteSpace).Contains('\t')) return i + 1;
        return null;
    }

    [GeneratedRegex(@"^[-+]?[0-9]+$")]
    private static partial Regex IntPattern();

    [GeneratedRegex(@"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();

    [GeneratedRegex(@"^\(Line: \d+, Col: \d+, Idx: \d+\) - \(Line: \d+, Col: \d+, Idx: \d+\): ")]
    private static partial Regex LocationPrefix();
}

using System.Globalization;

namespace FastVideo.Configs;

/// <summary>
/// Dotted overrides, applied to the raw tree before binding as upstream does (reference spec 1.2). An item is
/// <c>a.b.c=VALUE</c> (what follows a <c>--set</c>) or <c>--a.b.c=VALUE</c> (FastVideo's flag, <c>--a.b.c VALUE</c> or
/// <c>--a.b.c=VALUE</c> on its command line); errors in a value name <c>--set</c> or that flag.
/// </summary>
internal static class RecipeOverrides
{
    public const string SourceName = "--set";

    /// <summary>Applies the overrides in order (a later one wins over an earlier one on the same key).</summary>
    public static void Apply(RawMap root, IReadOnlyList<string> overrides)
    {
        foreach (var item in overrides)
        {
            var (segments, value, source) = Parse(item);
            var map = root;
            for (int i = 0; i < segments.Length - 1; i++)
            {
                // Walk down, creating maps; an intermediate that is not a map is replaced by one (upstream does too),
                // so "--set method.x=1" works even when the recipe has "method: null".
                if (map.Get(segments[i]) is RawMap next)
                {
                    map = next;
                    continue;
                }
                var created = new RawMap(null, source);
                map.Set(Key(segments[i], source), created);
                map = created;
            }
            map.Set(Key(segments[^1], source), value);
        }
    }

    private static RawScalar Key(string name, string source) => new(name, name, null, source);

    private static (string[] Segments, RawNode Value, string Source) Parse(string item)
    {
        // "--a.b.c=VALUE": FastVideo's flag; the flag is where an error in its value came from.
        bool flag = item.StartsWith("--", StringComparison.Ordinal);
        var body = flag ? item[2..] : item;
        int eq = body.IndexOf('=');
        if (eq < 0)
            throw Malformed(item, flag, "no '='");
        var key = body[..eq].Trim();
        var source = flag ? "--" + key : SourceName;
        var segments = key.Split('.');
        if (key.Length == 0 || segments.Any(s => s.Length == 0))
            throw Malformed(item, flag, key.Length == 0 ? "empty key" : "empty key segment");
        return (segments, CastValue(body[(eq + 1)..], source), source);
    }

    private static RecipeError Malformed(string item, bool flag, string why) => flag
        ? new("command line", null, "", $"malformed override '{item}' ({why}); expected --KEY VALUE or --KEY=VALUE, e.g. --training.loop.max_train_steps 10")
        : new(SourceName, null, "", $"malformed override '{item}' ({why}); expected KEY=VALUE, e.g. training.loop.max_train_steps=10");

    /// <summary>Upstream's casting, first match wins: bool, null, integer, float, [flow list], else the raw string.</summary>
    public static RawNode CastValue(string text, string source = SourceName)
    {
        var t = text.Trim();
        object? value;
        if (t.Equals("true", StringComparison.OrdinalIgnoreCase)) value = true;
        else if (t.Equals("false", StringComparison.OrdinalIgnoreCase)) value = false;
        else if (t.Equals("none", StringComparison.OrdinalIgnoreCase) || t.Equals("null", StringComparison.OrdinalIgnoreCase))
            value = null;
        else if (long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l)) value = l;
        else if (TryParseFloat(t, out var d)) value = d;
        else if (t.StartsWith('[') && t.EndsWith(']') && RawYaml.TryParseFlow(t, source) is RawList list) return list;
        else value = text;
        return new RawScalar(value, text, null, source);
    }

    // Like Python's float(): decimal/exponent forms plus inf/nan words; no thousands separators or hex.
    private static bool TryParseFloat(string t, out double d)
    {
        switch (t.ToLowerInvariant())
        {
            case "inf" or "+inf" or "infinity" or "+infinity": d = double.PositiveInfinity; return true;
            case "-inf" or "-infinity": d = double.NegativeInfinity; return true;
            case "nan" or "+nan" or "-nan": d = double.NaN; return true;
        }
        return double.TryParse(t, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent,
            CultureInfo.InvariantCulture, out d);
    }
}

using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace FastVideo.Configs;

/// <summary>
/// Prints a resolved recipe as YAML: every default filled in, sections in the order recipe, roles, method, training,
/// callbacks, pipeline, nulls as <c>null</c>. The output is stable (same config, same text) and loads back with
/// <see cref="RecipeLoader.LoadText"/> into an equal config.
/// </summary>
public static partial class RecipePrinter
{
    public static string ToYaml(RunConfig config)
    {
        var sb = new StringBuilder();
        WriteMap(sb, RecipeTree.ToPlain(config), 0);
        return sb.ToString();
    }

    /// <summary>Prints the resolved recipe in <paramref name="form"/> (FastVideo's form names families, the method and
    /// callbacks by the class paths their registry entries declare; <see cref="RecipeTree.ToFastVideoPlain"/>).</summary>
    public static string ToYaml(RunConfig config, RecipeForm form, IFamilyCatalog families, IMethodCatalog methods, ICallbackCatalog callbacks) =>
        form == RecipeForm.FastVideo ? ToYaml(RecipeTree.ToFastVideoPlain(config, families, methods, callbacks)) : ToYaml(config);

    /// <summary>Prints any plain tree (as found in <see cref="RunConfig.Raw"/>) in the same style.</summary>
    public static string ToYaml(IReadOnlyDictionary<string, object?> tree)
    {
        var sb = new StringBuilder();
        WriteMap(sb, tree, 0);
        return sb.ToString();
    }

    // Block style for maps; lists of scalars on one line ([0.9, 0.999]); lists holding maps/lists as "- " items.
    private static void WriteMap(StringBuilder sb, IEnumerable<KeyValuePair<string, object?>> map, int indent)
    {
        var pad = new string(' ', indent);
        foreach (var (key, value) in map)
        {
            sb.Append(pad).Append(Scalar(key)).Append(':');
            WriteValue(sb, value, indent);
        }
    }

    /// <summary>Writes what follows "key:" (or "-"): " scalar\n", or a newline and a nested block.</summary>
    private static void WriteValue(StringBuilder sb, object? value, int indent)
    {
        switch (value)
        {
            case IEnumerable<KeyValuePair<string, object?>> map when map.Any():
                sb.Append('\n');
                WriteMap(sb, map, indent + 2);
                break;
            case IEnumerable<KeyValuePair<string, object?>>:
                sb.Append(" {}\n");
                break;
            case IEnumerable list and not string when IsFlowList(list):
                sb.Append(" [").AppendJoin(", ", list.Cast<object?>().Select(Scalar)).Append("]\n");
                break;
            case IEnumerable list and not string:
                sb.Append('\n');
                WriteBlockList(sb, list, indent + 2);
                break;
            default:
                sb.Append(' ').Append(Scalar(value)).Append('\n');
                break;
        }
    }

    /// <summary>"- item" lines at <paramref name="indent"/>; a map or list item starts on the dash line
    /// ("- a: 1" / "  b: 2"), the compact form YAML allows.</summary>
    private static void WriteBlockList(StringBuilder sb, IEnumerable list, int indent)
    {
        foreach (var item in list)
        {
            bool nestedBlock = item is IEnumerable<KeyValuePair<string, object?>> m ? m.Any()
                : item is IEnumerable l and not string && !IsFlowList(l);
            if (!nestedBlock)
            {
                sb.Append(' ', indent).Append('-');
                WriteValue(sb, item, indent);
                continue;
            }
            var inner = new StringBuilder();
            if (item is IEnumerable<KeyValuePair<string, object?>> map) WriteMap(inner, map, indent + 2);
            else WriteBlockList(inner, (IEnumerable)item!, indent + 2);
            // The first line's indentation becomes "<indent>- ".
            sb.Append(' ', indent).Append("- ").Append(inner, indent + 2, inner.Length - (indent + 2));
        }
    }

    private static bool IsFlowList(IEnumerable list) =>
        list.Cast<object?>().All(item => item is null or string or bool or long or int or double or float);

    private static string Scalar(object? value) => value switch
    {
        null => "null",
        bool b => b ? "true" : "false",
        long or int => Convert.ToString(value, CultureInfo.InvariantCulture)!,
        double or float => Float(Convert.ToDouble(value, CultureInfo.InvariantCulture)),
        string s => String(s),
        _ => throw new ArgumentException($"cannot print a {value.GetType()} as a YAML scalar"),
    };

    // Always looks like a float (1.0, not 1) so it reads back as a double even in a free map.
    private static string Float(double d)
    {
        if (double.IsNaN(d)) return ".nan";
        if (double.IsPositiveInfinity(d)) return ".inf";
        if (double.IsNegativeInfinity(d)) return "-.inf";
        var text = d.ToString("R", CultureInfo.InvariantCulture);
        if (text.Contains('E'))
        {
            // 1E-08 -> 1.0e-08: a mantissa with a dot is the common YAML spelling.
            var parts = text.Split('E');
            var mantissa = parts[0].Contains('.') ? parts[0] : parts[0] + ".0";
            return $"{mantissa}e{parts[1]}";
        }
        return text.Contains('.') ? text : text + ".0";
    }

    // Plain when it cannot be misread (not null/bool/number, no YAML indicator characters); otherwise double-quoted.
    private static string String(string s)
    {
        // YAML 1.1 readers (PyYAML) take yes/no/on/off as booleans, so those are quoted too.
        if (PlainSafe().IsMatch(s) && RawYaml.ResolvePlain(s) is string && !Yaml11Bool().IsMatch(s)) return s;
        var sb = new StringBuilder("\"");
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (char.IsControl(c)) sb.Append($"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    // A leading digit is quoted too: YAML 1.1 readers would take 1_000 or 1:30 as numbers.
    [GeneratedRegex(@"^[A-Za-z_./][A-Za-z0-9_./+@=-]*$")]
    private static partial Regex PlainSafe();

    [GeneratedRegex(@"^(y|n|yes|no|on|off)$", RegexOptions.IgnoreCase)]
    private static partial Regex Yaml11Bool();
}

using System.Text;

namespace FastVideo.Configs;

/// <summary>
/// The options of a recipe record (a family's role record, a method's or a callback's options) with their types,
/// defaults and descriptions, as <c>fastvideo families</c> and <c>fastvideo methods</c> list them.
/// </summary>
public static class OptionListing
{
    /// <summary>The options of <paramref name="recordType"/> in declaration order, base record first.</summary>
    public static IReadOnlyList<OptionInfo> Describe(Type recordType) => RecordShape.Describe(recordType);

    /// <summary>
    /// One line per option, <c>{indent}key  type  default X  description</c>; a record with no options writes
    /// <c>{indent}(no options)</c>.
    /// </summary>
    public static string Format(Type recordType, string indent)
    {
        var options = Describe(recordType);
        if (options.Count == 0) return $"{indent}(no options)\n";
        int keyWidth = Math.Max(24, options.Max(o => o.Key.Length));
        int typeWidth = Math.Max(8, options.Max(o => o.Type.Length));
        int defaultWidth = Math.Max(8, options.Max(o => o.Default.Length));
        var sb = new StringBuilder();
        foreach (var o in options)
        {
            var line = $"{indent}{o.Key.PadRight(keyWidth)} {o.Type.PadRight(typeWidth)} " +
                       (o.Required ? o.Default.PadRight(defaultWidth + 8) : $"default {o.Default.PadRight(defaultWidth)}") +
                       (o.Description.Length > 0 ? $"  {o.Description}" : "");
            sb.Append(line.TrimEnd()).Append('\n');
        }
        return sb.ToString();
    }
}

using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using FastVideo.Data.Synthetic;

namespace FastVideo.Cli;

/// <summary>
/// Options and arguments shared by the commands, on System.CommandLine. Numbers and choices are parsed here so a
/// bad value is a parse error that names the option (<c>--frames expects an integer, got 'many'</c>); the defaults
/// given here are the ones <c>--help</c> shows.
/// </summary>
internal static class CliOptions
{
    public static Option<string> Text(string name, string helpName, string description) =>
        new(name) { HelpName = helpName, Description = description };

    public static Option<bool> Flag(string name, string description) => new(name) { Description = description };

    /// <summary>A repeatable <c>KEY=VALUE</c> option (<c>--set a=1 --set b=2</c>, or <c>--set=a=1</c>).</summary>
    public static Option<string[]> Set(string name, string description) =>
        new(name) { HelpName = "KEY=VALUE", Description = description, DefaultValueFactory = _ => [] };

    public static Option<int> Int(string name, string description, string helpName = "N") =>
        Parsed(name, description, helpName, "an integer", (string s, out int v) => int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out v));

    public static Option<int?> OptionalInt(string name, string description, string helpName = "N") =>
        Parsed(name, description, helpName, "an integer", (string s, out int? v) =>
        {
            v = int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : null;
            return v is not null;
        });

    public static Option<double?> OptionalDouble(string name, string description, string helpName = "X") =>
        Parsed(name, description, helpName, "a number", (string s, out double? v) =>
        {
            v = double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var n) ? n : null;
            return v is not null;
        });

    public static Option<long> Long(string name, string description, string helpName = "N") =>
        Parsed(name, description, helpName, "an integer", (string s, out long v) => long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out v));

    public static Option<double> Double(string name, string description, string helpName = "X") =>
        Parsed(name, description, helpName, "a number", (string s, out double v) => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out v));

    /// <summary>A memory size: 16GiB, 512MiB, 16G (binary units), or bytes.</summary>
    public static Option<long?> Size(string name, string description, string helpName = "SIZE") =>
        Parsed(name, description, helpName, "a size such as 16GiB, 512MiB or 16G", (string s, out long? v) => (v = Train.MemoryFit.ParseSize(s)) is not null);

    /// <summary>
    /// One of an enum's values by its lower-case word (the spelling classes.json uses). Null when not given: the
    /// caller's default applies, and <paramref name="description"/> should name it.
    /// </summary>
    public static Option<T?> Choice<T>(string name, string description) where T : struct, Enum
    {
        var words = Enum.GetValues<T>().Select(e => SyntheticPalette.Word(e)).ToArray();
        var option = Parsed(name, description, string.Join('|', words), $"one of {string.Join(", ", words)}",
            (string s, out T? v) => (v = SyntheticPalette.FromWord<T>(s)) is not null);
        option.CompletionSources.Clear(); // System.CommandLine's own would offer the enum's names (Edge) too
        option.CompletionSources.Add(words);
        return option;
    }

    /// <summary>One of <paramref name="words"/>, as given.</summary>
    public static Option<string> OneOf(string name, string description, params string[] words)
    {
        var option = Parsed(name, description, string.Join('|', words), $"one of {string.Join(", ", words)}",
            (string s, out string v) => words.Contains(v = s));
        option.CompletionSources.Add(words);
        return option;
    }

    public static Option<T> WithDefault<T>(this Option<T> option, T value)
    {
        option.DefaultValueFactory = _ => value;
        return option;
    }

    public static Option<T> AsRequired<T>(this Option<T> option)
    {
        option.Required = true;
        return option;
    }

    /// <summary>A positional argument with its usage name (RECIPE, CHECKPOINT, DIR).</summary>
    public static Argument<string> Positional(string name, string description) =>
        new(name) { HelpName = name, Description = description };

    private delegate bool TryParse<T>(string text, out T value);

    private static Option<T> Parsed<T>(string name, string description, string helpName, string expects, TryParse<T> parse)
    {
        var option = new Option<T>(name) { HelpName = helpName, Description = description };
        option.CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
            if (parse(text, out var value)) return value;
            result.AddError($"{name} expects {expects}, got '{text}'");
            return default!;
        };
        return option;
    }
}

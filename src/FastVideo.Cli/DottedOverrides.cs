namespace FastVideo.Cli;

/// <summary>
/// FastVideo's command-line overrides, <c>--a.b.c VALUE</c> and <c>--a.b.c=VALUE</c>
/// (<c>fastvideo/train/utils/config.py</c> <c>_parse_cli_overrides</c>), taken out of the arguments of the commands
/// that read a recipe (<c>train</c>, <c>config show</c>, <c>config convert</c>) before System.CommandLine parses the
/// rest (which would otherwise take VALUE for the RECIPE argument). A flag whose name has a dot is an override; its
/// value is the next word as it is, even when it starts with <c>--</c>, as upstream. Unlike upstream a name without a
/// dot stays an option (so a mistyped <c>--dryrun</c> is an unknown option, not a top-level key).
/// </summary>
public static class DottedOverrides
{
    /// <summary>Options of those commands that take a value (their value is never an override).</summary>
    private static readonly string[] ValueOptions = ["--set", "--config", "--out"];

    /// <summary>
    /// The arguments without the overrides, and the overrides as <c>--a.b.c=VALUE</c> items for
    /// <see cref="Configs.RecipeLoader"/>, in order. Other commands' arguments are returned unchanged.
    /// </summary>
    /// <exception cref="UserError">An override flag is the last word (it has no value).</exception>
    public static (string[] Args, IReadOnlyList<string> Overrides) Extract(string[] args)
    {
        int start = args is ["train", ..] ? 1 : args is ["config", "show" or "convert", ..] ? 2 : -1;
        if (start < 0) return (args, []);
        var rest = new List<string>(args[..start]);
        var overrides = new List<string>();
        for (int i = start; i < args.Length; i++)
        {
            var word = args[i];
            if (word == "--")
            {
                rest.AddRange(args[i..]);
                break;
            }
            if (ValueOptions.Contains(word) && i + 1 < args.Length)
            {
                rest.Add(word);
                rest.Add(args[++i]);
                continue;
            }
            if (!IsOverride(word))
            {
                rest.Add(word);
                continue;
            }
            if (word.Contains('='))
            {
                overrides.Add(word);
                continue;
            }
            if (i + 1 >= args.Length)
                throw new UserError($"{word}: missing value for the override (give --KEY VALUE or --KEY=VALUE, e.g. {word} 10)");
            overrides.Add($"{word}={args[++i]}");
        }
        return (rest.ToArray(), overrides);
    }

    /// <summary><c>--a.b</c> or <c>--a.b=...</c>: two dashes, then a dotted key.</summary>
    private static bool IsOverride(string word)
    {
        if (!word.StartsWith("--", StringComparison.Ordinal) || word.Length < 3 || word[2] == '-') return false;
        var name = word[2..];
        int eq = name.IndexOf('=');
        if (eq >= 0) name = name[..eq];
        return name.Contains('.');
    }
}

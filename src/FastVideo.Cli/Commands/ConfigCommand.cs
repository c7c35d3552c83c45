using FastVideo.Configs;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo config show RECIPE [--set KEY=VALUE]...</c>: prints the resolved recipe with every default.</summary>
public static class ConfigCommand
{
    public const string Usage = "usage: fastvideo config show RECIPE [--set KEY=VALUE]...";

    /// <summary>
    /// <paramref name="args"/> are the words after "config". Returns the exit code (0). Recipe mistakes surface as
    /// <see cref="RecipeError"/> and bad usage as <see cref="UserError"/>, both printed by the CLI's top level.
    /// </summary>
    public static int Run(string[] args, IFamilyCatalog families, TextWriter stdout)
    {
        if (args.Length == 0)
            throw new UserError($"config: missing subcommand\n{Usage}");
        if (args[0] != "show")
            throw new UserError($"config: unknown subcommand '{args[0]}'\n{Usage}");

        string? recipe = null;
        var overrides = new List<string>();
        for (int i = 1; i < args.Length; i++)
        {
            var arg = args[i];
            if (arg == "--set")
            {
                if (i + 1 >= args.Length)
                    throw new UserError($"config show: --set needs a KEY=VALUE after it\n{Usage}");
                overrides.Add(args[++i]);
            }
            else if (arg.StartsWith("--set=", StringComparison.Ordinal))
            {
                overrides.Add(arg["--set=".Length..]);
            }
            else if (arg.StartsWith('-'))
            {
                throw new UserError($"config show: unknown option '{arg}'\n{Usage}");
            }
            else if (recipe is null)
            {
                recipe = arg;
            }
            else
            {
                throw new UserError($"config show: unexpected argument '{arg}' (the recipe is '{recipe}')\n{Usage}");
            }
        }
        if (recipe is null)
            throw new UserError($"config show: missing RECIPE\n{Usage}");

        var config = RecipeLoader.Load(recipe, overrides, families);
        stdout.Write(RecipePrinter.ToYaml(config));
        return 0;
    }
}

using System.CommandLine;
using FastVideo.Configs;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo config show RECIPE [--set KEY=VALUE]...</c>: prints the resolved recipe with every default.</summary>
public static class ConfigCommand
{
    internal static Command Create(IFamilyCatalog families)
    {
        var recipe = CliOptions.Positional("RECIPE", "a recipe file (YAML)");
        var set = CliOptions.Set("--set", "override a recipe key, e.g. --set training.optimizer.learning_rate=1e-5 (repeatable)");
        var show = new Command("show", "Print the resolved recipe: the file with the overrides applied and every default filled in.") { recipe, set };
        show.SetAction(r => Run(r.GetRequiredValue(recipe), r.GetRequiredValue(set), families, r.InvocationConfiguration.Output));
        return new Command("config", "Inspect recipes.") { show };
    }

    /// <summary>
    /// Prints <paramref name="recipe"/> resolved with <paramref name="overrides"/>. Returns the exit code (0). Recipe
    /// mistakes surface as <see cref="RecipeError"/>, printed by the CLI's top level.
    /// </summary>
    public static int Run(string recipe, IReadOnlyList<string> overrides, IFamilyCatalog families, TextWriter stdout)
    {
        var config = RecipeLoader.Load(recipe, overrides, families);
        stdout.Write(RecipePrinter.ToYaml(config));
        stdout.WriteLine($"# dtypes: {Precision.Describe(config.Training)}");
        return 0;
    }
}

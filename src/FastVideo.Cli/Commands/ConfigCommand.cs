using System.CommandLine;
using FastVideo.Configs;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;

namespace FastVideo.Cli.Commands;

/// <summary>
/// <c>fastvideo config show RECIPE [--set KEY=VALUE]...</c>: prints the resolved recipe with every default, in the
/// recipe's form; <c>fastvideo config convert RECIPE [--out FILE]</c>: writes it in the other form.
/// </summary>
public static class ConfigCommand
{
    internal static Command Create(IFamilyCatalog families, IReadOnlyList<string> dottedOverrides)
    {
        var recipe = CliOptions.Positional("RECIPE", "a recipe file (YAML): recipe:/roles: or FastVideo's models:/method: form");
        var set = CliOptions.Set("--set", "override a recipe key, e.g. --set training.optimizer.learning_rate=1e-5 (repeatable); " +
                                          "FastVideo's --training.optimizer.learning_rate 1e-5 works too");
        var show = new Command("show", "Print the resolved recipe in its own form: the file with the overrides applied and every default " +
                                       "filled in, then its warnings, differences from FastVideo and features training refuses (as # comments).")
            { recipe, set };
        show.SetAction(r => Run(r.GetRequiredValue(recipe), [.. r.GetRequiredValue(set), .. dottedOverrides], families,
            r.InvocationConfiguration.Output));

        var convertRecipe = CliOptions.Positional("RECIPE", "a recipe file (YAML) in either form");
        var convertSet = CliOptions.Set("--set", "override a recipe key before converting (repeatable)");
        var output = CliOptions.Text("--out", "FILE", "write the converted recipe here instead of to standard output");
        var convert = new Command("convert", "Write the recipe in the other form (recipe:/roles: <-> FastVideo's models:/method:/callbacks: " +
                                             "with _target_ class paths), every default filled in; loading it gives the same recipe.")
            { convertRecipe, convertSet, output };
        convert.SetAction(r => Convert(r.GetRequiredValue(convertRecipe), [.. r.GetRequiredValue(convertSet), .. dottedOverrides],
            r.GetValue(output), families, r.InvocationConfiguration.Output));
        return new Command("config", "Inspect and convert recipes.") { show, convert };
    }

    /// <summary>
    /// Prints <paramref name="recipe"/> resolved with <paramref name="overrides"/>, in its own form, then the dtypes and
    /// the recipe's notes as comments. Returns the exit code (0). Recipe mistakes surface as <see cref="RecipeError"/>,
    /// printed by the CLI's top level.
    /// </summary>
    public static int Run(string recipe, IReadOnlyList<string> overrides, IFamilyCatalog families, TextWriter stdout,
        IMethodCatalog? methods = null, ICallbackCatalog? callbacks = null)
    {
        methods ??= MethodRegistry.Default;
        callbacks ??= CallbackRegistry.Default;
        var config = RecipeLoader.Load(recipe, overrides, families, methods, callbacks);
        stdout.Write(RecipePrinter.ToYaml(config, config.Form, families, methods, callbacks));
        stdout.WriteLine($"# dtypes: {Precision.Describe(config.Training)}");
        foreach (var note in config.Notes) stdout.WriteLine($"# {note}");
        return 0;
    }

    /// <summary>Writes <paramref name="recipe"/> in the other form to <paramref name="output"/> (or stdout), its notes as
    /// trailing comments.</summary>
    public static int Convert(string recipe, IReadOnlyList<string> overrides, string? output, IFamilyCatalog families, TextWriter stdout,
        IMethodCatalog? methods = null, ICallbackCatalog? callbacks = null)
    {
        methods ??= MethodRegistry.Default;
        callbacks ??= CallbackRegistry.Default;
        var config = RecipeLoader.Load(recipe, overrides, families, methods, callbacks);
        var other = config.Form == RecipeForm.FastVideo ? RecipeForm.RecipeRoles : RecipeForm.FastVideo;
        var header = $"# {recipe} in {(other == RecipeForm.FastVideo ? "FastVideo's form (models:/method:/callbacks: with _target_)" : "the recipe:/roles: form")}, " +
                     "written by fastvideo config convert with every default filled in\n";
        // The source's notes follow as comments: what was ignored and what means something else here stays visible.
        var text = header + RecipePrinter.ToYaml(config, other, families, methods, callbacks) +
                   string.Concat(config.Notes.Select(n => $"# {n}\n"));
        if (output is null)
        {
            stdout.Write(text);
            return 0;
        }
        FastVideo.IO.Durable.WriteAllText(output, text);
        stdout.WriteLine($"wrote {output}");
        return 0;
    }
}

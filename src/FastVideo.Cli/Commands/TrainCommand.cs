using FastVideo.Configs;
using FastVideo.Train;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo train RECIPE [--set KEY=VALUE]... [--dry-run]</c>.</summary>
public static class TrainCommand
{
    public const string Usage = "usage: fastvideo train RECIPE [--set KEY=VALUE]... [--dry-run]";

    /// <summary>
    /// <paramref name="args"/> are the words after "train". <paramref name="dataSource"/> builds the run's batch
    /// source from the recipe (the data layer's loader); null only works with --dry-run.
    /// </summary>
    public static int Run(string[] args, ModelFamilyRegistry families, Func<RunConfig, IBatchSource>? dataSource, TextWriter stdout)
    {
        string? recipe = null;
        bool dryRun = false;
        var overrides = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            if (arg == "--set")
            {
                if (i + 1 >= args.Length) throw new UserError($"train: --set needs a KEY=VALUE after it\n{Usage}");
                overrides.Add(args[++i]);
            }
            else if (arg.StartsWith("--set=", StringComparison.Ordinal)) overrides.Add(arg["--set=".Length..]);
            else if (arg == "--dry-run") dryRun = true;
            else if (arg.StartsWith('-')) throw new UserError($"train: unknown option '{arg}'\n{Usage}");
            else if (recipe is null) recipe = arg;
            else throw new UserError($"train: unexpected argument '{arg}' (the recipe is '{recipe}')\n{Usage}");
        }
        if (recipe is null) throw new UserError($"train: missing RECIPE\n{Usage}");

        var config = RecipeLoader.Load(recipe, overrides, families);
        if (dryRun)
        {
            // Reads only configs and safetensors headers: no weights are loaded.
            stdout.Write(TrainingPlan.Format(TrainingPlan.BuildFromConfig(config, families), config.Recipe.Method ?? "?"));
            return 0;
        }
        using var method = TrainingBuilder.Build(config, families);
        if (dataSource is null) throw new UserError("train: no data loader is available in this build (use --dry-run)");
        using var source = dataSource(config);
        using var trainer = new Trainer(method, source, console: stdout);
        trainer.Run();
        return 0;
    }
}

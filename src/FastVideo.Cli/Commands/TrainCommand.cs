using System.CommandLine;
using FastVideo.Configs;
using FastVideo.Distributed;
using FastVideo.Train;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Quickstart;

namespace FastVideo.Cli.Commands;

/// <summary>
/// <c>fastvideo train RECIPE [--set KEY=VALUE]... [--dry-run] [--overwrite]</c>, or FastVideo's
/// <c>fastvideo train --config FILE [--dry-run] [--a.b.c VALUE | --a.b.c=VALUE]...</c>; with no recipe, the quickstart.
/// </summary>
public static class TrainCommand
{
    /// <param name="dataSource">Builds the run's batch source from the recipe (the data layer's loader).</param>
    /// <param name="dottedOverrides">FastVideo's <c>--a.b.c VALUE</c> overrides, taken out of the command line by
    /// <see cref="DottedOverrides.Extract"/> as <c>--a.b.c=VALUE</c> items.</param>
    internal static Command Create(ModelFamilyRegistry families, Func<RunConfig, IBatchSource>? dataSource,
        IReadOnlyList<string> dottedOverrides)
    {
        var recipe = new Argument<string?>("RECIPE")
        {
            HelpName = "RECIPE",
            Description = "a recipe file (YAML, either form); none: the CPU quickstart (see 'fastvideo quickstart --help')",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var config = CliOptions.Text("--config", "FILE", "the recipe file, as FastVideo's entry point takes it (instead of RECIPE)");
        var set = CliOptions.Set("--set", "override a recipe key, e.g. --set training.loop.max_train_steps=100 (repeatable); " +
                                          "FastVideo's --training.loop.max_train_steps 100 (or =100) works too");
        var dryRun = CliOptions.Flag("--dry-run", "print the training plan (roles, parameters, memory, data) and stop; loads no weights");
        var overwrite = CliOptions.Flag("--overwrite", "the output folder already holds a run: move it aside and start fresh");
        var budget = CliOptions.Size("--memory-budget", "with --dry-run: check the plan against this much memory (e.g. 16GiB) instead of this machine's");
        var command = new Command("train", "Train with a recipe (finetune, dmd2, ...) in either form; with no recipe, run the quickstart. " +
                                           "Dotted flags (--a.b.c VALUE or --a.b.c=VALUE) override recipe keys, after the --set ones.")
            { recipe, config, set, dryRun, overwrite, budget };
        command.SetAction(r =>
        {
            var stdout = r.InvocationConfiguration.Output;
            var path = RecipePath(r.GetValue(recipe), r.GetValue(config));
            IReadOnlyList<string> overrides = [.. r.GetRequiredValue(set), .. dottedOverrides];
            if (r.GetValue(budget) is not null && !r.GetValue(dryRun))
                throw new UserError("train: --memory-budget applies to the plan of --dry-run; add --dry-run");
            if (path is not null)
                return Run(path, overrides, r.GetValue(dryRun), r.GetValue(overwrite), families, dataSource, stdout, r.GetValue(budget));
            if (overrides.Count > 0 || r.GetValue(dryRun))
                throw new UserError("train: missing RECIPE (overrides and --dry-run need one; 'fastvideo train' alone runs the quickstart)");
            if (Launch.FromEnvironment().IsMultiProcess)
                throw new UserError("train: the quickstart runs in one process; under mpiexec give a RECIPE (e.g. examples/recipes/quickstart_teacher.yaml)");
            return QuickstartCommand.Run(new QuickstartOptions(), r.GetValue(overwrite), stdout);
        });
        return command;
    }

    /// <summary>RECIPE or <c>--config FILE</c>, not both.</summary>
    internal static string? RecipePath(string? positional, string? config) =>
        positional is not null && config is not null
            ? throw new UserError($"train: the recipe is given twice, as RECIPE '{positional}' and --config '{config}'; give one")
            : positional ?? config;

    /// <summary>
    /// Trains with <paramref name="recipe"/> and <paramref name="overrides"/>, or prints the plan with
    /// <paramref name="dryRun"/>. <paramref name="overwrite"/>: the output folder already holds a run; move it aside and
    /// start fresh. <paramref name="dataSource"/> builds the run's batch source from the recipe (the data layer's
    /// loader); null only works with <paramref name="dryRun"/>. The recipe's warnings and differences from FastVideo
    /// are printed first; a feature it asks for that is not implemented stops both. <paramref name="memoryBudget"/>:
    /// bytes the dry run's plan is checked against (null: this machine's memory).
    /// </summary>
    /// <remarks>Started by MPICH's <c>mpiexec -n N</c> (N &gt; 1), every process joins the run (<see cref="World"/>)
    /// and trains data parallel; rank 0 alone prints (a dry run too). A failure every process learnt of ends MPI normally;
    /// any other reaches <see cref="Cli.Report"/>, which ends the whole run.</remarks>
    public static int Run(string recipe, IReadOnlyList<string> overrides, bool dryRun, bool overwrite,
        ModelFamilyRegistry families, Func<RunConfig, IBatchSource>? dataSource, TextWriter stdout, long? memoryBudget = null)
    {
        if (Launch.FromEnvironment().Rank != 0) stdout = TextWriter.Null;   // under mpiexec rank 0 alone prints
        var config = RecipeLoader.Load(recipe, overrides, families);
        foreach (var note in config.Notes.Where(n => n.Kind != RecipeNoteKind.NotImplemented)) stdout.WriteLine(note);
        config.RequireImplemented();
        if (dryRun)
        {
            // Reads only configs, safetensors headers and (without a shape in the recipe) the dataset's first row.
            var plan = TrainingPlan.BuildFromConfig(config, families);
            stdout.Write(TrainingPlan.Format(plan, MemoryFit.Check(config, plan, memoryBudget, families)));
            stdout.WriteLine($"dtypes: {Precision.Describe(config.Training)}");
            return 0;
        }
        var world = World.Join();
        try
        {
            using (var method = TrainingBuilder.Build(config, families))
            {
                if (dataSource is null) throw new UserError("train: no data loader is available in this build (use --dry-run)");
                using var source = dataSource(config);
                using var trainer = new Trainer(method, source, console: stdout, overwrite: overwrite, group: world);
                trainer.Run();
            }
            World.Leave();
            return 0;
        }
        catch (Exception e) when (Agreement.IsAgreed(e))
        {
            World.Leave();
            throw;
        }
    }
}

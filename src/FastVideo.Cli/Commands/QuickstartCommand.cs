using System.Text.Json;
using System.Text.Json.Nodes;
using System.CommandLine;
using FastVideo.Data.Synthetic;
using FastVideo.Train.Quickstart;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo train</c> with no recipe (or <c>fastvideo quickstart</c>): the CPU quickstart.</summary>
public static class QuickstartCommand
{
    internal static Command Create()
    {
        var d = new QuickstartOptions();
        var output = CliOptions.Text("--out", "DIR", "the run folder: dataset, teacher, student, report.html, summary.json").WithDefault(d.OutDir);
        var teacherSteps = CliOptions.Int("--teacher-steps", "training steps of the teacher").WithDefault(d.TeacherSteps);
        var distillSteps = CliOptions.Int("--distill-steps", "DMD2 steps of the 4-step student").WithDefault(d.DistillSteps);
        var reuseTeacher = CliOptions.Flag("--reuse-teacher", "reuse a finished teacher in DIR instead of training it again");
        var teacherSet = CliOptions.Set("--teacher-set", "override a key of the teacher's recipe (repeatable)");
        var distillSet = CliOptions.Set("--distill-set", "override a key of the DMD2 recipe (repeatable)");
        var modelSet = CliOptions.Set("--teacher-model-set",
            "a key of the teacher's transformer config.json (Diffusers keys, JSON values), e.g. num_layers=6 or patch_size=[1,2,2] (repeatable)");
        var evalSeeds = CliOptions.Int("--eval-seeds", "noise seeds per prompt in the comparison").WithDefault(d.EvalSeeds.Count);
        var colors = CliOptions.Int("--colors", "dataset: colours").WithDefault(d.Data.Colors);
        var directions = CliOptions.Int("--directions", "dataset: directions").WithDefault(d.Data.Directions);
        var shapeSize = CliOptions.Int("--shape-size", "dataset: side of the shape in pixels", "S").WithDefault(d.Data.ShapeSize);
        var maxSpeed = CliOptions.Int("--max-speed", "dataset: caps the speed in pixels per frame (0 = as fast as the frame allows; with --wrap it sets the speed)", "V").WithDefault(d.Data.MaxSpeed);
        var minSpeed = CliOptions.Int("--min-speed", "dataset: the slowest speed in pixels per frame (0 = half the top speed; = --max-speed fixes it)", "V").WithDefault(d.Data.MinSpeed);
        var wrap = CliOptions.Flag("--wrap", "dataset: the frame is a torus, a shape leaving one edge re-enters at the opposite one (--wrap false: a bounded frame)").WithDefault(d.Data.Wrap);
        var grid = CliOptions.Int("--grid", "dataset: with --start line on a torus, starts snap to multiples of G pixels (the patch size makes every frame whole tokens)", "G").WithDefault(d.Data.Grid);
        var start = CliOptions.Choice<SyntheticStart>("--start", $"dataset: where clips start [default: {SyntheticPalette.Word(d.Data.Start)}]");
        var captions = CliOptions.Choice<SyntheticCaptions>("--captions", $"dataset: whether captions name the direction or only its axis [default: {SyntheticPalette.Word(d.Data.Captions)}]");
        var overwrite = CliOptions.Flag("--overwrite", "DIR holds an earlier quickstart: move it aside (kept) instead of re-running into it");
        var scenario = CliOptions.Choice<QuickstartScenario>("--scenario",
            "default: teacher and a DMD2 student; causal: the folder's teacher (trained if missing), then a causal student by KD and Self-Forcing, "
            + "streamed, into DIR/causal [default: default]");
        var kdSteps = CliOptions.Int("--kd-steps", "causal scenario: kd_causal steps of the ODE init").WithDefault(d.KdSteps);
        var sfSteps = CliOptions.Int("--self-forcing-steps", "causal scenario: Self-Forcing steps").WithDefault(d.SelfForcingSteps);
        var longSteps = CliOptions.Int("--long-tuning-steps", "causal scenario: streaming long tuning steps after Self-Forcing (0 = none)").WithDefault(d.LongTuningSteps);
        var longSet = CliOptions.Set("--long-tuning-set", "causal scenario: override a key of the streaming long tuning recipe (repeatable)");
        var kdSet = CliOptions.Set("--kd-set", "causal scenario: override a key of the KD recipe (repeatable)");
        var sfSet = CliOptions.Set("--self-forcing-set", "causal scenario: override a key of the Self-Forcing recipe (repeatable)");
        var command = new Command("quickstart",
            "The CPU quickstart: trains a small Wan teacher on a synthetic moving-shapes dataset, distills a 4-step student "
            + "with DMD2, and writes report.html and summary.json into DIR. The dataset options are those of 'dataset synth' "
            + "and apply when DIR has no dataset yet. --scenario causal distills a streaming causal student from DIR's teacher instead.")
        {
            output, scenario, teacherSteps, distillSteps, reuseTeacher, teacherSet, distillSet, modelSet, kdSteps, sfSteps, longSteps, kdSet, sfSet, longSet, evalSeeds,
            colors, directions, shapeSize, maxSpeed, minSpeed, wrap, grid, start, captions, overwrite,
        };
        command.SetAction(r =>
        {
            int seeds = r.GetValue(evalSeeds);
            if (seeds < 1) throw new UserError($"--eval-seeds must be at least 1, got {seeds}");
            var which = r.GetValue(scenario) ?? QuickstartScenario.Default;
            // An option of the other scenario would be ignored: refuse it.
            Option[] other = which == QuickstartScenario.Causal ? [distillSteps, reuseTeacher, distillSet, overwrite] : [kdSteps, sfSteps, longSteps, kdSet, sfSet, longSet];
            if (other.FirstOrDefault(x => r.GetResult(x) is { Implicit: false }) is { } foreign)
                throw new UserError($"{foreign.Name} is an option of the {(which == QuickstartScenario.Causal ? "default" : "causal")} scenario, not of --scenario {SyntheticPalette.Word(which)}");
            var o = d with
            {
                Scenario = which,
                KdSteps = r.GetValue(kdSteps),
                SelfForcingSteps = r.GetValue(sfSteps),
                KdOverrides = r.GetRequiredValue(kdSet),
                SelfForcingOverrides = r.GetRequiredValue(sfSet),
                LongTuningSteps = r.GetValue(longSteps),
                LongTuningOverrides = r.GetRequiredValue(longSet),
                OutDir = r.GetRequiredValue(output),
                TeacherSteps = r.GetValue(teacherSteps),
                DistillSteps = r.GetValue(distillSteps),
                ReuseTeacher = r.GetValue(reuseTeacher),
                TeacherOverrides = r.GetRequiredValue(teacherSet),
                DistillOverrides = r.GetRequiredValue(distillSet),
                Model = ModelWith(d.Model, r.GetRequiredValue(modelSet)),
                EvalSeeds = Enumerable.Range(0, seeds).Select(i => d.EvalSeeds[0] + i).ToList(),
                Data = d.Data with
                {
                    Colors = r.GetValue(colors),
                    Directions = r.GetValue(directions),
                    ShapeSize = r.GetValue(shapeSize),
                    MaxSpeed = r.GetValue(maxSpeed),
                    MinSpeed = r.GetValue(minSpeed),
                    Wrap = r.GetValue(wrap),
                    Grid = r.GetValue(grid),
                    Start = r.GetValue(start) ?? d.Data.Start,
                    Captions = r.GetValue(captions) ?? d.Data.Captions,
                },
            };
            // A reused teacher is not trained again: an option that shapes its training would be ignored, so refuse it.
            if ((which == QuickstartScenario.Causal || o.ReuseTeacher) && QuickstartRunner.HasTeacher(Path.GetFullPath(o.OutDir))
                && new Option[] { teacherSteps, teacherSet, modelSet }.FirstOrDefault(x => r.GetResult(x) is { Implicit: false }) is { } unused)
                throw new UserError($"{unused.Name}: {o.OutDir} has a finished teacher, which this run reuses without training it; "
                    + "give --out a new folder (or run the default scenario without --reuse-teacher) to train one with it");
            return Run(o, r.GetValue(overwrite), r.InvocationConfiguration.Output);
        });
        return command;
    }

    /// <summary>The teacher's config.json with each KEY=VALUE of --teacher-model-set applied (VALUE is JSON).</summary>
    internal static JsonObject ModelWith(JsonObject defaults, IEnumerable<string> sets)
    {
        var model = (JsonObject)defaults.DeepClone();
        foreach (var set in sets)
        {
            int eq = set.IndexOf('=');
            if (eq <= 0) throw new UserError($"--teacher-model-set '{set}': expected KEY=VALUE, e.g. num_layers=6");
            string key = set[..eq].Trim(), text = set[(eq + 1)..].Trim();
            JsonNode? value;
            try { value = JsonNode.Parse(text); }
            catch (JsonException) { throw new UserError($"--teacher-model-set {key}: '{text}' is not a JSON value (a number, true/false, null, \"text\" or [1, 2, 2])"); }
            model[key] = value;
        }
        return model;
    }

    /// <summary>
    /// Runs the quickstart into <see cref="QuickstartOptions.OutDir"/>. <paramref name="overwrite"/>: the folder already
    /// holds a run; move it aside and start fresh. Bad options are <see cref="UserError"/>s, raised before anything is written.
    /// </summary>
    public static int Run(QuickstartOptions options, bool overwrite, TextWriter stdout)
    {
        options.Data.Validate();
        options = options with { Overwrite = overwrite || options.Overwrite };
        if (options.Scenario == QuickstartScenario.Causal) CausalQuickstartRunner.Run(options, stdout);
        else QuickstartRunner.Run(options, stdout);
        return 0;
    }
}

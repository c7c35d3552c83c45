using FastVideo.Data.Synthetic;
using FastVideo.Train.Quickstart;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo train</c> with no recipe (or <c>fastvideo quickstart</c>): the CPU quickstart.</summary>
public static class QuickstartCommand
{
    public const string Usage = """
        usage: fastvideo quickstart [--out DIR] [--teacher-steps N] [--distill-steps N] [--reuse-teacher]
                                    [--teacher-set k=v]... [--distill-set k=v]... [--eval-seeds N]
                                    [--colors N] [--directions N] [--shape-size S] [--start random|edge|lane]
                                    [--captions exact|axis]
          trains a small Wan teacher on a synthetic moving-shapes dataset, distills a 4-step student with DMD2,
          and writes report.html and summary.json into DIR (default runs/quickstart). --eval-seeds sets how many
          seeds per prompt the comparison samples (default 24); the dataset flags are those of `dataset synth`
          (defaults 4 colours, 4 directions, size 5, edge starts, axis captions) and apply when DIR has no
          dataset yet.
        """;

    public static int Run(string[] args, TextWriter stdout)
    {
        var a = CliArgs.Parse(args, Usage, ["out", "teacher-steps", "distill-steps", "teacher-set", "distill-set", "eval-seeds", "colors", "directions", "shape-size", "start", "captions"], ["reuse-teacher"]);
        if (a.Positionals.Count > 0) throw new UserError($"unexpected argument '{a.Positionals[0]}'\n{Usage}");
        var d = new QuickstartOptions();
        int seeds = a.Int("eval-seeds", Usage, d.EvalSeeds.Count);
        if (seeds < 1) throw new UserError($"--eval-seeds must be at least 1, got {seeds}");
        var data = d.Data with
        {
            Colors = a.Int("colors", Usage, d.Data.Colors),
            Directions = a.Int("directions", Usage, d.Data.Directions),
            ShapeSize = a.Int("shape-size", Usage, d.Data.ShapeSize),
            Start = a.Get("start") is { } start ? DatasetCommand.Choice<SyntheticStart>("--start", start) : d.Data.Start,
            Captions = a.Get("captions") is { } captions ? DatasetCommand.Choice<SyntheticCaptions>("--captions", captions) : d.Data.Captions,
        };
        data.Validate();
        var o = d with
        {
            OutDir = a.Get("out") ?? d.OutDir,
            TeacherSteps = a.Int("teacher-steps", Usage, d.TeacherSteps),
            DistillSteps = a.Int("distill-steps", Usage, d.DistillSteps),
            ReuseTeacher = a.Flag("reuse-teacher"),
            TeacherOverrides = a.All("teacher-set").ToList(),
            DistillOverrides = a.All("distill-set").ToList(),
            EvalSeeds = Enumerable.Range(0, seeds).Select(i => d.EvalSeeds[0] + i).ToList(),
            Data = data,
        };
        QuickstartRunner.Run(o, stdout);
        return 0;
    }
}

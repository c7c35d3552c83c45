using FastVideo.Train.Quickstart;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo train</c> with no recipe (or <c>fastvideo quickstart</c>): the CPU quickstart.</summary>
public static class QuickstartCommand
{
    public const string Usage = """
        usage: fastvideo quickstart [--out DIR] [--teacher-steps N] [--distill-steps N] [--reuse-teacher]
                                    [--teacher-set k=v]... [--distill-set k=v]...
          trains a small Wan teacher on a synthetic moving-shapes dataset, distills a 4-step student with DMD2,
          and writes report.html and summary.json into DIR (default runs/quickstart)
        """;

    public static int Run(string[] args, TextWriter stdout)
    {
        var a = CliArgs.Parse(args, Usage, ["out", "teacher-steps", "distill-steps", "teacher-set", "distill-set"], ["reuse-teacher"]);
        if (a.Positionals.Count > 0) throw new UserError($"unexpected argument '{a.Positionals[0]}'\n{Usage}");
        var d = new QuickstartOptions();
        var o = d with
        {
            OutDir = a.Get("out") ?? d.OutDir,
            TeacherSteps = a.Int("teacher-steps", Usage, d.TeacherSteps),
            DistillSteps = a.Int("distill-steps", Usage, d.DistillSteps),
            ReuseTeacher = a.Flag("reuse-teacher"),
            TeacherOverrides = a.All("teacher-set").ToList(),
            DistillOverrides = a.All("distill-set").ToList(),
        };
        QuickstartRunner.Run(o, stdout);
        return 0;
    }
}

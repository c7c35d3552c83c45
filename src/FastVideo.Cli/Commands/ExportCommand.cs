using FastVideo.Train.Export;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo export CHECKPOINT --role ROLE [--ema] --out DIR [--overwrite]</c> (spec 8.4).</summary>
public static class ExportCommand
{
    public const string Usage = """
        usage: fastvideo export CHECKPOINT --role ROLE [--ema] --out DIR [--overwrite]
          CHECKPOINT   a checkpoint-<step> folder, or a run folder (its newest checkpoint)
          --role       the trainable role to export (e.g. student)
          --ema        export the EMA weights (student only; needs an ema callback that has started)
          --out        the Diffusers folder to write (loadable by 'fastvideo generate --model DIR')
          --overwrite  replace DIR if it exists and is not empty
        """;

    /// <summary><paramref name="args"/> are the words after "export". Errors are <see cref="UserError"/>s.</summary>
    public static int Run(string[] args, TextWriter stdout)
    {
        var a = CliArgs.Parse(args, Usage, ["role", "out"], ["ema", "overwrite"]);
        if (a.Positionals.Count == 0) throw new UserError($"export: missing CHECKPOINT\n{Usage}");
        if (a.Positionals.Count > 1) throw new UserError($"export: unexpected argument '{a.Positionals[1]}'\n{Usage}");
        if (!a.Has("role"))
        {
            var roles = CheckpointExporter.ReadMetadata(CheckpointExporter.ResolveCheckpoint(a.Positionals[0])).Roles;
            throw new UserError($"export: missing --role (exportable roles of this checkpoint: {string.Join(", ", roles)})\n{Usage}");
        }
        var request = new ExportRequest
        {
            Checkpoint = a.Positionals[0],
            Role = a.Require("role", Usage),
            OutputDir = a.Require("out", Usage),
            Ema = a.Flag("ema"),
            Overwrite = a.Flag("overwrite"),
        };
        CheckpointExporter.Export(request, log: stdout);
        return 0;
    }
}

using System.CommandLine;
using FastVideo.Train.Export;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo export CHECKPOINT --role ROLE [--ema] [--lora-format merged|adapter] --out DIR [--overwrite]</c> (spec 8.4).</summary>
public static class ExportCommand
{
    internal static Command Create()
    {
        var checkpoint = CliOptions.Positional("CHECKPOINT", "a checkpoint-<step> folder, or a run folder (its newest checkpoint)");
        // Not required at parse time: without it, the error lists the checkpoint's exportable roles.
        var role = CliOptions.Text("--role", "ROLE", "the trainable role to export (e.g. student); required");
        var ema = CliOptions.Flag("--ema", "export the EMA weights (student only; needs an ema callback that has started)");
        var output = CliOptions.Text("--out", "DIR", "the Diffusers folder to write (loadable by 'fastvideo generate --model DIR')").AsRequired();
        var overwrite = CliOptions.Flag("--overwrite", "replace DIR if it exists and is not empty");
        var loraFormat = CliOptions.OneOf("--lora-format", "for a role trained with LoRA: 'merged' writes the Diffusers folder with base + (alpha/rank)·B·A " +
            "(default), 'adapter' writes DIR/pytorch_lora_weights.safetensors alone (Diffusers' Wan LoRA keys, for pipe.load_lora_weights)", "merged", "adapter");
        var command = new Command("export", "Write a Diffusers folder (or a LoRA role's adapter) from a training checkpoint.") { checkpoint, role, ema, loraFormat, output, overwrite };
        command.SetAction(r => Run(r.GetRequiredValue(checkpoint), r.GetValue(role), r.GetRequiredValue(output), r.GetValue(ema),
            r.GetValue(overwrite), r.InvocationConfiguration.Output, r.GetValue(loraFormat)));
        return command;
    }

    /// <summary>
    /// Exports <paramref name="role"/> of <paramref name="checkpoint"/> to <paramref name="outDir"/>; a null role is a
    /// <see cref="UserError"/> that lists the checkpoint's roles. Errors are <see cref="UserError"/>s.
    /// </summary>
    public static int Run(string checkpoint, string? role, string outDir, bool ema, bool overwrite, TextWriter stdout, string? loraFormat = null)
    {
        if (role is null)
        {
            var roles = CheckpointExporter.ReadMetadata(CheckpointExporter.ResolveCheckpoint(checkpoint)).Roles;
            throw new UserError($"export: missing --role (exportable roles of this checkpoint: {string.Join(", ", roles)})");
        }
        var request = new ExportRequest
        {
            Checkpoint = checkpoint,
            Role = role,
            OutputDir = outDir,
            Ema = ema,
            Overwrite = overwrite,
            LoraFormat = loraFormat switch
            {
                null => null,
                "merged" => LoraExportFormat.Merged,
                "adapter" => LoraExportFormat.Adapter,
                _ => throw new UserError($"export: --lora-format must be merged or adapter, got '{loraFormat}'"),
            },
        };
        CheckpointExporter.Export(request, log: stdout);
        return 0;
    }
}

using FastVideo;
using FastVideo.Cli;
using FastVideo.Cli.Commands;
using FastVideo.Train.Models;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
return Cli.Run(args, Console.Out, Console.Error);

namespace FastVideo.Cli
{
    public static class Cli
    {
        public const string Usage = """
            usage: fastvideo <command> [options]

            commands:
              generate   sample latents with a Wan model from precomputed text embeddings
              train      RECIPE [--set key=value ...] [--dry-run]: train with a recipe
                         (no recipe: the quickstart, see `fastvideo quickstart --help`)
              export     CHECKPOINT --role ROLE [--ema] --out DIR: a Diffusers folder from a checkpoint
              quickstart [--out DIR]: the CPU quickstart (teacher, DMD2 student, report)
              config     show RECIPE [--set key=value ...]: print the resolved recipe
              families   list the model families and their role options
              methods    list the training methods and callbacks with their options and defaults
              dataset    synth --out DIR [...] | inspect DIR
              demo       build a tiny random Wan model and sample from it (no downloads)

            plugins: FASTVIDEO_FAMILY_PLUGINS=a.dll:b.dll loads extra model families.
            """;

        public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
        {
            try
            {
                var families = ModelFamilyRegistry.Default;
                var plugins = Environment.GetEnvironmentVariable("FASTVIDEO_FAMILY_PLUGINS");
                if (!string.IsNullOrEmpty(plugins) && !_pluginsLoaded)
                {
                    families.LoadPlugins(plugins.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries));
                    _pluginsLoaded = true;
                }
                if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
                {
                    stdout.WriteLine(Usage);
                    return args.Length == 0 ? 2 : 0;
                }
                var rest = args[1..];
                return args[0] switch
                {
                    "generate" => GenerateCommand.Run(rest, stdout, stderr),
                    "families" => FamiliesCommand.Run(rest, families, stdout),
                    "methods" => MethodsCommand.Run(rest, FastVideo.Train.Methods.MethodRegistry.Default, FastVideo.Train.Callbacks.CallbackRegistry.Default, stdout),
                    "config" => ConfigCommand.Run(rest, families, stdout),
                    "dataset" => DatasetCommand.Run(rest, stdout),
                    "export" => ExportCommand.Run(rest, stdout),
                    "quickstart" => QuickstartCommand.Run(rest, stdout),
                    "train" when rest.Length == 0 => QuickstartCommand.Run(rest, stdout),
                    "train" => TrainCommand.Run(rest, families, cfg => FastVideo.Train.DataLoaderBatchSource.FromConfig(cfg, families), stdout),
                    "demo" => DemoCommand.Run(rest, stdout, stderr),
                    _ => throw new UserError($"unknown command '{args[0]}'\n{Usage}"),
                };
            }
            catch (Exception e)
            {
                return Report(e, stderr);
            }
        }

        /// <summary>
        /// One message per failure and an exit code per kind (<see cref="ExitCodes"/>); the stack trace only with
        /// <c>FASTVIDEO_DEBUG=1</c>. File-system exceptions that escaped a wrapper still name their path in .NET's message.
        /// </summary>
        public static int Report(Exception e, TextWriter stderr)
        {
            if (e is System.Reflection.TargetInvocationException { InnerException: { } inner }) e = inner;
            int code;
            switch (e)
            {
                case UserError u:
                    stderr.WriteLine($"error: {u.Message}");
                    code = u.ExitCode;
                    break;
                case IOException or UnauthorizedAccessException:
                    stderr.WriteLine($"error: file system: {e.Message}");
                    code = ExitCodes.Storage;
                    break;
                default:
                    stderr.WriteLine($"error: internal: {e.GetType().Name}: {e.Message} (set FASTVIDEO_DEBUG=1 for the stack trace)");
                    code = ExitCodes.Internal;
                    break;
            }
            if (Environment.GetEnvironmentVariable("FASTVIDEO_DEBUG") == "1") stderr.WriteLine(e);
            return code;
        }

        private static bool _pluginsLoaded;
    }
}

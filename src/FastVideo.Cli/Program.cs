using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using FastVideo;
using FastVideo.Cli;
using FastVideo.Cli.Commands;
using FastVideo.Configs;
using FastVideo.Train;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
var exitCode = Cli.Run(args, Console.Out, Console.Error);
FastVideo.Distributed.World.ExitIfJoined(exitCode);   // a process of an MPI run ends here (see there why)
return exitCode;

namespace FastVideo.Cli
{
    /// <summary>
    /// The <c>fastvideo</c> command line, on System.CommandLine: every command and subcommand prints its usage with
    /// <c>--help</c> (exit 0); a parse error prints the errors, System.CommandLine's suggestions for mistyped words and
    /// a pointer to <c>--help</c> on stderr (exit 2); a failure in a command is reported by <see cref="Report"/>.
    /// </summary>
    public static class Cli
    {
        public const string Description =
            "FastVideo on .NET: fine-tune, distill and sample video diffusion transformers (Wan). "
            + "Every command prints its usage with --help.";

        /// <summary>Printed after the root command's usage.</summary>
        public const string Notes = """
            Plugins: FASTVIDEO_FAMILY_PLUGINS=a.dll:b.dll loads extra model families.
            Shell completions: in bash, `source scripts/fastvideo-completion.bash`; any shell can ask for the
            completions at a cursor position with `fastvideo "[suggest:POSITION]" "fastvideo LINE"`.
            """;

        /// <summary>
        /// Runs the command line <paramref name="args"/>, writing only to <paramref name="stdout"/> and
        /// <paramref name="stderr"/>, and returns the exit code (<see cref="ExitCodes"/>).
        /// </summary>
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
                // FastVideo's --a.b.c VALUE overrides are taken out first: System.CommandLine would give VALUE to RECIPE.
                (args, var dotted) = DottedOverrides.Extract(args);
                var root = Create(families, cfg => DataLoaderBatchSource.FromConfig(cfg, families), dotted);
                var invocation = new InvocationConfiguration
                {
                    Output = stdout,
                    Error = stderr,
                    // Exceptions reach Report below, not System.CommandLine's handler (which prints the stack trace).
                    EnableDefaultExceptionHandler = false,
                    // Ctrl+C ends the process at once, as it did before System.CommandLine.
                    ProcessTerminationTimeout = null,
                };
                if (args.Length == 0)
                {
                    root.Parse(["--help"]).Invoke(invocation);
                    return ExitCodes.BadInput;
                }

                var result = root.Parse(args);
                bool runsCommand = result.Action is ParseErrorAction || ReferenceEquals(result.Action, result.CommandResult.Command.Action);
                if (runsCommand && OptionLikeArguments(result, args) is { Count: > 0 } unknown)
                    return ReportUnknownOptions(result.CommandResult, unknown, stderr);
                if (result.Action is ParseErrorAction)
                    return ReportParseErrors(result, stderr);
                return result.Invoke(invocation);
            }
            catch (Exception e)
            {
                return Report(e, stderr);
            }
        }

        /// <summary>The command tree. <paramref name="dataSource"/> builds a training run's batch source from its recipe;
        /// <paramref name="dottedOverrides"/> are the <c>--a.b.c=VALUE</c> overrides <see cref="DottedOverrides.Extract"/>
        /// took out of the command line (applied after the <c>--set</c> ones).</summary>
        public static RootCommand Create(ModelFamilyRegistry families, Func<RunConfig, IBatchSource>? dataSource,
            IReadOnlyList<string>? dottedOverrides = null)
        {
            dottedOverrides ??= [];
            var root = new RootCommand(Description)
            {
                GenerateCommand.Create(),
                TrainCommand.Create(families, dataSource, dottedOverrides),
                ExportCommand.Create(),
                QuickstartCommand.Create(),
                ConfigCommand.Create(families, dottedOverrides),
                FamiliesCommand.Create(families),
                MethodsCommand.Create(MethodRegistry.Default, CallbackRegistry.Default),
                DatasetCommand.Create(),
                ModelCommand.Create(families),
                DemoCommand.Create(),
            };
            root.HelpName = "fastvideo";
            var helpOption = root.Options.OfType<HelpOption>().Single();
            helpOption.Action = new HelpWithNotes((HelpAction)helpOption.Action!);

            // `fastvideo help [COMMAND...]`, as before System.CommandLine: the usage of the root or of that command.
            var words = new Argument<string[]>("COMMAND") { Arity = ArgumentArity.ZeroOrMore };
            var help = new Command("help", "Print the usage of a command.") { words };
            help.Hidden = true;
            help.SetAction(r => root.Parse([.. r.GetRequiredValue(words), "--help"]).Invoke(r.InvocationConfiguration));
            root.Subcommands.Add(help);
            return root;
        }

        /// <summary>
        /// One message per failure and an exit code per kind (<see cref="ExitCodes"/>); the stack trace only with
        /// <c>FASTVIDEO_DEBUG=1</c>. File-system exceptions that escaped a wrapper still name their path in .NET's message.
        /// </summary>
        /// <remarks>In a multi-process run the line names the rank (but on rank 0); a process stopping because another
        /// failed prints nothing (that one printed); and a failure the other processes do not know of ends the whole run
        /// (MPI_Abort), since they would wait for this one forever.</remarks>
        public static int Report(Exception e, TextWriter stderr)
        {
            if (e is System.Reflection.TargetInvocationException { InnerException: { } inner }) e = inner;
            int code = ExitCodes.For(e);
            var world = FastVideo.Distributed.World.Current;
            var launch = FastVideo.Distributed.Launch.FromEnvironment();
            var rank = launch.IsMultiProcess && launch.Rank != 0 ? $"rank {launch.Rank}: " : "";
            switch (e)
            {
                case FastVideo.Distributed.PeerFailedError:
                    break;
                case UserError u:
                    stderr.WriteLine($"error: {rank}{u.Message}");
                    break;
                case IOException or UnauthorizedAccessException:
                    stderr.WriteLine($"error: {rank}file system: {e.Message}");
                    break;
                default:
                    stderr.WriteLine($"error: {rank}internal: {e.GetType().Name}: {e.Message} (set FASTVIDEO_DEBUG=1 for the stack trace)");
                    break;
            }
            if (Environment.GetEnvironmentVariable("FASTVIDEO_DEBUG") == "1") stderr.WriteLine(e);
            if (world.IsDistributed && !FastVideo.Distributed.Agreement.IsAgreed(e))
            {
                stderr.Flush();
                FastVideo.Distributed.World.Abort(code);
            }
            return code;
        }

        /// <summary>The parse errors, System.CommandLine's "did you mean" for unmatched words, and where the usage is.</summary>
        private static int ReportParseErrors(ParseResult result, TextWriter stderr)
        {
            foreach (var error in result.Errors) stderr.WriteLine($"error: {error.Message}");
            WriteSuggestions(result, stderr);
            stderr.WriteLine(SeeHelp(result.CommandResult));
            return ExitCodes.BadInput;
        }

        /// <summary>System.CommandLine's "did you mean" lines for the unmatched words of a failed parse.</summary>
        private static void WriteSuggestions(ParseResult result, TextWriter stderr)
        {
            if (result.Action is not ParseErrorAction action) return;
            action.ShowHelp = false;
            action.ShowTypoCorrections = true;
            // The action writes the errors (printed already) to Error and the suggestions to Output.
            var suggestions = new StringWriter();
            result.Invoke(new InvocationConfiguration { Output = suggestions, Error = TextWriter.Null });
            var text = suggestions.ToString().Trim();
            if (text.Length > 0) stderr.WriteLine(text);
        }

        /// <summary>
        /// System.CommandLine gives a command's positional argument any word that is not one of its options, so a
        /// mistyped option before the RECIPE (<c>train --dyr-run r.yaml</c>) would become the recipe. Such words (a
        /// dash and more, before any <c>--</c>) are unknown options.
        /// </summary>
        private static List<string> OptionLikeArguments(ParseResult result, string[] args)
        {
            var words = new List<string>();
            if (args.Contains("--")) return words;
            for (SymbolResult? s = result.CommandResult; s is not null; s = s.Parent)
                if (s is CommandResult command)
                    foreach (var argument in command.Children.OfType<ArgumentResult>())
                        words.AddRange(argument.Tokens.Select(t => t.Value).Where(v => v.Length > 1 && v[0] == '-'));
            return words;
        }

        private static int ReportUnknownOptions(CommandResult command, List<string> unknown, TextWriter stderr)
        {
            foreach (var word in unknown) stderr.WriteLine($"error: Unrecognized command or argument '{word}'.");
            // System.CommandLine's suggestions for these words, from a command with the same options and no positional
            // argument, where they are unmatched.
            var probe = new Command(command.Command.Name);
            foreach (var option in command.Command.Options) probe.Options.Add(option);
            WriteSuggestions(new RootCommand { probe }.Parse([probe.Name, .. unknown]), stderr);
            stderr.WriteLine(SeeHelp(command));
            return ExitCodes.BadInput;
        }

        private static string SeeHelp(CommandResult command)
        {
            var names = new List<string>();
            for (SymbolResult? s = command; s is CommandResult c; s = c.Parent)
                names.Insert(0, c.Command is RootCommand ? "fastvideo" : c.Command.Name);
            return $"see '{string.Join(' ', names)} --help' for the usage";
        }

        /// <summary>System.CommandLine's help, then <see cref="Notes"/> under the root command's.</summary>
        private sealed class HelpWithNotes(HelpAction help) : SynchronousCommandLineAction
        {
            public override bool ClearsParseErrors => true;

            public override int Invoke(ParseResult parseResult)
            {
                int code = help.Invoke(parseResult);
                if (parseResult.CommandResult.Command is RootCommand) parseResult.InvocationConfiguration.Output.WriteLine(Notes);
                return code;
            }
        }

        private static bool _pluginsLoaded;
    }
}

using System.CommandLine;
using FastVideo.Train.Models;
using Xunit;

// Not FastVideo.Tests.Cli: that would hide the FastVideo.Cli namespace from the other tests' `Cli.Cli.Run`.
namespace FastVideo.Tests.CommandLine;

/// <summary>The command line's usage, parse errors, suggestions and completions (System.CommandLine).</summary>
public class CliHelpTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = FastVideo.Cli.Cli.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Theory]
    [InlineData("generate", "--model <DIR> (REQUIRED)", "--prompt-embeds <FILE> (REQUIRED)", "--negative-prompt-embeds <FILE>", "--latents <FILE>",
        "--seed <N>", "--num-frames <F>", "--height <H>", "--width <W>", "--steps <N>", "--guidance-scale <G> (REQUIRED)",
        "--flow-shift <S> (REQUIRED)", "--output-latents <FILE> (REQUIRED)", "--device <DEVICE>", "[default: cpu]", "--dtype <fp32|bf16|fp16>", "[default: fp32]", "--family <FAMILY>",
        "--causal", "--frames-per-block <K>", "--denoising-steps <T0,T1,...>", "--no-kv-cache", "--local-attn-size <N>", "--sink-size <N>", "--text-len <L>", "--blocks-out <DIR>")]
    [InlineData("train", "fastvideo train [<RECIPE>] [options]", "--config <FILE>", "--set <KEY=VALUE>", "--dry-run", "--overwrite", "fastvideo quickstart --help",
        "--a.b.c VALUE")]
    [InlineData("export", "fastvideo export <CHECKPOINT> [options]", "--role <ROLE>", "--ema", "--out <DIR> (REQUIRED)", "--overwrite")]
    [InlineData("quickstart", "--out <DIR>", "[default: runs/quickstart]", "--teacher-steps <N>", "[default: 4000]", "--distill-steps <N>",
        "[default: 600]", "--reuse-teacher", "--teacher-set <KEY=VALUE>", "--distill-set <KEY=VALUE>", "--eval-seeds <N>", "[default: 24]",
        "--colors <N>", "--directions <N>", "--shape-size <S>", "[default: 5]", "--start <random|edge|lane|line>", "[default: edge]",
        "--captions <exact|axis>", "[default: axis]", "--min-speed <V>", "--grid <G>", "--overwrite", "--long-tuning-steps <N>", "--long-tuning-set <KEY=VALUE>")]
    [InlineData("config", "fastvideo config [command] [options]", "show <RECIPE>", "convert <RECIPE>")]
    [InlineData("config convert", "fastvideo config convert <RECIPE> [options]", "--set <KEY=VALUE>", "--out <FILE>")]
    [InlineData("config show", "fastvideo config show <RECIPE> [options]", "--set <KEY=VALUE>")]
    [InlineData("families", "fastvideo families [options]", "roles.<role>")]
    [InlineData("methods", "fastvideo methods [options]", "callbacks.<name>")]
    [InlineData("dataset", "fastvideo dataset [command] [options]", "synth", "inspect <DIR>")]
    [InlineData("dataset synth", "--out <DIR> (REQUIRED)", "--colors <N>", "--directions <N>", "--clips-per-class <N>", "--frames <F>",
        "--height <H>", "--width <W>", "--channels <C>", "--shape <square|arrow>", "--shape-size <S>", "--max-speed <V>",
        "--min-speed <V>", "--grid <G>", "--start <random|edge|lane|line>", "--captions <exact|axis>", "--text-len <L>", "--embed-dim <D>", "--seed <S>", "--rows-per-file <N>",
        "[default: 512]", "--fps <F>")]
    [InlineData("dataset inspect", "fastvideo dataset inspect <DIR> [options]", "exit code 1 if any is bad")]
    [InlineData("demo", "--out <DIR>", "--steps <N>", "[default: 8]", "--guidance-scale <G>", "[default: 5]")]
    public void HelpPrintsTheCommandsUsageAndExits0(string command, params string[] expected)
    {
        var words = command.Split(' ');
        foreach (var flag in new[] { "--help", "-h" })
        {
            var (code, stdout, stderr) = Run([.. words, flag]);
            Assert.Equal(0, code);
            Assert.Equal("", stderr);
            Assert.Contains($"Usage:\n  fastvideo {command} ", stdout);
            foreach (var text in expected) Assert.Contains(text, stdout);
        }
    }

    [Fact]
    public void EveryCommandInTheTreeHasAHelpThatNamesItsOptionsAndSubcommands()
    {
        int seen = 0;
        void Check(Command command, string path)
        {
            var (code, stdout, stderr) = Run([.. path.Split(' ', StringSplitOptions.RemoveEmptyEntries), "--help"]);
            Assert.True(code == 0, $"'{path} --help' exited {code}: {stderr}");
            Assert.Contains($"Usage:\n  fastvideo {path}".TrimEnd(), stdout);
            foreach (var option in command.Options.Where(o => !o.Hidden)) Assert.Contains(option.Name, stdout);
            foreach (var sub in command.Subcommands.Where(c => !c.Hidden))
            {
                Assert.Contains(sub.Name, stdout);
                Check(sub, $"{path} {sub.Name}".Trim());
            }
            seen++;
        }
        Check(FastVideo.Cli.Cli.Create(ModelFamilyRegistry.Default, null), "");
        Assert.Equal(16, seen); // the root, its 10 commands, config show and convert, dataset synth and dataset inspect, model random
    }

    [Fact]
    public void NoArgumentsPrintsTheRootUsageAndExits2_HelpExits0()
    {
        var (code, stdout, stderr) = Run();
        Assert.Equal(2, code);
        Assert.Equal("", stderr);
        Assert.Contains("Usage:\n  fastvideo [command] [options]", stdout);
        foreach (var command in new[] { "generate", "train <RECIPE>", "export <CHECKPOINT>", "quickstart", "config", "families", "methods", "dataset", "demo" })
            Assert.Contains($"\n  {command} ", stdout);
        Assert.Contains("FASTVIDEO_FAMILY_PLUGINS", stdout);
        Assert.Contains("scripts/fastvideo-completion.bash", stdout);

        foreach (var args in new[] { new[] { "--help" }, new[] { "-h" }, new[] { "help" } })
        {
            var help = Run(args);
            Assert.Equal(0, help.Code);
            Assert.Equal(stdout, help.Out);
        }
        var train = Run("help", "train");
        Assert.Equal(0, train.Code);
        Assert.Equal(Run("train", "--help").Out, train.Out);
    }

    [Theory]
    [InlineData(new[] { "quickstart", "--eval-seed", "3" }, "--eval-seed", "--eval-seeds", "fastvideo quickstart --help")]
    [InlineData(new[] { "dataset", "synth", "--out", "x", "--colour", "3" }, "--colour", "--colors", "fastvideo dataset synth --help")]
    [InlineData(new[] { "train", "r.yaml", "--dyr-run" }, "--dyr-run", "--dry-run", "fastvideo train --help")]
    // Before the positional argument, where System.CommandLine would take the word for the recipe.
    [InlineData(new[] { "train", "--dyr-run", "r.yaml" }, "--dyr-run", "--dry-run", "fastvideo train --help")]
    [InlineData(new[] { "train", "--overwirte" }, "--overwirte", "--overwrite", "fastvideo train --help")]
    [InlineData(new[] { "export", "--emma", "ckpt", "--out", "x" }, "--emma", "--ema", "fastvideo export --help")]
    [InlineData(new[] { "config", "show", "--sett", "a=1", "r.yaml" }, "--sett", "--set", "fastvideo config show --help")]
    public void AnUnknownOptionExits2WithASuggestion(string[] args, string word, string suggestion, string help)
    {
        var (code, stdout, stderr) = Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.StartsWith($"error: Unrecognized command or argument '{word}'.\n", stderr);
        Assert.Contains($"'{word}' was not matched. Did you mean one of the following?\n{suggestion}\n", stderr);
        Assert.EndsWith($"see '{help}' for the usage\n", stderr);
    }

    [Fact]
    public void AMistypedCommandExits2AndSuggestsTheCommand()
    {
        var (code, stdout, stderr) = Run("trian", "r.yaml");
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains("error: Unrecognized command or argument 'trian'.", stderr);
        Assert.Contains("'trian' was not matched. Did you mean one of the following?\ntrain\n", stderr);
        Assert.EndsWith("see 'fastvideo --help' for the usage\n", stderr);

        (code, _, stderr) = Run("dataset", "sytnh");
        Assert.Equal(2, code);
        Assert.Contains("Did you mean one of the following?\nsynth\n", stderr);
        Assert.EndsWith("see 'fastvideo dataset --help' for the usage\n", stderr);
    }

    [Theory]
    [InlineData(new[] { "dataset", "synth" }, "Option '--out' is required.")]
    [InlineData(new[] { "export", "ckpt", "--role", "student" }, "Option '--out' is required.")]
    [InlineData(new[] { "export", "--out", "x" }, "Required argument 'CHECKPOINT' missing for command: 'export'.")]
    [InlineData(new[] { "config", "show" }, "Required argument 'RECIPE' missing for command: 'show'.")]
    [InlineData(new[] { "dataset", "synth", "--out" }, "Required argument missing for option: '--out'.")]
    [InlineData(new[] { "generate", "--model", "m", "--prompt-embeds", "p", "--steps", "2", "--guidance-scale", "1", "--flow-shift", "3" },
        "Option '--output-latents' is required.")]
    public void AMissingRequiredValueExits2AndNamesIt(string[] args, string message)
    {
        var (code, stdout, stderr) = Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains($"error: {message}\n", stderr);
        Assert.Contains(" --help' for the usage\n", stderr);
    }

    [Theory]
    [InlineData("--steps", "x", "--steps expects an integer, got 'x'")]
    [InlineData("--steps", "1.5", "--steps expects an integer, got '1.5'")]
    [InlineData("--guidance-scale", "strong", "--guidance-scale expects a number, got 'strong'")]
    [InlineData("--seed", "one", "--seed expects an integer, got 'one'")]
    [InlineData("--dtype", "fp8", "--dtype expects one of fp32, bf16, fp16, got 'fp8'")]
    public void ABadValueExits2AndNamesTheOption(string option, string value, string message)
    {
        var options = new Dictionary<string, string>
        {
            ["--model"] = "m", ["--prompt-embeds"] = "p", ["--steps"] = "2", ["--guidance-scale"] = "1", ["--flow-shift"] = "3", ["--output-latents"] = "o",
        };
        options[option] = value;
        var (code, _, stderr) = Run(["generate", .. options.SelectMany(kv => new[] { kv.Key, kv.Value })]);
        Assert.Equal(2, code);
        Assert.StartsWith($"error: {message}\n", stderr);
    }

    [Fact]
    public void ChecksInACommandAreUserErrors_Exit2_WithoutAStackTrace()
    {
        var (code, _, stderr) = Run("train", "--set", "a=1");
        Assert.Equal(2, code);
        Assert.Equal("error: train: missing RECIPE (overrides and --dry-run need one; 'fastvideo train' alone runs the quickstart)\n", stderr);

        (code, _, stderr) = Run("generate", "--model", "/nonexistent/model", "--prompt-embeds", "p", "--steps", "0", "--guidance-scale", "1",
            "--flow-shift", "3", "--output-latents", "o");
        Assert.Equal(2, code);
        Assert.Equal("error: --steps must be >= 1\n", stderr);
    }

    [Theory]
    [InlineData("fastvideo tra", "train")]
    [InlineData("fastvideo dataset sy", "synth")]
    [InlineData("fastvideo train --dry", "--dry-run")]
    [InlineData("fastvideo dataset synth --start ", "random\nedge\nlane\nline")]
    [InlineData("fastvideo generate --dtype b", "bf16")]
    [InlineData("fastvideo generate --family w", "wan")]
    public void TheSuggestDirectiveListsCompletions(string line, string expected)
    {
        var (code, stdout, stderr) = Run($"[suggest:{line.Length}]", line);
        Assert.Equal(0, code);
        Assert.Equal("", stderr);
        var completions = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        foreach (var word in expected.Split('\n')) Assert.Contains(word, completions);
    }
}

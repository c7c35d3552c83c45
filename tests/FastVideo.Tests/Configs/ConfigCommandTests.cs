using FastVideo.Cli.Commands;
using FastVideo.Configs;
using Xunit;
using static FastVideo.Tests.Configs.RecipeTestSupport;

namespace FastVideo.Tests.Configs;

public class ConfigCommandTests
{
    [Fact]
    public void ShowPrintsTheResolvedRecipeWithOverrides()
    {
        var dir = Directory.CreateTempSubdirectory("fv-config-");
        try
        {
            var path = Path.Combine(dir.FullName, "recipe.yaml");
            File.WriteAllText(path, Example);
            var output = new StringWriter();
            int code = ConfigCommand.Run(path, ["training.loop.max_train_steps=9", "pipeline.flow_shift=4.5"], TestFamilies.Instance, output);
            Assert.Equal(0, code);
            var text = output.ToString();
            Assert.StartsWith("recipe:\n  family: wan\n  method: dmd2\nroles:\n", text);
            Assert.Contains("\n    max_train_steps: 9\n", text);
            Assert.Contains("\npipeline:\n  flow_shift: 4.5\n", text);
            Assert.Contains("\n    min_lr_ratio: 0.5\n", text); // a filled-in default
            Assert.Contains("\n    project_name: fastvideo\n", text);
            // What is stored and what is computed in which dtype, as a comment line at the end.
            Assert.Matches(@"\n# dtypes: weights stored in fp32 \(training.dit_precision\), computed in (bf16|fp32) \(training.compute_precision auto: ", text);
            // The method's and the callbacks' options, defaults filled in like training:'s.
            Assert.Contains("\nmethod:\n  lr_step_rules: null\n  rollout_mode: simulate\n  generator_update_interval: 1\n", text);
            Assert.Contains("\n  real_score_guidance_scale: 1.0\n", text);
            Assert.Contains("\n  cfg_uncond: null\ntraining:\n", text);
            Assert.Contains("\ncallbacks:\n  grad_clip:\n    max_grad_norm: 1.0\n    log_grad_norms: true\n  ema:\n    decay: 0.999\n    start_iter: 0\npipeline:\n", text);
            Assert.Equal(RecipePrinter.ToYaml(Load(Example, "training.loop.max_train_steps=9", "pipeline.flow_shift=4.5")), text[..text.IndexOf("# dtypes:")]);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void TheCommandLineTakesBothSetForms()
    {
        var dir = Directory.CreateTempSubdirectory("fv-config-");
        try
        {
            var path = Path.Combine(dir.FullName, "recipe.yaml");
            File.WriteAllText(path, Minimal);
            var (stdout, stderr) = (new StringWriter(), new StringWriter());
            int code = Cli.Cli.Run(["config", "show", path, "--set", "training.loop.max_train_steps=9", "--set=pipeline.flow_shift=4.5"], stdout, stderr);
            Assert.True(code == 0, stderr.ToString());
            Assert.Contains("\n    max_train_steps: 9\n", stdout.ToString());
            Assert.Contains("\npipeline:\n  flow_shift: 4.5\n", stdout.ToString());
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Theory]
    [InlineData(new[] { "config" }, "Required command was not provided.", "fastvideo config --help")]
    [InlineData(new[] { "config", "print", "r.yaml" }, "Unrecognized command or argument 'print'", "fastvideo config --help")]
    [InlineData(new[] { "config", "show" }, "Required argument 'RECIPE' missing", "fastvideo config show --help")]
    [InlineData(new[] { "config", "show", "a.yaml", "b.yaml" }, "Unrecognized command or argument 'b.yaml'", "fastvideo config show --help")]
    [InlineData(new[] { "config", "show", "a.yaml", "--set" }, "Required argument missing for option: '--set'", "fastvideo config show --help")]
    [InlineData(new[] { "config", "show", "a.yaml", "--verbose" }, "Unrecognized command or argument '--verbose'", "fastvideo config show --help")]
    [InlineData(new[] { "config", "show", "--verbose", "a.yaml" }, "Unrecognized command or argument '--verbose'", "fastvideo config show --help")]
    public void BadUsageIsExitCode2WithAPointerToTheUsage(string[] args, string expected, string pointer)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(args, stdout, stderr));
        Assert.Contains("error: " + expected, stderr.ToString());
        Assert.Contains($"see '{pointer}' for the usage", stderr.ToString());
        Assert.Equal("", stdout.ToString());
    }

    [Fact]
    public void RecipeErrorsPropagate()
    {
        var path = Path.Combine(Path.GetTempPath(), $"missing-{Guid.NewGuid():N}.yaml");
        var e = Assert.Throws<RecipeError>(() => ConfigCommand.Run(path, [], TestFamilies.Instance, new StringWriter()));
        Assert.Contains("recipe file not found", e.Message);
    }
}

using FastVideo.Cli.Commands;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using Xunit;

namespace FastVideo.Tests.Configs;

/// <summary><c>fastvideo methods</c>: every method and callback with its options, types, defaults and descriptions.</summary>
public class MethodsCommandTests
{
    [Fact]
    public void MethodsCommandListsMethodsAndCallbacksWithTheirOptions()
    {
        var output = new StringWriter();
        Assert.Equal(0, MethodsCommand.Run(MethodRegistry.Default, CallbackRegistry.Default, output));
        var text = output.ToString();
        var lines = text.Split('\n');
        string Line(string start) => Assert.Single(lines, l => l.TrimStart().StartsWith(start + " ", StringComparison.Ordinal));

        Assert.StartsWith("dmd2: DMD2 distribution-matching distillation", text);
        Assert.Contains("\nfinetune: flow-matching supervised finetuning", text);
        Assert.Contains("\n  FastVideo class path (method._target_): fastvideo.train.methods.distribution_matching.dmd2.DMD2Method, ", text);
        Assert.Contains("\n  FastVideo class path (callbacks.<name>._target_): fastvideo.train.callbacks.ema.EMACallback, ", text);
        Assert.Matches(@"^    rollout_mode +simulate\|data_latent +\(required\) +how the student's samples are made", Line("rollout_mode"));
        Assert.Matches(@"^    generator_update_interval +int +default 1 +update the student every N steps", Line("generator_update_interval"));
        Assert.Matches(@"^    dmd_denoising_steps +list\[int\] +\(required\)", Line("dmd_denoising_steps"));
        Assert.Matches(@"^    real_score_guidance_scale +float +default 1\.0 ", Line("real_score_guidance_scale"));
        Assert.Matches(@"^    cfg_uncond +map\? +default null ", Line("cfg_uncond"));
        Assert.Equal(2, lines.Count(l => l.TrimStart().StartsWith("lr_step_rules ", StringComparison.Ordinal))); // dmd2 and finetune

        Assert.Contains("\ncallbacks (callbacks.<name>):\nema: exponential moving average", text);
        Assert.Matches(@"^    decay +float +default 0\.9999 ", Line("decay"));
        Assert.Matches(@"^    max_grad_norm +float +default 1\.0 ", Line("max_grad_norm"));
        Assert.Matches(@"^    every_steps +int +default 100 ", Line("every_steps"));
        Assert.Matches(@"^    roles +list\[string\] +default \[student\] ", Line("roles"));

        var cli = new StringWriter();
        Assert.Equal(0, FastVideo.Cli.Cli.Run(["methods"], cli, new StringWriter()));
        Assert.Equal(text, cli.ToString());
        var usage = new StringWriter();
        Assert.Equal(0, FastVideo.Cli.Cli.Run(["--help"], usage, new StringWriter()));
        Assert.Contains("\n  methods ", usage.ToString());
        var stderr = new StringWriter();
        Assert.Equal(ExitCodes.BadInput, FastVideo.Cli.Cli.Run(["methods", "dmd2"], new StringWriter(), stderr));
        Assert.Contains("error: Unrecognized command or argument 'dmd2'.", stderr.ToString());
    }
}

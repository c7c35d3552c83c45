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
        // A method's lines: its header "name: ..." and the indented option lines up to the next header.
        string[] Section(string name)
        {
            int start = Array.FindIndex(lines, l => l.StartsWith(name + ": ", StringComparison.Ordinal));
            Assert.True(start >= 0, $"no section '{name}'");
            int end = Array.FindIndex(lines, start + 1, l => l.Length > 0 && !l.StartsWith(' '));
            return lines[start..(end < 0 ? lines.Length : end)];
        }
        string CallbackLine(string start) => Assert.Single(lines[Array.IndexOf(lines, "callbacks (callbacks.<name>):")..],
            l => l.TrimStart().StartsWith(start + " ", StringComparison.Ordinal));
        string Line(string start, string section = "dmd2") => Assert.Single(Section(section), l => l.TrimStart().StartsWith(start + " ", StringComparison.Ordinal));

        Assert.StartsWith("causal_cd: causal consistency distillation", text);
        Assert.Contains("\ndfsft: diffusion-forcing SFT of a causal student", text);
        // FastVideo's spelling of a key that is not snake_case.
        Assert.Matches(@"^    discrete_cd_N +int +default 48 ", Line("discrete_cd_N", "causal_cd"));
        Assert.Contains("\ndmd2: DMD2 distribution-matching distillation", text);
        Assert.Contains("\nfinetune: flow-matching supervised finetuning", text);
        Assert.Contains("\n  FastVideo class path (method._target_): fastvideo.train.methods.distribution_matching.dmd2.DMD2Method, ", text);
        Assert.Contains("\n  FastVideo class path (callbacks.<name>._target_): fastvideo.train.callbacks.ema.EMACallback, ", text);
        Assert.Matches(@"^    rollout_mode +simulate\|data_latent +\(required\) +how the student's samples are made", Line("rollout_mode"));
        Assert.Matches(@"^    generator_update_interval +int +default 1 +update the student every N steps", Line("generator_update_interval"));
        Assert.Matches(@"^    dmd_denoising_steps +list\[int\] +\(required\)", Line("dmd_denoising_steps"));
        Assert.Matches(@"^    real_score_guidance_scale +float +default 1\.0 ", Line("real_score_guidance_scale"));
        Assert.Matches(@"^    cfg_uncond +map\? +default null ", Line("cfg_uncond"));
        Assert.Equal(MethodRegistry.Default.Names.Count, lines.Count(l => l.TrimStart().StartsWith("lr_step_rules ", StringComparison.Ordinal)));

        // The causal methods, each with its own options.
        foreach (var method in new[] { "dfsft", "tfsft" })
        {
            Assert.Matches(@"^    chunk_size +int +default 3 ", Line("chunk_size", method));
            Assert.Matches(@"^    loss_weighting +none\|gaussian +default none ", Line("loss_weighting", method));
            Line("min_timestep_ratio", method);
            Line("max_timestep_ratio", method);
        }
        foreach (var method in new[] { "kd", "kd_causal" })
        {
            Assert.Matches(@"^    t_list +list\[int\] +\(required\) ", Line("t_list", method));
            Assert.Matches(@"^    teacher_path_cache +string +\(required\) ", Line("teacher_path_cache", method));
            Assert.Matches(@"^    teacher_inference_steps +int +default 48 ", Line("teacher_inference_steps", method));
            Line("teacher_guidance_scale", method);
            Line("student_sample_steps", method);
        }
        Assert.Matches(@"^    num_frames_per_block +int\? +default null ", Line("num_frames_per_block", "kd_causal"));

        Assert.Contains("\ncallbacks (callbacks.<name>):\nema: exponential moving average", text);
        Assert.Matches(@"^    decay +float +default 0\.9999 ", CallbackLine("decay"));
        Assert.Matches(@"^    max_grad_norm +float +default 1\.0 ", CallbackLine("max_grad_norm"));
        Assert.Matches(@"^    every_steps +int +default 100 ", CallbackLine("every_steps"));
        Assert.Matches(@"^    roles +list\[string\] +default \[student\] ", CallbackLine("roles"));

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

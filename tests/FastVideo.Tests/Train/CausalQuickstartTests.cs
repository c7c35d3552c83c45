using System.Text.Json.Nodes;
using FastVideo.Data.Synthetic;
using FastVideo.Models.Dits;
using FastVideo.Train.Quickstart;
using Xunit;

namespace FastVideo.Tests.Train;

/// <summary>The causal quickstart end to end at toy size: teacher (trained, then reused), KD, Self-Forcing, evaluation,
/// the long streamed clip, report and summary.</summary>
public class CausalQuickstartTests
{
    private static readonly string[] Tiny = ["pipeline.text_len=6", "training.data.train_batch_size=2", "training.data.num_latent_t=2",
        "training.data.num_height=8", "training.data.num_width=8"];

    private static QuickstartOptions Options(string root) => new()
    {
        OutDir = root, Scenario = QuickstartScenario.Causal, TeacherSteps = 6, TeacherSamplingSteps = 3, EvalSeeds = [1, 2],
        KdSteps = 2, SelfForcingSteps = 2,
        Data = new SyntheticOptions { Colors = 2, Directions = 2, ClipsPerClass = 2, Frames = 2, Height = 8, Width = 8, ShapeSize = 3, TextLen = 6, EmbedDim = 16, Seed = 1 },
        Model = new WanTransformerConfig { NumAttentionHeads = 2, AttentionHeadDim = 12, InChannels = 3, OutChannels = 3, TextDim = 16, FfnDim = 32, NumLayers = 1 }.ToJson(),
        TeacherOverrides = ["pipeline.text_len=6", "training.data.train_batch_size=2"],
        // An 8-step teacher ODE: the t_list 1000, 750, 500, 250 are points of its grid.
        KdOverrides = [.. Tiny, "method.teacher_inference_steps=8"],
        SelfForcingOverrides = Tiny,
    };

    [Fact]
    public void CausalQuickstartTrainsOrReusesTheTeacherAndWritesReportAndSummary()
    {
        var root = TestPaths.TempDir("qs-causal");
        var o = Options(root);
        var log = new StringWriter();
        var first = CausalQuickstartRunner.Run(o, log);
        Assert.False((bool)first["teacher_reused"]!);
        Assert.Contains("[2/5] teacher: flow matching for 6 steps", log.ToString());
        static byte[] Weights(string dir) => File.ReadAllBytes(Path.Combine(dir, "transformer", "diffusion_pytorch_model.safetensors"));
        var teacherBytes = Weights(Path.Combine(root, "teacher_model"));

        Assert.Null(first["long_tuned"]);

        // Again into the same folder: the teacher is the one already there, the causal stages run again, now with
        // streaming long tuning (streams of 4 frames, 2 scored: 1 earlier + 1 new), whose student streams the long clips.
        log = new StringWriter();
        o = o with { LongTuningSteps = 2, LongTuningOverrides = [.. Tiny.Select(x => x.Replace("num_latent_t=2", "num_latent_t=4")),
            "method.streaming_chunk_size=2", "method.streaming_fixed_overlap_latents=1"] };
        var summary = CausalQuickstartRunner.Run(o, log);
        Assert.Contains("[4b/5] streaming long tuning for 2 steps: streams of 4 frames", log.ToString());
        Assert.True((bool)summary["teacher_reused"]!);
        Assert.Contains($"[2/5] teacher: reusing {Path.Combine(root, "teacher_model")}", log.ToString());
        Assert.Equal(teacherBytes, Weights(Path.Combine(root, "teacher_model")));

        var dir = Path.Combine(root, CausalQuickstartRunner.Folder);
        var onDisk = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")))!;
        Assert.Equal(summary.ToJsonString(), onDisk.ToJsonString());
        const int samples = 4 * 2;   // 2 colours x 2 axes, 2 seeds
        Assert.Equal(samples, (int)onDisk["samples_per_generator"]!);
        Assert.Equal("long_tuned", (string)onDisk["streaming"]!["generator"]!);
        foreach (var name in new[] { "teacher", "ode_init", "student", "long_tuned" })
        {
            var g = onDisk[name]!;
            foreach (var k in new[] { "accuracy", "color_accuracy", "direction_accuracy", "object_accuracy" })
            {
                double v = (double)g[k]!;
                Assert.InRange(v, 0, 1);
                Assert.True(Math.Abs(v * samples - Math.Round(v * samples)) < 1e-3, $"{name}.{k} = {v} is not a share of {samples} samples");
            }
            Assert.True((double)g["sharpness"]! >= 0);
        }
        Assert.Equal(3, (int)onDisk["teacher"]!["steps"]!);
        Assert.Equal(4, (int)onDisk["ode_init"]!["steps"]!);
        Assert.Equal(4, (int)onDisk["student"]!["steps"]!);
        Assert.Equal(4, (int)onDisk["long_tuned"]!["steps"]!);

        var streaming = onDisk["streaming"]!;
        Assert.Equal(4, (int)streaming["frames"]!);           // twice the training clips' 2 frames
        Assert.Equal(2, (int)streaming["training_frames"]!);
        Assert.Equal(4, streaming["block_seconds"]!.AsArray().Count);   // one block per frame
        double fps = (double)streaming["frames_per_second"]!;
        Assert.True(fps > 0 && double.IsFinite(fps));
        var half = streaming["second_half"]!;
        Assert.Equal(samples, (int)half["samples"]!);
        Assert.Equal(2, (int)half["from_frame"]!);
        foreach (var k in new[] { "color_accuracy", "direction_accuracy", "same_color_as_first_half", "same_direction_as_first_half", "kept" })
            Assert.InRange((double)half[k]!, 0, 1);
        Assert.True((double)half["kept"]! <= Math.Min((double)half["color_accuracy"]!, (double)half["same_direction_as_first_half"]!));
        Assert.Equal(-1, (int)half["local_attn_size"]!);
        Assert.Equal(2, (int)streaming["second_half_local_window"]!["local_attn_size"]!);
        Assert.Equal(samples, (int)streaming["second_half_local_window"]!["samples"]!);
        var checks = onDisk["checks"]!;
        Assert.Equal((double)onDisk["student"]!["accuracy"]! >= 0.85 * (double)onDisk["teacher"]!["accuracy"]!, (bool)checks["student_reaches_85_percent_of_teacher"]!);
        Assert.Equal((double)half["kept"]!, (double)checks["long_clip_second_half_kept"]!);
        Assert.Equal((double)streaming["second_half_local_window"]!["kept"]!, (double)checks["long_clip_second_half_kept_local_window"]!);

        // Each stage trained and exported its own weights: KD moved the student off the teacher, Self-Forcing off KD.
        var ode = Weights(Path.Combine(dir, "ode_init_model"));
        var student = Weights(Path.Combine(dir, "student_model"));
        Assert.NotEqual(teacherBytes, ode);
        Assert.NotEqual(ode, student);
        Assert.Contains("CausalWanTransformer3DModel", File.ReadAllText(Path.Combine(dir, "student_model", "transformer", "config.json")));
        Assert.Equal(2, File.ReadLines(Path.Combine(dir, "ode_init", "metrics.jsonl")).Count());
        Assert.Equal(2, File.ReadLines(Path.Combine(dir, "student", "metrics.jsonl")).Count());
        Assert.NotEqual(student, Weights(Path.Combine(dir, "long_tuned_model")));
        Assert.Equal(2, File.ReadLines(Path.Combine(dir, "long_tuning", "metrics.jsonl")).Count());

        var html = File.ReadAllText(Path.Combine(dir, "report.html"));
        Assert.Equal(6, html.Split("<svg").Length - 1);   // teacher, KD, Self-Forcing and long tuning generator and critic losses
        Assert.Contains("Streaming a clip twice as long", html);
        var media = Path.Combine(dir, "media");
        foreach (var gif in new[] { "teacher_00.gif", "ode_init_03.gif", "student_03.gif", "long_tuned_03.gif", "long_timed.gif", "long_03.gif" })
            Assert.True(File.Exists(Path.Combine(media, gif)), gif);
        Assert.True(File.Exists(Path.Combine(root, "teacher", "metrics.jsonl")));
        Assert.False(File.Exists(Path.Combine(root, "summary.json")));   // the default scenario's files are its own
    }

    [Fact]
    public void DefaultScenarioOptionsAreRefused()
    {
        var root = TestPaths.TempDir("qs-causal-opts");
        Assert.Contains("--reuse-teacher", Assert.Throws<UserError>(() => CausalQuickstartRunner.Run(Options(root) with { ReuseTeacher = true }, TextWriter.Null)).Message);
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["quickstart", "--scenario", "causal", "--out", root, "--distill-steps", "3"], stdout, stderr));
        Assert.StartsWith("error: --distill-steps is an option of the default scenario, not of --scenario causal\n", stderr.ToString());
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["quickstart", "--out", root, "--kd-steps", "3"], stdout, stderr = new StringWriter()));
        Assert.StartsWith("error: --kd-steps is an option of the causal scenario, not of --scenario default\n", stderr.ToString());
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["quickstart", "--out", root, "--long-tuning-steps", "3"], stdout, stderr = new StringWriter()));
        Assert.StartsWith("error: --long-tuning-steps is an option of the causal scenario, not of --scenario default\n", stderr.ToString());
    }

    [Fact]
    public void TeacherOptions_AreRefusedWhenTheFolderHasATeacherToReuse_AndModelSetsMustBeJson()
    {
        var root = TestPaths.TempDir("qs-teacher-opts");
        StringWriter stdout = new(), stderr = new();
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["quickstart", "--out", root, "--teacher-model-set", "num_layers"], stdout, stderr));
        Assert.StartsWith("error: --teacher-model-set 'num_layers': expected KEY=VALUE", stderr.ToString());
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["quickstart", "--out", root, "--teacher-model-set", "num_layers=six"], stdout, stderr = new StringWriter()));
        Assert.StartsWith("error: --teacher-model-set num_layers: 'six' is not a JSON value", stderr.ToString());

        // A finished teacher (its exported weights) makes the causal scenario, and the default one with --reuse-teacher, reuse it.
        var weights = Path.Combine(root, "teacher_model", "transformer", "diffusion_pytorch_model.safetensors");
        Directory.CreateDirectory(Path.GetDirectoryName(weights)!);
        File.WriteAllText(weights, "");
        foreach (var args in new[]
        {
            new[] { "quickstart", "--scenario", "causal", "--out", root, "--teacher-steps", "10" },
            ["quickstart", "--scenario", "causal", "--out", root, "--teacher-model-set", "num_layers=6"],
            ["quickstart", "--reuse-teacher", "--out", root, "--teacher-set", "training.data.seed=1"],
        })
        {
            Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(args, stdout, stderr = new StringWriter()));
            Assert.StartsWith($"error: {args[^2]}: {root} has a finished teacher, which this run reuses without training it", stderr.ToString());
        }
        Assert.Equal([weights], Directory.GetFiles(root, "*", SearchOption.AllDirectories));   // nothing written
    }
}

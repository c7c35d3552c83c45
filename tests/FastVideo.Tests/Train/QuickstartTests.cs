using System.Text.Json.Nodes;
using FastVideo.Data.Synthetic;
using FastVideo.Models.Dits;
using FastVideo.Train.Quickstart;
using Xunit;

namespace FastVideo.Tests.Train;

/// <summary>The quickstart's whole pipeline at toy size: data, teacher, DMD2 student, evaluation, report, summary.</summary>
public class QuickstartTests
{
    [Fact]
    public void QuickstartWritesReportAndSummary()
    {
        var root = TestPaths.TempDir("qs");
        const int teacherSteps = 24, prompts = 4;
        long[] seeds = [1, 2];
        var o = new QuickstartOptions
        {
            OutDir = root, TeacherSteps = teacherSteps, DistillSteps = 2, TeacherSamplingSteps = 3, EvalSeeds = seeds,
            Data = new SyntheticOptions { Colors = 2, Directions = 2, ClipsPerClass = 4, Frames = 2, Height = 8, Width = 8, ShapeSize = 3, TextLen = 6, EmbedDim = 16, Seed = 1 },
            Model = new WanTransformerConfig { NumAttentionHeads = 2, AttentionHeadDim = 12, InChannels = 3, OutChannels = 3, TextDim = 16, FfnDim = 32, NumLayers = 1 }.ToJson(),
            // No warmup, so the teacher's few steps learn at the recipe's rate.
            TeacherOverrides = ["pipeline.text_len=6", "training.data.train_batch_size=2", "training.optimizer.lr_warmup_steps=0"],
            DistillOverrides = ["pipeline.text_len=6", "training.data.train_batch_size=2", "training.data.num_latent_t=2",
                "training.data.num_height=8", "training.data.num_width=8"],
        };
        var log = new StringWriter();
        var summary = QuickstartRunner.Run(o, log);

        var onDisk = JsonNode.Parse(File.ReadAllText(Path.Combine(root, "summary.json")))!;
        string[] generators = ["teacher", "student", "undistilled", "undistilled_fewstep"];
        int samples = prompts * seeds.Length;
        Assert.Equal(samples, (int)onDisk["samples_per_generator"]!);
        foreach (var name in generators)
        {
            var g = onDisk[name]!;
            Assert.True((double)g["sharpness"]! >= 0);
            Assert.True((int)g["steps"]! > 0);
            // Every score is a share of the prompts x seeds samples, and a correct sample has the right colour, the
            // right direction and one object: accuracy is at most each of those.
            var scores = new[] { "accuracy", "color_accuracy", "direction_accuracy", "object_accuracy" }.ToDictionary(k => k, k => (double)g[k]!);
            foreach (var (k, v) in scores)
            {
                Assert.InRange(v, 0, 1);
                Assert.True(Math.Abs(v * samples - Math.Round(v * samples)) < 1e-3, $"{name}.{k} = {v} is not a share of {samples} samples");
            }
            Assert.True(scores["accuracy"] <= new[] { scores["color_accuracy"], scores["direction_accuracy"], scores["object_accuracy"] }.Min(), name);
        }
        Assert.Equal(3, (int)onDisk["teacher"]!["steps"]!);
        Assert.Equal(4, (int)onDisk["student"]!["steps"]!);
        Assert.Equal(4, (int)onDisk["undistilled"]!["steps"]!);
        Assert.True((double)onDisk["wall_seconds"]! > 0);
        Assert.Equal((double)summary["wall_seconds"]!, (double)onDisk["wall_seconds"]!);

        // The teacher learned: its flow-matching loss over the last steps is below the first steps' (about 2.2 -> 1.9
        // here; per-step noise is about 0.1, so the means of 8 steps are far apart).
        var teacherLoss = Metric(Path.Combine(root, "teacher", "metrics.jsonl"), "finetune_loss");
        Assert.Equal(teacherSteps, teacherLoss.Count);
        Assert.True(teacherLoss.TakeLast(8).Average() < 0.95 * teacherLoss.Take(8).Average(),
            $"teacher loss did not fall: {string.Join(", ", teacherLoss.Select(v => v.ToString("0.000")))}");
        // The student's two DMD2 steps: the critic alone at step 1 (generator_update_interval 2), both at step 2; the
        // generator loss is positive once the critic has moved away from the teacher, and every loss is finite.
        var genLoss = Metric(Path.Combine(root, "student", "metrics.jsonl"), "generator_loss");
        var criticLoss = Metric(Path.Combine(root, "student", "metrics.jsonl"), "fake_score_loss");
        Assert.Equal(0, genLoss[0]);
        Assert.True(double.IsFinite(genLoss[1]) && genLoss[1] > 0, $"generator loss at step 2: {genLoss[1]}");
        Assert.All(criticLoss, v => Assert.True(double.IsFinite(v) && v > 0));
        Assert.NotEqual(criticLoss[0], criticLoss[1]);
        // Training changed the weights it exports: teacher from its init, student from the teacher.
        static byte[] Weights(string dir) => File.ReadAllBytes(Path.Combine(dir, "transformer", "diffusion_pytorch_model.safetensors"));
        Assert.NotEqual(Weights(Path.Combine(root, "teacher_init")), Weights(Path.Combine(root, "teacher_model")));
        Assert.NotEqual(Weights(Path.Combine(root, "teacher_model")), Weights(Path.Combine(root, "student_model")));

        var html = File.ReadAllText(Path.Combine(root, "report.html"));
        Assert.Equal(3, html.Split("<svg").Length - 1);       // loss curves: teacher finetune_loss, student generator and critic losses
        // The sample grid: one row per prompt, one cell per generator, each cell a GIF of its own.
        var media = Path.Combine(root, "media");
        Assert.Equal(generators.Length * prompts, Directory.GetFiles(media, "*.gif").Length);
        var cells = System.Text.RegularExpressions.Regex.Matches(html, "<img src='media/([a-z_]+)_(\\d\\d)\\.gif'").Select(m => (m.Groups[1].Value, int.Parse(m.Groups[2].Value))).ToList();
        Assert.Equal(generators.SelectMany(g => Enumerable.Range(0, prompts).Select(p => (g, p))).Order(), cells.Order());
        // The teacher at 3 Euler steps and at 4 are different samplers: their clips differ.
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(media, "teacher_00.gif")), File.ReadAllBytes(Path.Combine(media, "undistilled_00.gif")));
        Assert.InRange((double)onDisk["student"]!["object_accuracy"]!, 0, 1); // the dataset knows its shape area
        Assert.True(File.Exists(Path.Combine(root, "student_model", "transformer", "diffusion_pytorch_model.safetensors")));
        Assert.Contains("[4/4] evaluation", log.ToString());
        Assert.Contains($"{prompts} prompts x {seeds.Length} seeds = {samples} samples per generator", log.ToString());
    }

    private static List<double> Metric(string metricsJsonl, string key) =>
        File.ReadLines(metricsJsonl).Select(l => JsonNode.Parse(l)!).Where(n => n[key] is not null).Select(n => (double)n[key]!).ToList();

    [Fact]
    public void StageRecipesAreEmbeddedAndValid()
    {
        foreach (var name in new[] { "quickstart_teacher.yaml", "quickstart_dmd2.yaml" })
        {
            var text = QuickstartRunner.EmbeddedRecipe(name);
            var cfg = FastVideo.Configs.RecipeLoader.LoadText(text, name, [], FastVideo.Train.Models.ModelFamilyRegistry.Default);
            Assert.True(cfg.Training.Loop.MaxTrainSteps > 0);
            Assert.Equal(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "examples", "recipes", name)), text);
        }
    }

    [Fact]
    public void OverwriteMovesAnEarlierQuickstartAsideAndRefusesReuseTeacherWithIt()
    {
        var root = TestPaths.TempDir("qs-over");
        File.WriteAllText(Path.Combine(root, "summary.json"), "{\"earlier\": true}");
        var o = new QuickstartOptions
        {
            OutDir = root, TeacherSteps = 2, DistillSteps = 1, TeacherSamplingSteps = 2, EvalSeeds = [1], Overwrite = true,
            Data = new SyntheticOptions { Colors = 2, Directions = 2, ClipsPerClass = 2, Frames = 2, Height = 8, Width = 8, ShapeSize = 3, TextLen = 6, EmbedDim = 16, Seed = 1 },
            Model = new WanTransformerConfig { NumAttentionHeads = 2, AttentionHeadDim = 12, InChannels = 3, OutChannels = 3, TextDim = 16, FfnDim = 32, NumLayers = 1 }.ToJson(),
            TeacherOverrides = ["pipeline.text_len=6", "training.data.train_batch_size=2"],
            DistillOverrides = ["pipeline.text_len=6", "training.data.train_batch_size=2", "training.data.num_latent_t=2",
                "training.data.num_height=8", "training.data.num_width=8"],
        };
        Assert.Throws<UserError>(() => QuickstartRunner.Run(o with { ReuseTeacher = true }, TextWriter.Null));
        Assert.True(File.Exists(Path.Combine(root, "summary.json")));   // refused before anything moved

        var log = new StringWriter();
        QuickstartRunner.Run(o, log);
        var aside = Assert.Single(Directory.GetDirectories(Path.GetDirectoryName(root)!, Path.GetFileName(root) + ".previous-*"));
        Assert.Equal("{\"earlier\": true}", File.ReadAllText(Path.Combine(aside, "summary.json")));   // kept, not deleted
        Assert.Contains($"moved to {aside}", log.ToString());
        Assert.NotNull(JsonNode.Parse(File.ReadAllText(Path.Combine(root, "summary.json")))!["teacher"]);
    }
}

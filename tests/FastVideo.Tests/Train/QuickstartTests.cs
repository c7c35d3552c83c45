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
        var o = new QuickstartOptions
        {
            OutDir = root, TeacherSteps = 3, DistillSteps = 2, TeacherSamplingSteps = 3, EvalSeeds = [1],
            Data = new SyntheticOptions { Colors = 2, Directions = 2, ClipsPerClass = 4, Frames = 2, Height = 8, Width = 8, ShapeSize = 3, TextLen = 6, EmbedDim = 16, Seed = 1 },
            Model = new WanTransformerConfig { NumAttentionHeads = 2, AttentionHeadDim = 12, InChannels = 3, OutChannels = 3, TextDim = 16, FfnDim = 32, NumLayers = 1 }.ToJson(),
            TeacherOverrides = ["pipeline.text_len=6", "training.data.train_batch_size=2"],
            DistillOverrides = ["pipeline.text_len=6", "training.data.train_batch_size=2", "training.data.num_latent_t=2",
                "training.data.num_height=8", "training.data.num_width=8"],
        };
        var log = new StringWriter();
        var summary = QuickstartRunner.Run(o, log);

        var onDisk = JsonNode.Parse(File.ReadAllText(Path.Combine(root, "summary.json")))!;
        foreach (var name in new[] { "teacher", "student", "undistilled", "undistilled_fewstep" })
        {
            var g = onDisk[name]!;
            Assert.InRange((double)g["accuracy"]!, 0, 1);
            Assert.True((double)g["sharpness"]! >= 0);
            Assert.True((int)g["steps"]! > 0);
        }
        Assert.Equal(3, (int)onDisk["teacher"]!["steps"]!);
        Assert.Equal(4, (int)onDisk["student"]!["steps"]!);
        Assert.Equal(4, (int)onDisk["undistilled"]!["steps"]!);
        Assert.True((double)onDisk["wall_seconds"]! > 0);
        Assert.Equal((double)summary["wall_seconds"]!, (double)onDisk["wall_seconds"]!);

        var html = File.ReadAllText(Path.Combine(root, "report.html"));
        Assert.Contains("<svg", html);                       // loss curves as pictures
        Assert.Contains("media/student_00.gif", html);
        Assert.Equal(4 * 4, Directory.GetFiles(Path.Combine(root, "media"), "*.gif").Length); // 4 generators x 4 prompts
        Assert.InRange((double)onDisk["student"]!["object_accuracy"]!, 0, 1); // the dataset knows its shape area
        Assert.True(File.Exists(Path.Combine(root, "student_model", "transformer", "diffusion_pytorch_model.safetensors")));
        Assert.Contains("[4/4] evaluation", log.ToString());
    }

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
}

using FastVideo.Data.Synthetic;
using FastVideo.Models.Dits;
using TorchSharp;
using Xunit;

namespace FastVideo.Tests.Train;

/// <summary>`fastvideo train` end to end: synthetic parquet data through the real loader into a finetune run.</summary>
public class TrainEndToEndTests
{
    private static (string Recipe, string Out) Setup()
    {
        var root = TestPaths.TempDir("e2e");
        var (data, model) = TrainFixture.SyntheticDataAndModel(root);
        var output = Path.Combine(root, "run");
        var recipe = Path.Combine(root, "recipe.yaml");
        File.WriteAllText(recipe, $"""
            recipe: {"{"}family: wan, method: finetune{"}"}
            roles:
              student: {"{"}init_from: "{model}"{"}"}
            training:
              data: {"{"}data_path: "{data}", train_batch_size: 2, seed: 7, training_cfg_rate: 0.25{"}"}
              optimizer: {"{"}learning_rate: 1.0e-3{"}"}
              loop: {"{"}max_train_steps: 3, gradient_accumulation_steps: 2{"}"}
              checkpoint: {"{"}output_dir: "{output}", training_state_checkpointing_steps: 2{"}"}
            pipeline: {"{"}text_len: 6{"}"}
            """);
        return (recipe, output);
    }

    [Fact]
    public void FinetuneRunsOnSyntheticParquetAndResumes()
    {
        var (recipe, output) = Setup();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = Cli.Cli.Run(["train", recipe], stdout, stderr);
        Assert.True(rc == 0, stderr.ToString() + stdout);
        var lines = File.ReadAllLines(Path.Combine(output, "metrics.jsonl"));
        Assert.Equal(3, lines.Length);
        Assert.Contains("finetune_loss", lines[0]);
        Assert.True(Directory.Exists(Path.Combine(output, "checkpoint-2")));

        // Resume from the latest checkpoint and go one step further.
        rc = Cli.Cli.Run(["train", recipe, "--set", "training.checkpoint.resume_from_checkpoint=latest", "--set", "training.loop.max_train_steps=4"], stdout, stderr);
        Assert.True(rc == 0, stderr.ToString() + stdout);
        Assert.Equal(4, File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Length);
    }
}

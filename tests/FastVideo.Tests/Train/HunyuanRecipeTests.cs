using System.Diagnostics;
using System.Text.Json.Nodes;
using FastVideo.Data;
using FastVideo.Data.Synthetic;
using FastVideo.Models.Dits;
using FastVideo.Weights;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>
/// HunyuanVideo end to end: the synthetic dataset in the hunyuan text layout, a random tiny model from
/// examples/models/hunyuan_tiny.json, the example recipes (finetune, DMD2) run a few steps through `fastvideo train`
/// and resume bit for bit; a dry run of a recipe on a full-size (13B) HunyuanVideo folder of header-only weights.
/// </summary>
public class HunyuanRecipeTests(ITestOutputHelper log)
{
    private static readonly string Examples = Path.Combine(TestPaths.RepoRoot, "examples");

    /// <summary>A small hunyuan-layout dataset and the tiny model made from it by `fastvideo model random`.</summary>
    private static (string Root, string Data, string Model) Setup()
    {
        var root = TestPaths.TempDir("hy-recipe");
        var data = Path.Combine(root, "data");
        SyntheticVideoDataset.Write(new SyntheticOptions
        {
            Colors = 2, Directions = 2, ClipsPerClass = 2, Frames = 4, Height = 16, Width = 16, ShapeSize = 5, Start = SyntheticStart.Edge,
            Captions = SyntheticCaptions.Axis, TextLen = 16, EmbedDim = 32, TextLayout = SyntheticTextLayout.Hunyuan, PooledDim = 16, Seed = 7,
        }, data);
        var model = Path.Combine(root, "model");
        var (code, stdout, stderr) = Run("model", "random", "--family", "hunyuan", "--config", Path.Combine(Examples, "models", "hunyuan_tiny.json"),
            "--pipeline-from", data, "--out", model);
        Assert.True(code == 0, stderr + stdout);
        return (root, data, model);
    }

    private static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = Cli.Cli.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>The example recipe with its runs/ paths pointed at this test's folders.</summary>
    private static string Recipe(string name, string root, string model, string output)
    {
        var text = File.ReadAllText(Path.Combine(Examples, "recipes", "fastvideo", name))
            .Replace("runs/hunyuan_tiny/teacher", model)
            .Replace("runs/hunyuan_tiny", root)
            .Replace("runs/fastvideo_hunyuan_finetune", output)
            .Replace("runs/fastvideo_hunyuan_dmd2", output)
            .Replace("runs/fastvideo_hunyuan_lora", output);
        var path = Path.Combine(root, Path.GetFileNameWithoutExtension(name) + "-" + Path.GetFileName(output) + ".yaml");
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>Trains <paramref name="steps"/> steps (resuming from the latest checkpoint when asked); checkpoints every 2 steps.</summary>
    private static void Train(string recipe, int steps, bool resume, params string[] extra)
    {
        var args = new List<string> { "train", "--config", recipe, "--training.loop.max_train_steps", $"{steps}",
            "--training.checkpoint.training_state_checkpointing_steps", "2", "--training.checkpoint.checkpoints_total_limit", "3" };
        if (resume) args.AddRange(["--training.checkpoint.resume_from_checkpoint", "latest"]);
        args.AddRange(extra);
        var (code, stdout, stderr) = Run([.. args]);
        Assert.True(code == 0, stderr + stdout);
    }

    /// <summary>Each metrics line's values except the timings.</summary>
    private static List<string> Metrics(string output) => File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(line =>
    {
        var o = JsonNode.Parse(line)!.AsObject();
        return string.Join(", ", o.Where(kv => !kv.Key.StartsWith("time/") && !kv.Key.EndsWith("_sec") && !kv.Key.Contains("seconds"))
            .OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value?.ToJsonString()}"));
    }).ToList();

    private void ResumesBitForBit(string recipeName, string lossKey, params string[] extra)
    {
        var (root, _, model) = Setup();
        var straight = Path.Combine(root, "straight");
        var resumed = Path.Combine(root, "resumed");
        Train(Recipe(recipeName, root, model, straight), 4, resume: false, extra);
        var recipe = Recipe(recipeName, root, model, resumed);
        Train(recipe, 2, resume: false, extra);
        Train(recipe, 4, resume: true, extra);

        var a = Metrics(straight);
        var b = Metrics(resumed);
        Assert.Equal(4, a.Count);
        Assert.Equal(4, b.Count);
        for (int i = 0; i < 4; i++) Assert.True(a[i] == b[i], $"step {i + 1}:\nstraight {a[i]}\nresumed  {b[i]}");
        Assert.Contains(lossKey, a[0]);
        Assert.NotEqual(a[2], a[3]);   // the runs do move
        // The final checkpoints hold the same bytes: weights, optimizer moments, generators.
        var files = Directory.GetFiles(Path.Combine(straight, "checkpoint-4"), "*.safetensors", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(Path.Combine(straight, "checkpoint-4"), f)).Order(StringComparer.Ordinal).ToList();
        Assert.NotEmpty(files);
        Assert.Equal(files, Directory.GetFiles(Path.Combine(resumed, "checkpoint-4"), "*.safetensors", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(Path.Combine(resumed, "checkpoint-4"), f)).Order(StringComparer.Ordinal));
        foreach (var f in files)
            Assert.True(File.ReadAllBytes(Path.Combine(straight, "checkpoint-4", f)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(resumed, "checkpoint-4", f))),
                $"checkpoint-4/{f} differs after resuming");
        log.WriteLine($"{recipeName}: 4 steps straight = 2 + resume 2, {files.Count} checkpoint files identical; last line {a[3]}");
    }

    [Fact]
    public void FinetuneRecipeTrainsAndResumesBitForBit() =>
        // Validation every 2 steps samples through the plugin (the pipeline's sigmas, embedded guidance) and writes GIFs.
        ResumesBitForBit("hunyuan_finetune.yaml", "finetune_loss", "--callbacks.validation.every_steps", "2", "--callbacks.validation.sampling_steps", "[3]");

    [Fact]
    public void Dmd2RecipeTrainsAndResumesBitForBit() => ResumesBitForBit("hunyuan_dmd2.yaml", "fake_score_loss");

    [Fact]
    public void LoraRecipeTrainsAdaptersOnTheLayersItsFastVideoNamesChoose()
    {
        var (root, _, model) = Setup();
        var output = Path.Combine(root, "lora");
        Train(Recipe("hunyuan_lora.yaml", root, model, output), 4, resume: false);
        var losses = Metrics(output);
        Assert.Equal(4, losses.Count);
        // img_attn_qkv/img_attn_proj/txt_attn_qkv/txt_attn_proj = the dual block's 8 attention projections; linear1/linear2 =
        // the single block's q, k, v, proj_mlp and proj_out. Each adapter trained: B (zero at the start) moved.
        string[] expected =
        [
            .. new[] { "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out" }.Select(l => $"transformer_blocks.0.attn.{l}"),
            .. new[] { "attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out" }.Select(l => $"single_transformer_blocks.0.{l}"),
        ];
        var adapters = SafeTensors.Load(Path.Combine(output, "checkpoint-4", "student", "lora", "adapter_model.safetensors"));
        try
        {
            Assert.Equal(expected.SelectMany(l => new[] { l + ".lora_A.weight", l + ".lora_B.weight" }).Order(StringComparer.Ordinal),
                adapters.Keys.Order(StringComparer.Ordinal));
            Assert.All(expected, l => Assert.True(adapters[l + ".lora_B.weight"].abs().max().item<float>() > 0, $"{l}: lora_B did not train"));
            Assert.Equal(8, adapters[expected[0] + ".lora_A.weight"].shape[0]);   // rank 8
        }
        finally
        {
            foreach (var t in adapters.Values) t.Dispose();
        }
    }

    [Fact]
    public void TrainingSeesTheLoadersTextMaskThroughThePlugin()
    {
        // The finetune recipe's data (text_len 16: 1 pooled row + the captions' tokens, padded with zero rows and mask 0),
        // collated as the loader does, reaches the transformer with its mask: padded rows then change no prediction.
        var (root, data, model) = Setup();
        var config = FastVideo.Configs.RecipeLoader.Load(Recipe("hunyuan_finetune.yaml", root, model, Path.Combine(root, "out")), [],
            FastVideo.Train.Models.ModelFamilyRegistry.Default);
        using var ds = ParquetVideoDataset.Open(data);
        var collator = new BatchCollator(config.Pipeline.TextLen!.Value);
        using var raw = collator.Collate([ds.ReadRow(0), ds.ReadRow(1)], [0, 1]);
        var mask = raw.Conditioning[Conditioning.Text].Mask!;
        Assert.True(mask.eq(0).any().item<bool>(), "the captions fill text_len: nothing is padded");
        using var hunyuan = FastVideo.Train.Models.ModelFamilyRegistry.Default.Create("student", config.Roles["student"], config);
        using var gen = new Generator(3, device("cpu"));
        using var tb = hunyuan.PrepareBatch(raw, gen);
        Assert.True(tb.Conditional[Conditioning.Text].Mask!.to_type(ScalarType.Float32).allclose(mask[.., 1..].to_type(ScalarType.Float32), 0, 0));   // row 0 (the pooled vector) is split off
        using var _ = no_grad();
        var v = hunyuan.PredictNoise(tb.Latents, tb.Timesteps, tb, conditional: true);
        var text = tb.Conditional[Conditioning.Text];
        text.Values.add_(text.Mask!.eq(0).unsqueeze(-1).to_type(text.Values.dtype) * 3.0);   // fill the padded rows
        Assert.True(hunyuan.PredictNoise(tb.Latents, tb.Timesteps, tb, conditional: true).allclose(v, 0, 0));
        text.Values.add_(text.Mask!.unsqueeze(-1).to_type(text.Values.dtype) * 0.5);       // the real rows do matter
        Assert.False(hunyuan.PredictNoise(tb.Latents, tb.Timesteps, tb, conditional: true).allclose(v));
    }

    [Fact]
    public void TheSyntheticDatasetWritesTheHunyuanLayout()
    {
        var (_, data, model) = Setup();
        using var ds = ParquetVideoDataset.Open(data);
        var row = ds.ReadRow(0);
        var text = row.Text.ToFloatArray();
        long d = row.Text.Shape[1];
        Assert.Equal(32, d);
        Assert.All(text.AsSpan(16, 16).ToArray(), v => Assert.Equal(0f, v));   // pooled (16) zero-padded to 32
        Assert.Contains(text.Take(16), v => v != 0);
        var encoder = new SyntheticTextEncoder(32, 7);
        Assert.Equal(encoder.Pooled(row.Caption, 16), text.Take(16).ToArray());
        Assert.Equal(encoder.EncodeToArray(row.Caption), text.Skip(32).ToArray());
        // The empty caption is packed the same way, and the VAE config scales (HunyuanVideo's normalisation).
        var negative = SafeTensors.Load(Path.Combine(data, NegativePromptEmbeds.FileName))["negative_prompt_embeds"];
        Assert.Equal(new long[] { 1, 2, 32 }, negative.shape);
        var vae = FastVideo.Models.Vae.VaeConfig.Load(Path.Combine(model, "vae", "config.json"));
        Assert.NotNull(vae.ScalingFactor);
        Assert.Null(vae.LatentsMean);
        var (code, _, stderr) = Run("dataset", "synth", "--out", Path.Combine(TestPaths.TempDir("hy-bad"), "d"), "--pooled-dim", "8");
        Assert.Equal(2, code);
        Assert.Contains("--pooled-dim needs --text-layout hunyuan", stderr);
    }

    [Fact]
    public void DryRunOfAFullSizeHunyuanVideoFolderPrintsItsPlanInSeconds()
    {
        // HunyuanVideo's transformer config (Diffusers' defaults = hunyuanvideo-community/HunyuanVideo) over header-only weights.
        var root = TestPaths.TempDir("hy-13b");
        var folder = Path.Combine(root, "HunyuanVideo");
        var config = new HunyuanVideoTransformerConfig();
        File.WriteAllText(Path.Combine(Directory.CreateDirectory(Path.Combine(folder, "transformer")).FullName, "config.json"), config.ToJson().ToJsonString());
        File.WriteAllText(Path.Combine(folder, "model_index.json"), "{\"_class_name\": \"HunyuanVideoPipeline\"}");
        Directory.CreateDirectory(Path.Combine(folder, "vae"));
        File.WriteAllText(Path.Combine(folder, "vae", "config.json"),
            "{\"_class_name\": \"AutoencoderKLHunyuanVideo\", \"latent_channels\": 16, \"scaling_factor\": 0.476986, \"spatial_compression_ratio\": 8, \"temporal_compression_ratio\": 4}");
        long parameters;
        using (var meta = new HunyuanVideoTransformer3DModel(config, META))
            parameters = HeaderOnlyWeights.Write(meta, Path.Combine(folder, "transformer", "diffusion_pytorch_model.safetensors"));
        var data = Directory.CreateDirectory(Path.Combine(root, "data")).FullName;
        var recipe = Path.Combine(root, "finetune.yaml");
        File.WriteAllText(recipe, $$"""
            models:
              student: {_target_: fastvideo.train.models.hunyuan.HunyuanModel, init_from: "{{folder}}", trainable: true}
            method: {_target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod}
            training:
              data: {data_path: "{{data}}", train_batch_size: 1, num_latent_t: 33, num_height: 720, num_width: 1280}
              optimizer: {learning_rate: 1.0e-5}
              loop: {max_train_steps: 1000}
              checkpoint: {output_dir: "{{Path.Combine(root, "out")}}"}
              model: {enable_gradient_checkpointing_type: full}
              dit_precision: bf16
            pipeline: {flow_shift: 7, text_len: 256}
            """);
        var watch = Stopwatch.StartNew();
        var (code, stdout, stderr) = Run("train", "--config", recipe, "--dry-run");
        watch.Stop();
        Assert.True(code == 0, stderr + stdout);
        log.WriteLine($"dry run in {watch.Elapsed.TotalSeconds:F1} s:\n{stdout}");
        Assert.InRange(parameters, 12_000_000_000, 13_500_000_000);   // HunyuanVideo's ~12.8B-parameter transformer
        Assert.Contains("hunyuan", stdout);
        Assert.Contains(parameters.ToString("N0", System.Globalization.CultureInfo.InvariantCulture), stdout);
        Assert.Contains("(full checkpointing)", stdout);
        Assert.DoesNotContain("unknown", stdout.Split('\n').First(l => l.StartsWith("student")));   // the activation estimate is there
        Assert.True(watch.Elapsed.TotalSeconds < 30, $"the dry run took {watch.Elapsed.TotalSeconds:F1} s");
    }
}

using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Train;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>Deterministic endless batches: batch i is drawn from a generator seeded with (seed, i); state = position.</summary>
internal sealed class RandomBatchSource : IBatchSource
{
    private readonly int _seed;
    private readonly long _poisonAt;
    private readonly int _frames;
    public RandomBatchSource(int seed = 7, long poisonAt = -1, int frames = 2) { _seed = seed; _poisonAt = poisonAt; _frames = frames; }
    public long Position { get; private set; }

    public RawBatch Next()
    {
        using var g = new Generator((ulong)(_seed * 100_003 + Position), device("cpu"));
        var latent = randn([1, 4, _frames, 8, 8], generator: g);
        if (Position == _poisonAt) latent[0, 0, 0, 0, 0] = tensor(float.NaN);
        Position++;
        return new RawBatch { VaeLatent = latent, Conditioning = Conditioning.FromText(randn([1, 7, 24], generator: g), ones(1, 7)) };
    }

    public JsonNode? GetState() => new JsonObject { ["position"] = Position };
    public void Restore(JsonNode? state) => Position = state!["position"]!.GetValue<long>();
    public void Dispose() { }
}

internal static class TrainFixture
{
    /// <summary>
    /// A tiny synthetic dataset (4 classes of 2-frame 8x8 RGB clips) and a tiny 3-channel random Wan pipeline folder
    /// beside it whose vae/config.json is the dataset's identity VAE, as the quickstart lays them out.
    /// </summary>
    public static (string Data, string Model) SyntheticDataAndModel(string root)
    {
        var data = Path.Combine(root, "data");
        FastVideo.Data.Synthetic.SyntheticVideoDataset.Write(new FastVideo.Data.Synthetic.SyntheticOptions
            { Colors = 2, Directions = 2, ClipsPerClass = 2, Frames = 2, Height = 8, Width = 8, ShapeSize = 3, TextLen = 6, EmbedDim = 16, Seed = 1 }, data);
        var model = Path.Combine(root, "model");
        using (var m = FastVideo.Models.Dits.WanTransformer3DModel.CreateRandom(new FastVideo.Models.Dits.WanTransformerConfig
            { NumAttentionHeads = 2, AttentionHeadDim = 12, InChannels = 3, OutChannels = 3, TextDim = 16, FfnDim = 32, NumLayers = 1 }, 3))
            m.SavePretrained(Path.Combine(model, "transformer"));
        File.WriteAllText(Path.Combine(model, "model_index.json"), "{\"_class_name\": \"WanPipeline\"}");
        Directory.CreateDirectory(Path.Combine(model, "vae"));
        File.Copy(Path.Combine(data, "vae", "config.json"), Path.Combine(model, "vae", "config.json"));
        File.Copy(Path.Combine(data, "negative_prompt_embeds.safetensors"), Path.Combine(model, "negative_prompt_embeds.safetensors"));   // as the quickstart's folders
        return (data, model);
    }

    /// <summary>
    /// The same for the hunyuan family: the dataset in the hunyuan text layout (pooled vector of 8 zero-padded to 16,
    /// then the tokens; VAE config with scaling_factor) and a tiny random HunyuanVideo pipeline folder made from it.
    /// </summary>
    public static (string Data, string Model) SyntheticHunyuanDataAndModel(string root)
    {
        var data = Path.Combine(root, "hunyuan-data");
        FastVideo.Data.Synthetic.SyntheticVideoDataset.Write(new FastVideo.Data.Synthetic.SyntheticOptions
        {
            Colors = 2, Directions = 2, ClipsPerClass = 2, Frames = 2, Height = 8, Width = 8, ShapeSize = 3, TextLen = 7, EmbedDim = 16, Seed = 1,
            TextLayout = FastVideo.Data.Synthetic.SyntheticTextLayout.Hunyuan, PooledDim = 8,
        }, data);
        var model = Path.Combine(root, "hunyuan-model");
        FastVideo.Train.Models.RandomModelFolder.Write(FastVideo.Train.Models.Hunyuan.HunyuanModel.Family, new JsonObject
        {
            ["in_channels"] = 3, ["out_channels"] = 3, ["num_attention_heads"] = 2, ["attention_head_dim"] = 8, ["num_layers"] = 1,
            ["num_single_layers"] = 1, ["num_refiner_layers"] = 1, ["mlp_ratio"] = 2.0, ["text_embed_dim"] = 16, ["pooled_projection_dim"] = 8,
            ["rope_axes_dim"] = new JsonArray(2, 2, 4),
        }, 3, model, data);
        return (data, model);
    }

    public static RunConfig Config(string outputDir, int maxSteps = 3, int accum = 1, int saveSteps = 0, int keepLast = 0,
        string resume = "", string scheduler = "constant", int warmup = 0, bool precondition = false,
        IEnumerable<KeyValuePair<string, object>>? callbacks = null,
        bool studentTrainable = true, string initFrom = "", MethodOptions? method = null)
    {
        var run = WanModelTests.Run();
        return run with
        {
            Roles = new Dictionary<string, RoleConfig>
            {
                ["student"] = new RoleConfig { InitFrom = initFrom == "" ? TestPaths.Fixture("wan_tiny") : initFrom, Trainable = studentTrainable },
            },
            Method = method ?? new FastVideo.Train.Methods.FineTuning.FineTuneOptions(),
            Training = run.Training with
            {
                Data = run.Training.Data with { Seed = 1234, TrainBatchSize = 1 },
                Optimizer = new OptimizerConfig { LearningRate = 1e-3, WeightDecay = 0.01, LrScheduler = scheduler, LrWarmupSteps = warmup },
                Loop = new LoopConfig { MaxTrainSteps = maxSteps, GradientAccumulationSteps = accum },
                Checkpoint = new CheckpointConfig
                {
                    OutputDir = outputDir, TrainingStateCheckpointingSteps = saveSteps, CheckpointsTotalLimit = keepLast, ResumeFromCheckpoint = resume,
                },
                Model = run.Training.Model with { PreconditionOutputs = precondition },
            },
            Callbacks = (callbacks ?? []).ToList(),
            Raw = new Dictionary<string, object?> { ["recipe"] = new Dictionary<string, object?> { ["method"] = "finetune", ["family"] = "wan" } },
        };
    }

    /// <summary>A callback entry whose options are bound from plain values by the recipe binder (as from YAML), so
    /// option mistakes throw the recipe's errors here.</summary>
    public static KeyValuePair<string, object> Callback(string name, params (string Key, object? Value)[] options) =>
        new(name, RecipeLoader.BindOptions(FastVideo.Train.Callbacks.CallbackRegistry.Default.Get(name).OptionsType,
            options.ToDictionary(o => o.Key, o => o.Value), $"callbacks.{name}"));
}

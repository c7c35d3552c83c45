using System.Text.Json;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

// Loading from and saving to the Diffusers layout: <dir>/config.json + diffusion_pytorch_model.safetensors. The
// bidirectional and the causal transformer have the same parameters, so both load the same checkpoints.
public abstract partial class WanTransformerBase
{
    /// <summary>
    /// Builds a model with <paramref name="build"/> from a Diffusers folder (pipeline or transformer folder, or a
    /// cached model id) and loads its weights strictly; <paramref name="weightsOverride"/> (a .safetensors file or
    /// folder) replaces the folder's weights.
    /// </summary>
    protected static TModel LoadPretrained<TModel>(string pathOrModelId, Func<WanTransformerConfig, Device, TModel> build,
        ScalarType dtype, Device? device, string? weightsOverride) where TModel : WanTransformerBase
    {
        var folder = DiffusersModelFolder.Resolve(pathOrModelId);
        var config = WanTransformerConfig.FromJson(folder.ReadConfig(), folder.ConfigPath);
        var weights = weightsOverride is null ? WeightSet.FromModelFolder(folder) : WeightSet.FromFileOrFolder(weightsOverride);
        var model = LoadWeights(build(config, torch.META), weights, weightsOverride ?? string.Join(", ", folder.WeightFiles), dtype);
        try
        {
            if (device is not null) model.to(device);
            model.eval();
        }
        catch { model.Dispose(); throw; }
        return model;
    }

    /// <summary>
    /// <paramref name="metaModel"/> (built on the meta device) filled with <paramref name="weights"/> (checked
    /// strictly, errors name <paramref name="source"/>), its floating-point parameters in <paramref name="dtype"/>, on
    /// the CPU: no random initialisation, no fp32 copy first, one copy of the weights in memory.
    /// </summary>
    protected static TModel LoadWeights<TModel>(TModel metaModel, WeightSet weights, string source, ScalarType dtype) where TModel : WanTransformerBase
    {
        try { StateDict.Materialize(metaModel, weights, source, dtype); }
        catch { metaModel.Dispose(); throw; }
        return metaModel;
    }

    /// <summary>Writes config.json and diffusion_pytorch_model.safetensors (Diffusers key names) into <paramref name="dir"/>.</summary>
    public void SavePretrained(string dir, ScalarType? dtype = null)
    {
        Directory.CreateDirectory(dir);
        IO.Durable.WriteAllText(Path.Combine(dir, "config.json"), Config.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        StateDict.SaveModule(this, Path.Combine(dir, "diffusion_pytorch_model.safetensors"), dtype);
    }

    /// <summary>
    /// Initialises <paramref name="model"/> so that its weights depend only on <paramref name="seed"/> (not on the
    /// process-wide generator, which other threads may draw from): linear and conv weights and biases ~ U(±1/sqrt(fan_in))
    /// as PyTorch's defaults, norm scales 1, norm shifts 0, modulation tables ~ N(0, 1/D).
    /// </summary>
    protected static TModel InitRandom<TModel>(TModel model, ulong seed) where TModel : WanTransformerBase
    {
        using var g = new Generator(seed, torch.device("cpu"));
        using var _ = no_grad();
        var fanIn = new Dictionary<string, long>();
        foreach (var (name, p) in model.named_parameters())
            if (name.EndsWith(".weight") && p.dim() >= 2) fanIn[name[..^".weight".Length]] = p.shape.Skip(1).Aggregate(1L, (a, b) => a * b);
        foreach (var (name, p) in model.named_parameters())
        {
            using var scope = NewDisposeScope();
            int dot = name.LastIndexOf('.');
            var owner = dot < 0 ? "" : name[..dot];
            Tensor value;
            if (name.EndsWith("scale_shift_table")) value = randn(p.shape, generator: g) / Math.Sqrt(model.Config.InnerDim);
            else if (fanIn.TryGetValue(owner, out var fan)) value = (rand(p.shape, generator: g) * 2 - 1) / Math.Sqrt(fan);
            else value = name.EndsWith(".weight") ? ones(p.shape) : zeros(p.shape); // norms
            p.copy_(value);
        }
        return model;
    }
}

public sealed partial class WanTransformer3DModel
{
    /// <inheritdoc cref="WanTransformerBase.LoadPretrained"/>
    public static WanTransformer3DModel FromPretrained(string pathOrModelId, ScalarType dtype = ScalarType.Float32,
        Device? device = null, string? weightsOverride = null) =>
        LoadPretrained(pathOrModelId, (c, d) => new WanTransformer3DModel(c, d), dtype, device, weightsOverride);

    /// <inheritdoc cref="WanTransformerBase.LoadWeights"/>
    public static WanTransformer3DModel FromWeights(WanTransformerConfig config, WeightSet weights, string source, ScalarType dtype) =>
        LoadWeights(new WanTransformer3DModel(config, torch.META), weights, source, dtype);

    /// <summary>A freshly initialised model whose weights depend only on <paramref name="seed"/> (see <see cref="WanTransformerBase.InitRandom"/>).</summary>
    public static WanTransformer3DModel CreateRandom(WanTransformerConfig config, ulong seed) => InitRandom(new WanTransformer3DModel(config), seed);
}

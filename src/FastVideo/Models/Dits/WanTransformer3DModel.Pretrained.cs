using System.Text.Json;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

// Loading from and saving to the Diffusers layout: <dir>/config.json + diffusion_pytorch_model.safetensors.
public sealed partial class WanTransformer3DModel
{
    /// <summary>
    /// Builds the model from a Diffusers folder (pipeline or transformer folder, or a cached model id) and loads its
    /// weights strictly; <paramref name="weightsOverride"/> (a .safetensors file or folder) replaces the folder's weights.
    /// </summary>
    public static WanTransformer3DModel FromPretrained(string pathOrModelId, ScalarType dtype = ScalarType.Float32,
        Device? device = null, string? weightsOverride = null)
    {
        var folder = DiffusersModelFolder.Resolve(pathOrModelId);
        var config = WanTransformerConfig.FromJson(folder.ReadConfig(), folder.ConfigPath);
        var weights = weightsOverride is null ? WeightSet.FromModelFolder(folder) : WeightSet.FromFileOrFolder(weightsOverride);
        var model = FromWeights(config, weights, weightsOverride ?? string.Join(", ", folder.WeightFiles), dtype);
        try
        {
            if (device is not null) model.to(device);
            model.eval();
        }
        catch { model.Dispose(); throw; }
        return model;
    }

    /// <summary>
    /// The model with <paramref name="weights"/> (checked strictly, errors name <paramref name="source"/>), its
    /// floating-point parameters in <paramref name="dtype"/>, on the CPU. Built on the meta device and filled
    /// straight from the files: no random initialisation, no fp32 copy first, one copy of the weights in memory.
    /// </summary>
    public static WanTransformer3DModel FromWeights(WanTransformerConfig config, WeightSet weights, string source, ScalarType dtype)
    {
        var model = new WanTransformer3DModel(config, torch.META);
        try { StateDict.Materialize(model, weights, source, dtype); }
        catch { model.Dispose(); throw; }
        return model;
    }

    /// <summary>Writes config.json and diffusion_pytorch_model.safetensors (Diffusers key names) into <paramref name="dir"/>.</summary>
    public void SavePretrained(string dir, ScalarType? dtype = null)
    {
        Directory.CreateDirectory(dir);
        IO.Durable.WriteAllText(Path.Combine(dir, "config.json"), Config.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        StateDict.SaveModule(this, Path.Combine(dir, "diffusion_pytorch_model.safetensors"), dtype);
    }
}

public sealed partial class WanTransformer3DModel
{
    /// <summary>
    /// A freshly initialised model whose weights depend only on <paramref name="seed"/> (not on the process-wide
    /// generator, which other threads may draw from): linear and conv weights and biases ~ U(±1/sqrt(fan_in)) as
    /// PyTorch's defaults, norm scales 1, norm shifts 0, modulation tables ~ N(0, 1/D).
    /// </summary>
    public static WanTransformer3DModel CreateRandom(WanTransformerConfig config, ulong seed)
    {
        var model = new WanTransformer3DModel(config);
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
            if (name.EndsWith("scale_shift_table")) value = randn(p.shape, generator: g) / Math.Sqrt(config.InnerDim);
            else if (fanIn.TryGetValue(owner, out var fan)) value = (rand(p.shape, generator: g) * 2 - 1) / Math.Sqrt(fan);
            else value = name.EndsWith(".weight") ? ones(p.shape) : zeros(p.shape); // norms
            p.copy_(value);
        }
        return model;
    }
}

using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

/// <summary>
/// What every DiT does with the Diffusers layout (<c>&lt;dir&gt;/config.json</c> + <c>diffusion_pytorch_model.safetensors</c>
/// or shards with their index): build on the meta device and stream the weights in strictly, write a folder back,
/// and initialise a random model from a seed.
/// </summary>
public static class PretrainedTransformer
{
    /// <summary>
    /// A model built by <paramref name="build"/> from the config of a Diffusers folder (pipeline or transformer folder,
    /// or a cached model id), its weights loaded strictly; <paramref name="weightsOverride"/> (a .safetensors file or
    /// folder) replaces the folder's weights.
    /// </summary>
    public static TModel Load<TModel, TConfig>(string pathOrModelId, Func<JsonObject, string, TConfig> parseConfig,
        Func<TConfig, Device, TModel> build, ScalarType dtype, Device? device, string? weightsOverride) where TModel : nn.Module
    {
        var folder = DiffusersModelFolder.Resolve(pathOrModelId);
        var config = parseConfig(folder.ReadConfig(), folder.ConfigPath);
        var weights = weightsOverride is null ? WeightSet.FromModelFolder(folder) : WeightSet.FromFileOrFolder(weightsOverride);
        var model = Fill(build(config, torch.META), weights, weightsOverride ?? string.Join(", ", folder.WeightFiles), dtype);
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
    public static TModel Fill<TModel>(TModel metaModel, WeightSet weights, string source, ScalarType dtype) where TModel : nn.Module
    {
        try { StateDict.Materialize(metaModel, weights, source, dtype); }
        catch { metaModel.Dispose(); throw; }
        return metaModel;
    }

    /// <summary>Writes <paramref name="config"/> as config.json and the weights (Diffusers key names) as
    /// diffusion_pytorch_model.safetensors into <paramref name="dir"/>.</summary>
    public static void Save(nn.Module model, JsonObject config, string dir, ScalarType? dtype = null)
    {
        Directory.CreateDirectory(dir);
        IO.Durable.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        StateDict.SaveModule(model, Path.Combine(dir, "diffusion_pytorch_model.safetensors"), dtype);
    }

    /// <summary>
    /// Initialises <paramref name="model"/> so that its weights depend only on <paramref name="seed"/> (not on the
    /// process-wide generator, which other threads may draw from): linear and conv weights and biases ~ U(±1/sqrt(fan_in))
    /// as PyTorch's defaults, norm scales 1, norm shifts 0; <paramref name="special"/> draws the parameters it names
    /// (returns null for the others).
    /// </summary>
    public static TModel InitRandom<TModel>(TModel model, ulong seed, Func<string, long[], Generator, Tensor?>? special = null) where TModel : nn.Module
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
            if (special?.Invoke(name, p.shape, g) is { } drawn) value = drawn;
            else if (fanIn.TryGetValue(owner, out var fan)) value = (rand(p.shape, generator: g) * 2 - 1) / Math.Sqrt(fan);
            else value = name.EndsWith(".weight") ? ones(p.shape) : zeros(p.shape); // norms
            p.copy_(value);
        }
        return model;
    }
}

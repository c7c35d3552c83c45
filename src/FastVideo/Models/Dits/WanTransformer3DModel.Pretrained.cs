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
        ScalarType dtype, Device? device, string? weightsOverride) where TModel : WanTransformerBase =>
        PretrainedTransformer.Load(pathOrModelId, WanTransformerConfig.FromJson, build, dtype, device, weightsOverride);

    /// <inheritdoc cref="PretrainedTransformer.Fill"/>
    protected static TModel LoadWeights<TModel>(TModel metaModel, WeightSet weights, string source, ScalarType dtype) where TModel : WanTransformerBase =>
        PretrainedTransformer.Fill(metaModel, weights, source, dtype);

    /// <summary>Writes config.json and diffusion_pytorch_model.safetensors (Diffusers key names) into <paramref name="dir"/>.</summary>
    public void SavePretrained(string dir, ScalarType? dtype = null) => PretrainedTransformer.Save(this, Config.ToJson(), dir, dtype);

    /// <summary>
    /// <see cref="PretrainedTransformer.InitRandom"/> with the modulation tables (<c>scale_shift_table</c>) ~ N(0, 1/D).
    /// </summary>
    protected static TModel InitRandom<TModel>(TModel model, ulong seed) where TModel : WanTransformerBase =>
        PretrainedTransformer.InitRandom(model, seed, (name, shape, g) =>
            name.EndsWith("scale_shift_table") ? randn(shape, generator: g) / Math.Sqrt(model.Config.InnerDim) : null);
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

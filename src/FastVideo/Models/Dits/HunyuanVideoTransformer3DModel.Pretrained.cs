using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

// Loading from and saving to the Diffusers layout: <dir>/config.json + diffusion_pytorch_model.safetensors (or shards).
public sealed partial class HunyuanVideoTransformer3DModel
{
    /// <inheritdoc cref="PretrainedTransformer.Load"/>
    public static HunyuanVideoTransformer3DModel FromPretrained(string pathOrModelId, ScalarType dtype = ScalarType.Float32,
        Device? device = null, string? weightsOverride = null) =>
        PretrainedTransformer.Load(pathOrModelId, HunyuanVideoTransformerConfig.FromJson, (c, d) => new HunyuanVideoTransformer3DModel(c, d),
            dtype, device, weightsOverride);

    /// <inheritdoc cref="PretrainedTransformer.Fill"/>
    public static HunyuanVideoTransformer3DModel FromWeights(HunyuanVideoTransformerConfig config, WeightSet weights, string source, ScalarType dtype) =>
        PretrainedTransformer.Fill(new HunyuanVideoTransformer3DModel(config, torch.META), weights, source, dtype);

    /// <summary>Writes config.json and diffusion_pytorch_model.safetensors (Diffusers key names) into <paramref name="dir"/>.</summary>
    public void SavePretrained(string dir, ScalarType? dtype = null) => PretrainedTransformer.Save(this, Config.ToJson(), dir, dtype);

    /// <summary>A freshly initialised model whose weights depend only on <paramref name="seed"/> (see <see cref="PretrainedTransformer.InitRandom"/>).</summary>
    public static HunyuanVideoTransformer3DModel CreateRandom(HunyuanVideoTransformerConfig config, ulong seed) =>
        PretrainedTransformer.InitRandom(new HunyuanVideoTransformer3DModel(config), seed);
}

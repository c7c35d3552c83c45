using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>Sinusoidal timestep features (Diffusers Timesteps with flip_sin_to_cos=True, shift 0): [cos | sin].</summary>
public static class TimestepSinusoid
{
    public static Tensor Embed(Tensor timesteps, int dim, double maxPeriod = 10000.0)
    {
        using var scope = NewDisposeScope();
        int half = dim / 2;
        var exponent = -Math.Log(maxPeriod) * arange(0, half, dtype: ScalarType.Float32, device: timesteps.device) / half;
        var args = timesteps.to_type(ScalarType.Float32).reshape(-1, 1) * exponent.exp().reshape(1, -1);
        var emb = cat([args.cos(), args.sin()], -1);
        if (dim % 2 == 1) emb = nn.functional.pad(emb, [0, 1]);
        return emb.MoveToOuterDisposeScope();
    }
}

/// <summary>linear_1 -> SiLU -> linear_2 (Diffusers TimestepEmbedding).</summary>
public sealed class TimestepEmbedding : nn.Module<Tensor, Tensor>
{
    public readonly Linear linear_1;
    public readonly Linear linear_2;

    public TimestepEmbedding(long inChannels, long timeEmbedDim, string name = "TimestepEmbedding", Device? device = null) : base(name)
    {
        linear_1 = nn.Linear(inChannels, timeEmbedDim, device: device);
        linear_2 = nn.Linear(timeEmbedDim, timeEmbedDim, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var h = nn.functional.silu(linear_1.forward(x));
        return linear_2.forward(h);
    }
}

/// <summary>
/// linear_1 -> activation -> linear_2: Diffusers' PixArtAlphaTextProjection, with act_fn "gelu_tanh" (Wan's text
/// embedder, the default) or "silu" (HunyuanVideo's pooled-text embedders).
/// </summary>
public sealed class TextProjection : nn.Module<Tensor, Tensor>
{
    public readonly Linear linear_1;
    public readonly Linear linear_2;
    private readonly bool _silu;

    public TextProjection(long inFeatures, long hiddenSize, string name = "TextProjection", Device? device = null, bool silu = false) : base(name)
    {
        _silu = silu;
        linear_1 = nn.Linear(inFeatures, hiddenSize, device: device);
        linear_2 = nn.Linear(hiddenSize, hiddenSize, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var l1 = linear_1.forward(x);
        using var h = _silu ? nn.functional.silu(l1) : nn.functional.gelu(l1, GELU.Approximate.tanh);
        return linear_2.forward(h);
    }
}

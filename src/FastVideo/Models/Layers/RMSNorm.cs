using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>RMSNorm with a learned scale: x * rsqrt(mean(x^2) + eps) in float32, cast back, times <c>weight</c>.</summary>
public sealed class RMSNorm : nn.Module<Tensor, Tensor>
{
    private readonly double _eps;
    public readonly TorchSharp.Modules.Parameter weight;

    public RMSNorm(long dim, double eps = 1e-6, string name = "RMSNorm", Device? device = null) : base(name)
    {
        _eps = eps;
        weight = ModuleParameter.Create(() => ones(dim, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var x32 = x.to_type(ScalarType.Float32);
        var normed = (x32 * rsqrt(x32.pow(2).mean([-1], keepdim: true) + _eps)).to_type(x.dtype);
        return (normed * weight.to_type(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>Parameter-free LayerNorm computed in float32 (Diffusers' FP32LayerNorm with elementwise_affine=False).</summary>
public static class Fp32LayerNorm
{
    public static Tensor Apply(Tensor x, double eps, Tensor? weight = null, Tensor? bias = null)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.layer_norm(x.to_type(ScalarType.Float32), [x.shape[^1]],
            weight?.to_type(ScalarType.Float32), bias?.to_type(ScalarType.Float32), eps);
        return y.MoveToOuterDisposeScope();
    }
}

/// <summary>LayerNorm with affine parameters named <c>weight</c>/<c>bias</c>, computed in float32 (Wan's norm2).</summary>
public sealed class Fp32AffineLayerNorm : nn.Module<Tensor, Tensor>
{
    private readonly double _eps;
    public readonly TorchSharp.Modules.Parameter weight;
    public readonly TorchSharp.Modules.Parameter bias;

    public Fp32AffineLayerNorm(long dim, double eps, string name = "LayerNorm", Device? device = null) : base(name)
    {
        _eps = eps;
        weight = ModuleParameter.Create(() => ones(dim, device: device));
        bias = ModuleParameter.Create(() => zeros(dim, device: device));
        RegisterComponents();
    }

    /// <summary>Returns float32; callers cast where Diffusers does.</summary>
    public override Tensor forward(Tensor x) => Fp32LayerNorm.Apply(x, _eps, weight, bias);
}

using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>The activation of a <see cref="FeedForward"/>'s up-projection (Diffusers' <c>activation_fn</c>).</summary>
public enum FeedForwardActivation
{
    /// <summary>"gelu-approximate": GELU with the tanh approximation (Wan, HunyuanVideo's blocks).</summary>
    GeluTanh,
    /// <summary>"linear-silu": SiLU (HunyuanVideo's token refiner).</summary>
    Silu,
}

/// <summary>
/// Diffusers' FeedForward: up-projection with its activation, then down-projection, under Diffusers' keys
/// <c>net.0.proj</c> and <c>net.2</c> (<c>net.1</c> is a parameter-free dropout). Both linears can take LoRA adapters
/// and go through <see cref="ActivationCheckpoint.Linear"/> (kept under the selective policy).
/// </summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    public readonly ModuleList<nn.Module<Tensor, Tensor>> net;

    public FeedForward(long dim, long innerDim, FeedForwardActivation activation = FeedForwardActivation.GeluTanh, Device? device = null)
        : base(nameof(FeedForward))
    {
        net = nn.ModuleList<nn.Module<Tensor, Tensor>>(new Projection(dim, innerDim, activation, device), nn.Dropout(0.0),
            new LoraLinear(innerDim, dim, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var h = net[0].forward(x);
        return ActivationCheckpoint.Linear(net[2], h);
    }

    /// <summary>Diffusers' GELU / LinearActivation: a linear <c>proj</c> and the activation.</summary>
    private sealed class Projection : nn.Module<Tensor, Tensor>
    {
        public readonly LoraLinear proj;
        private readonly FeedForwardActivation _activation;

        public Projection(long dim, long inner, FeedForwardActivation activation, Device? device) : base("Projection")
        {
            _activation = activation;
            proj = new LoraLinear(dim, inner, device: device);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var h = ActivationCheckpoint.Linear(proj, x);
            return _activation == FeedForwardActivation.Silu ? nn.functional.silu(h) : nn.functional.gelu(h, GELU.Approximate.tanh);
        }
    }
}

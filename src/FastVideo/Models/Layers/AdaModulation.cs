using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>
/// The projection of Diffusers' adaptive norms: <c>linear(SiLU(emb))</c> under the key <c>linear</c>, split into
/// <c>chunks</c> parts, as AdaLayerNormZero (6: shift, scale, gate of attention and MLP), AdaLayerNormZeroSingle (3),
/// AdaLayerNormContinuous (2: scale, shift) and HunyuanVideoAdaNorm (2 gates). The parts come back as [B,1,D] in
/// float32, so modulation stays in fp32 whatever the compute dtype; the parameter-free norms are the blocks'.
/// </summary>
public sealed class AdaModulation : nn.Module
{
    public readonly Linear linear;
    private readonly int _chunks;

    public AdaModulation(long dim, int chunks, Device? device = null) : this(dim, dim, chunks, device) { }

    /// <param name="embeddingDim">Width of the conditioning vector.</param>
    /// <param name="dim">Width of each part.</param>
    /// <param name="chunks">Number of parts.</param>
    /// <param name="device">Where the parameters live (meta: shapes only).</param>
    public AdaModulation(long embeddingDim, long dim, int chunks, Device? device = null) : base(nameof(AdaModulation))
    {
        _chunks = chunks;
        linear = nn.Linear(embeddingDim, chunks * dim, device: device);
        RegisterComponents();
    }

    /// <summary>emb [B, D_emb] (cast to the weights' dtype) -> <c>chunks</c> tensors [B, 1, D], float32.</summary>
    public Tensor[] Forward(Tensor emb)
    {
        using var scope = NewDisposeScope();
        var w = linear.weight!.dtype;
        var m = linear.forward(nn.functional.silu(emb.dtype == w ? emb : emb.to_type(w))).to_type(ScalarType.Float32).unsqueeze(1);
        var parts = m.chunk(_chunks, -1);
        foreach (var p in parts) p.MoveToOuterDisposeScope();
        return parts;
    }
}

using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>
/// A linear layer (<c>weight</c> [out, in], <c>bias</c> [out], keys as <c>nn.Linear</c>'s) that can take a LoRA adapter
/// in PEFT's layout: <c>lora_A.weight</c> [rank, in] and <c>lora_B.weight</c> [out, rank], so a base checkpoint loads
/// unchanged and the adapter's keys are <c>&lt;layer&gt;.lora_A.weight</c> / <c>&lt;layer&gt;.lora_B.weight</c>.
/// Forward: <c>x Wᵀ + b + scale · (x Aᵀ) Bᵀ</c> with scale = alpha / rank. The adapter path runs in the adapter's dtype
/// (float32 even when the frozen base is held in bf16) and is cast back to the base output's dtype.
/// </summary>
public sealed class LoraLinear : nn.Module<Tensor, Tensor>
{
    public readonly Parameter weight;
    public readonly Parameter? bias;
    // Registered as submodules by AddAdapter (null until then, so a plain layer has only weight and bias).
    private LoraFactor? lora_A, lora_B;

    /// <param name="device">Where weight and bias live; on the meta device they have shapes only (see StateDict.Materialize).</param>
    public LoraLinear(long inFeatures, long outFeatures, bool hasBias = true, Device? device = null) : base("Linear")
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        // PyTorch's nn.Linear initialisation; the models load their weights over it.
        double bound = 1 / Math.Sqrt(inFeatures);
        weight = ModuleParameter.Create(() => empty(outFeatures, inFeatures, device: device).uniform_(-bound, bound));
        if (hasBias) bias = ModuleParameter.Create(() => empty(outFeatures, device: device).uniform_(-bound, bound));
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public bool HasAdapter => lora_A is not null;
    public int Rank { get; private set; }
    public double Alpha { get; private set; }
    /// <summary>alpha / rank (1 without an adapter).</summary>
    public double Scale => HasAdapter ? Alpha / Rank : 1.0;
    public Parameter? LoraA => lora_A?.weight;
    public Parameter? LoraB => lora_B?.weight;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        // Weights are cast to the activations' dtype per use (bf16 compute over fp32 masters; gradients flow through
        // the cast back to the masters), as autocast does.
        var y = nn.functional.linear(x, AsDtype(weight, x.dtype), bias is null ? null : AsDtype(bias, x.dtype));
        if (lora_A is null || lora_B is null) return y.MoveToOuterDisposeScope();
        var a = lora_A.weight;
        var h = nn.functional.linear(nn.functional.linear(x.dtype == a.dtype ? x : x.to_type(a.dtype), a), lora_B.weight);
        if (Alpha != Rank) h = h * Scale;
        return (y + h.to_type(y.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Adds a trainable adapter initialised as PEFT does: A ~ kaiming_uniform(a=√5) = U(±1/√in) drawn from
    /// <paramref name="generator"/>, B = 0 (so the layer starts as the base layer). Float32, on the weight's device.
    /// </summary>
    /// <summary><paramref name="t"/> itself when it already has <paramref name="dtype"/>, else a cast (autograd-tracked).</summary>
    public static Tensor AsDtype(Tensor t, ScalarType dtype) => t.dtype == dtype ? t : t.to_type(dtype);

    public void AddAdapter(int rank, double alpha, Generator generator)
    {
        using var scope = NewDisposeScope();
        double bound = 1 / Math.Sqrt(InFeatures);
        var a = (rand([rank, InFeatures], generator: generator) * (2 * bound) - bound).to(weight.device);
        var b = zeros([OutFeatures, rank], device: weight.device);
        SetAdapter(a, b, alpha, trainable: true);
    }

    /// <summary>Sets the adapter to copies of <paramref name="a"/> [rank, in] and <paramref name="b"/> [out, rank] (float32).</summary>
    public void SetAdapter(Tensor a, Tensor b, double alpha, bool trainable)
    {
        if (a.dim() != 2 || b.dim() != 2 || a.shape[1] != InFeatures || b.shape[0] != OutFeatures || b.shape[1] != a.shape[0])
            throw new ArgumentException($"LoRA factors must be A [rank, {InFeatures}] and B [{OutFeatures}, rank], got A [{string.Join(", ", a.shape)}] and B [{string.Join(", ", b.shape)}]");
        if (HasAdapter) throw new InvalidOperationException("this layer already has a LoRA adapter");
        int rank = (int)a.shape[0];
        if (rank < 1) throw new ArgumentException("LoRA rank must be >= 1");
        Rank = rank;
        Alpha = alpha;
        lora_A = new LoraFactor(a.detach().to(ScalarType.Float32, weight.device).clone(), trainable);
        lora_B = new LoraFactor(b.detach().to(ScalarType.Float32, weight.device).clone(), trainable);
        register_module("lora_A", lora_A);
        register_module("lora_B", lora_B);
    }

    /// <summary>W + scale · B A in float32 (the base weight as held, upcast), a new tensor.</summary>
    public Tensor MergedWeight()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var w = weight.detach().to_type(ScalarType.Float32);
        if (lora_A is null || lora_B is null) return w.clone().MoveToOuterDisposeScope();
        return w.add(lora_B.weight.detach().matmul(lora_A.weight.detach()), alpha: Scale).MoveToOuterDisposeScope();
    }

    /// <summary>One LoRA factor: a module holding <c>weight</c>, so its key is <c>lora_A.weight</c> / <c>lora_B.weight</c>.</summary>
    private sealed class LoraFactor : nn.Module
    {
        public readonly Parameter weight;

        public LoraFactor(Tensor value, bool trainable) : base("LoraFactor")
        {
            weight = new Parameter(value, trainable);
            weight.DetachFromDisposeScope();
            RegisterComponents();
        }
    }
}

using System.Text.Json.Nodes;
using FastVideo.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

// Wan 2.1 text-to-video DiT with Diffusers' parameter names (transformer_wan.py), so a Diffusers checkpoint loads
// key for key. Reads top-down: config, attention, feed-forward, block, condition embedder, model.

/// <summary>Fields of a Diffusers <c>transformer/config.json</c> for WanTransformer3DModel (names as in the file).</summary>
public sealed record WanTransformerConfig
{
    public int[] PatchSize { get; init; } = [1, 2, 2];
    public int NumAttentionHeads { get; init; } = 40;
    public int AttentionHeadDim { get; init; } = 128;
    public int InChannels { get; init; } = 16;
    public int OutChannels { get; init; } = 16;
    public int TextDim { get; init; } = 4096;
    public int FreqDim { get; init; } = 256;
    public int FfnDim { get; init; } = 13824;
    public int NumLayers { get; init; } = 40;
    public bool CrossAttnNorm { get; init; } = true;
    public string QkNorm { get; init; } = "rms_norm_across_heads";
    public double Eps { get; init; } = 1e-6;
    public int RopeMaxSeqLen { get; init; } = 1024;

    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>Reads config.json; Diffusers fields not listed here are ignored, unsupported variants are refused.</summary>
    public static WanTransformerConfig FromJson(JsonObject o, string source)
    {
        var j = new ConfigJson(o, source);
        if (j.Has("image_dim") || j.Has("added_kv_proj_dim"))
            throw new UserError($"{source}: image_dim/added_kv_proj_dim are set: image-to-video Wan is not supported yet (text-to-video only)");
        var cfg = new WanTransformerConfig
        {
            PatchSize = j.Ints("patch_size", [1, 2, 2]),
            NumAttentionHeads = j.Int("num_attention_heads", 40),
            AttentionHeadDim = j.Int("attention_head_dim", 128),
            InChannels = j.Int("in_channels", 16),
            OutChannels = j.Int("out_channels", 16),
            TextDim = j.Int("text_dim", 4096),
            FreqDim = j.Int("freq_dim", 256),
            FfnDim = j.Int("ffn_dim", 13824),
            NumLayers = j.Int("num_layers", 40),
            CrossAttnNorm = j.Bool("cross_attn_norm", true),
            QkNorm = j.String("qk_norm", null) ?? "rms_norm_across_heads",
            Eps = j.Double("eps", 1e-6),
            RopeMaxSeqLen = j.Int("rope_max_seq_len", 1024),
        };
        cfg.Validate(source);
        return cfg;
    }

    public void Validate(string source)
    {
        if (PatchSize.Length != 3 || PatchSize.Any(x => x < 1)) throw new UserError($"{source}: patch_size must be 3 positive integers");
        if (QkNorm != "rms_norm_across_heads") throw new UserError($"{source}: qk_norm '{QkNorm}' is not supported (expected 'rms_norm_across_heads')");
        if (AttentionHeadDim % 2 != 0 || AttentionHeadDim < 6) throw new UserError($"{source}: attention_head_dim must be even and >= 6 for 3D RoPE");
        foreach (var (k, v) in new[] { ("num_attention_heads", NumAttentionHeads), ("in_channels", InChannels), ("out_channels", OutChannels),
                     ("text_dim", TextDim), ("freq_dim", FreqDim), ("ffn_dim", FfnDim), ("num_layers", NumLayers) })
            if (v < 1) throw new UserError($"{source}: {k} must be >= 1, got {v}");
    }

    public JsonObject ToJson() => new()
    {
        ["_class_name"] = "WanTransformer3DModel",
        ["_diffusers_version"] = "0.33.0",
        ["patch_size"] = new JsonArray(PatchSize.Select(x => (JsonNode)x).ToArray()),
        ["num_attention_heads"] = NumAttentionHeads,
        ["attention_head_dim"] = AttentionHeadDim,
        ["in_channels"] = InChannels,
        ["out_channels"] = OutChannels,
        ["text_dim"] = TextDim,
        ["freq_dim"] = FreqDim,
        ["ffn_dim"] = FfnDim,
        ["num_layers"] = NumLayers,
        ["cross_attn_norm"] = CrossAttnNorm,
        ["qk_norm"] = QkNorm,
        ["eps"] = Eps,
        ["image_dim"] = null,
        ["added_kv_proj_dim"] = null,
        ["rope_max_seq_len"] = RopeMaxSeqLen,
    };
}

/// <summary>
/// How queries attend to keys and values, on [B,H,S,d] queries and [B,H,L,d] keys/values, returning [B,H,S,d]:
/// <see cref="ActivationCheckpoint.Attention"/> (every query sees every key) unless a model restricts it.
/// </summary>
public delegate Tensor AttentionKernel(Tensor queries, Tensor keys, Tensor values);

/// <summary>Multi-head attention with q/k RMSNorm across all heads; self-attention takes RoPE tables.</summary>
public sealed class WanAttention : nn.Module
{
    public readonly LoraLinear to_q, to_k, to_v;   // LoraLinear: nn.Linear's keys, can take a LoRA adapter
    public readonly ModuleList<nn.Module<Tensor, Tensor>> to_out; // [Linear, Dropout] as in Diffusers: key "to_out.0"
    public readonly RMSNorm norm_q, norm_k;
    private readonly int _heads;

    public WanAttention(int dim, int heads, double eps, Device? device = null) : base(nameof(WanAttention))
    {
        _heads = heads;
        to_q = new LoraLinear(dim, dim, device: device);
        to_k = new LoraLinear(dim, dim, device: device);
        to_v = new LoraLinear(dim, dim, device: device);
        to_out = nn.ModuleList<nn.Module<Tensor, Tensor>>(new LoraLinear(dim, dim, device: device), nn.Dropout(0.0));
        norm_q = new RMSNorm(dim, eps, device: device);
        norm_k = new RMSNorm(dim, eps, device: device);
        RegisterComponents();
    }

    /// <param name="x">[B, S, D] queries.</param>
    /// <param name="context">[B, L, D] keys/values (null = self-attention).</param>
    /// <param name="rope">RoPE cos/sin tables [S, d/2] applied to q and k (self-attention only).</param>
    /// <param name="kernel">How the queries attend (null: to every key).</param>
    public Tensor Forward(Tensor x, Tensor? context = null, (Tensor Cos, Tensor Sin)? rope = null, AttentionKernel? kernel = null)
    {
        using var scope = NewDisposeScope();
        var q = Heads(norm_q.forward(ActivationCheckpoint.Linear(to_q, x)), rope);
        var (k, v) = KeysValues(context ?? x, rope);
        return Output(q, k, v, kernel).MoveToOuterDisposeScope();
    }

    /// <summary>Cross-attention to keys and values computed before by <see cref="KeysValues"/> (a streaming cache).</summary>
    public Tensor Forward(Tensor x, (Tensor Keys, Tensor Values) keysValues)
    {
        using var scope = NewDisposeScope();
        var q = Heads(norm_q.forward(ActivationCheckpoint.Linear(to_q, x)), null);
        return Output(q, keysValues.Keys, keysValues.Values, null).MoveToOuterDisposeScope();
    }

    /// <summary>Keys (normalised, rotated when <paramref name="rope"/> is given) and values of [B, L, D] tokens, as [B,H,L,d].</summary>
    public (Tensor Keys, Tensor Values) KeysValues(Tensor source, (Tensor Cos, Tensor Sin)? rope = null)
    {
        using var scope = NewDisposeScope();
        // Linears and attention go through ActivationCheckpoint, which keeps their outputs under the "ops" policy.
        var k = Heads(norm_k.forward(ActivationCheckpoint.Linear(to_k, source)), rope);
        var v = Heads(ActivationCheckpoint.Linear(to_v, source), null);
        return (k.MoveToOuterDisposeScope(), v.MoveToOuterDisposeScope());
    }

    /// <summary>[B,S,D] -> [B,H,S,d] for SDPA, rotated by <paramref name="rope"/> on the way.</summary>
    private Tensor Heads(Tensor x, (Tensor Cos, Tensor Sin)? rope)
    {
        long b = x.shape[0], s = x.shape[1], d = x.shape[2];
        var h = x.view(b, s, _heads, d / _heads);   // [B,S,H,hd]
        if (rope is { } r) h = RotaryPosEmbed3D.Apply(h, r.Cos, r.Sin);
        return h.transpose(1, 2);
    }

    private Tensor Output(Tensor q, Tensor k, Tensor v, AttentionKernel? kernel)
    {
        var o = (kernel ?? ActivationCheckpoint.Attention)(q, k, v);   // [B,H,S,hd]
        o = o.transpose(1, 2).flatten(2);                               // [B,S,D]
        return ActivationCheckpoint.Linear(to_out[0], o);
    }
}

/// <summary>
/// One DiT block: modulated self-attention (RoPE), cross-attention to the text, modulated feed-forward.
/// Modulation and the parameter-free norms run in float32, as in Diffusers.
/// </summary>
public sealed class WanTransformerBlock : nn.Module
{
    public readonly Parameter scale_shift_table; // [1, 6, D]
    public readonly WanAttention attn1, attn2;
    public readonly Fp32AffineLayerNorm? norm2;
    public readonly FeedForward ffn;
    private readonly double _eps;

    public WanTransformerBlock(WanTransformerConfig c, Device? device = null) : base(nameof(WanTransformerBlock))
    {
        int dim = c.InnerDim;
        _eps = c.Eps;
        scale_shift_table = ModuleParameter.Create(() => randn(1, 6, dim, device: device) / Math.Sqrt(dim));
        attn1 = new WanAttention(dim, c.NumAttentionHeads, c.Eps, device);
        attn2 = new WanAttention(dim, c.NumAttentionHeads, c.Eps, device);
        norm2 = c.CrossAttnNorm ? new Fp32AffineLayerNorm(dim, c.Eps, device: device) : null;
        ffn = new FeedForward(dim, c.FfnDim, FeedForwardActivation.GeluTanh, device);
        RegisterComponents();
    }

    /// <param name="x">[B, S, D] video tokens.</param>
    /// <param name="context">[B, L, D] projected text.</param>
    /// <param name="timestepProj">[B, F, 6, D] modulation for F groups of S/F consecutive tokens: F = 1 (one per
    /// sample) in the bidirectional model, one per latent frame in the causal one.</param>
    /// <param name="rope">RoPE tables for the S tokens.</param>
    /// <param name="selfAttention">How the tokens attend to each other (null: all to all).</param>
    /// <param name="crossKeysValues">The text's keys and values for attn2 when a streaming cache holds them (null:
    /// computed from <paramref name="context"/>).</param>
    public Tensor Forward(Tensor x, Tensor context, Tensor timestepProj, (Tensor Cos, Tensor Sin) rope,
        AttentionKernel? selfAttention = null, Func<WanAttention, Tensor, (Tensor, Tensor)>? crossKeysValues = null)
    {
        using var scope = NewDisposeScope();
        var mod = (scale_shift_table.to_type(ScalarType.Float32) + timestepProj.to_type(ScalarType.Float32)).chunk(6, 2); // 6 x [B,F,1,D]
        var (shiftA, scaleA, gateA, shiftF, scaleF, gateF) = (mod[0], mod[1], mod[2], mod[3], mod[4], mod[5]);

        // The float32 copy of the residual feeds both the norm and the gated add (one cast, not two, under bf16).
        var x32 = x.to_type(ScalarType.Float32);
        var y = FrameModulation.ScaleShift(Fp32LayerNorm.Apply(x32, _eps), scaleA, shiftA).to_type(x.dtype);
        var a = attn1.Forward(y, rope: rope, kernel: selfAttention);
        x = FrameModulation.AddGated(x32, a, gateA).to_type(x.dtype);

        y = norm2 is null ? x : norm2.forward(x).to_type(x.dtype);
        x = x + (crossKeysValues is null ? attn2.Forward(y, context) : attn2.Forward(y, crossKeysValues(attn2, context)));

        x32 = x.to_type(ScalarType.Float32);
        y = FrameModulation.ScaleShift(Fp32LayerNorm.Apply(x32, _eps), scaleF, shiftF).to_type(x.dtype);
        var f = ffn.forward(y);
        x = FrameModulation.AddGated(x32, f.to_type(ScalarType.Float32), gateF).to_type(x.dtype);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// adaLN modulation by groups of tokens: [B, S, D] tokens in F equal groups of consecutive tokens (a latent frame
/// each, or F = 1 for the whole sample), modulation tensors [B, F, 1, D].
/// </summary>
public static class FrameModulation
{
    /// <summary>x * (1 + scale) + shift, per group.</summary>
    public static Tensor ScaleShift(Tensor x, Tensor scale, Tensor shift) =>
        (Grouped(x, scale) * (scale + 1.0) + shift).reshape(x.shape);

    /// <summary>x + y * gate, per group.</summary>
    public static Tensor AddGated(Tensor x, Tensor y, Tensor gate) =>
        (Grouped(x, gate) + Grouped(y, gate) * gate).reshape(x.shape);

    private static Tensor Grouped(Tensor x, Tensor modulation) => x.reshape(x.shape[0], modulation.shape[1], -1, x.shape[2]); // [B,F,S/F,D]
}

/// <summary>Timestep -> (temb [B,D], timestep_proj [B,6D]); text [B,L,text_dim] -> [B,L,D].</summary>
public sealed class WanTimeTextEmbedding : nn.Module
{
    public readonly TimestepEmbedding time_embedder;
    public readonly Linear time_proj;
    public readonly TextProjection text_embedder;
    private readonly int _freqDim;

    public WanTimeTextEmbedding(WanTransformerConfig c, Device? device = null) : base(nameof(WanTimeTextEmbedding))
    {
        _freqDim = c.FreqDim;
        time_embedder = new TimestepEmbedding(c.FreqDim, c.InnerDim, device: device);
        time_proj = nn.Linear(c.InnerDim, 6L * c.InnerDim, device: device);
        text_embedder = new TextProjection(c.TextDim, c.InnerDim, device: device);
        RegisterComponents();
    }

    public (Tensor Temb, Tensor TimestepProj, Tensor Context) Forward(Tensor timestep, Tensor text, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        // The small condition embedders run in their weights' dtype; their outputs enter the blocks in `dtype`.
        var own = time_embedder.linear_1.weight!.dtype;
        var tf = TimestepSinusoid.Embed(timestep, _freqDim).to_type(own);
        var temb = time_embedder.forward(tf);
        var proj = time_proj.forward(nn.functional.silu(temb)).to_type(dtype);
        var ctx = text_embedder.forward(text.to_type(own)).to_type(dtype);
        return (temb.to_type(dtype).MoveToOuterDisposeScope(), proj.MoveToOuterDisposeScope(), ctx.MoveToOuterDisposeScope());
    }
}

/// <summary>How one block's attentions run in one forward; null members are the bidirectional defaults.</summary>
public readonly record struct BlockAttention(AttentionKernel? SelfAttention, Func<WanAttention, Tensor, (Tensor, Tensor)>? CrossKeysValues = null);

/// <summary>
/// What the bidirectional and the causal Wan transformers share: the parameters under Diffusers' names (one
/// checkpoint loads into either), the patch embedding, the block loop with activation checkpointing, the output head.
/// The two differ in how tokens attend and in the timestep's shape.
/// </summary>
public abstract partial class WanTransformerBase : nn.Module, IDiffusionTransformer
{
    public WanTransformerConfig Config { get; }

    public readonly Conv3d patch_embedding;
    public readonly WanTimeTextEmbedding condition_embedder;
    public readonly ModuleList<WanTransformerBlock> blocks;
    public readonly LoraLinear proj_out;
    public readonly Parameter scale_shift_table; // [1, 2, D]: index 0 = shift, 1 = scale

    /// <param name="name">The module name.</param>
    /// <param name="config">The architecture.</param>
    /// <param name="device">Where the parameters live, CPU by default. On the meta device the model has shapes but no
    /// memory and skips the random initialisation: the way to build it for <see cref="FastVideo.Weights.StateDict.Materialize"/>.</param>
    protected WanTransformerBase(string name, WanTransformerConfig config, Device? device) : base(name)
    {
        config.Validate($"{name} config");
        // Parameters belong to their modules; the scope frees what building them leaves (TorchSharp's Conv3d leaves one tensor).
        using var scope = NewDisposeScope();
        Config = config;
        int dim = config.InnerDim;
        var p = config.PatchSize;
        patch_embedding = nn.Conv3d(config.InChannels, dim, kernel_size: (p[0], p[1], p[2]), stride: (p[0], p[1], p[2]), device: device);
        condition_embedder = new WanTimeTextEmbedding(config, device);
        blocks = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(_ => new WanTransformerBlock(config, device)).ToArray());
        proj_out = new LoraLinear(dim, (long)config.OutChannels * p[0] * p[1] * p[2], device: device);
        scale_shift_table = ModuleParameter.Create(() => randn(1, 2, dim, device: device) / Math.Sqrt(dim));
        RegisterComponents();
    }

    /// <summary>Forward passes run by every instance in this process (benchmarks count FLOPs with it).</summary>
    public static long ForwardCount => Interlocked.Read(ref _forwardCount);
    private static long _forwardCount;
    protected static void CountForward() => Interlocked.Increment(ref _forwardCount);

    /// <summary>
    /// Activation checkpointing of the blocks (null: none), set by the model plugin for a trainable role. Applies only
    /// when grad mode is on; sampling and frozen forwards run plainly.
    /// </summary>
    public CheckpointingPolicy? GradientCheckpointing { get; set; }

    /// <summary>dtype of the parameters; inputs are cast to it.</summary>
    public ScalarType ParamDtype => proj_out.weight!.dtype;

    /// <summary>
    /// The dtype activations are computed in; null = <see cref="ParamDtype"/>. With bf16 over fp32 parameters the
    /// weights are cast per use and gradients reach the fp32 masters (FastVideo's bf16 autocast / FSDP mixed
    /// precision); norms and modulation stay in fp32 as before, and the output is returned in <see cref="ParamDtype"/>.
    /// </summary>
    public ScalarType? ComputeDtype { get; set; }

    protected ScalarType ActivationDtype => ComputeDtype ?? ParamDtype;

    /// <summary>
    /// The forward a model plugin runs for a whole clip: hidden_states [B,C,T,H,W], timestep, encoder_hidden_states
    /// [B,L,text_dim] -> [B,out_channels,T,H,W]. Which timestep shapes it takes is the model's (see the subclasses).
    /// </summary>
    public abstract Tensor Forward(Tensor hiddenStates, Tensor timestep, Tensor encoderHiddenStates);

    /// <summary>Checks a [B,C,T,H,W] input against the config and returns its sizes.</summary>
    protected LatentGrid Grid(Tensor hiddenStates) =>
        LatentGrid.Of(hiddenStates, Config.InChannels, Config.PatchSize[0], Config.PatchSize[1], Config.PatchSize[2]);

    /// <summary>[B,C,T,H,W] -> [B,S,D] tokens ordered (frame, row, column), in <paramref name="dtype"/>.</summary>
    protected Tensor EmbedPatches(Tensor hiddenStates, ScalarType dtype) => LatentGrid.EmbedPatches(patch_embedding, hiddenStates, dtype);

    /// <summary>
    /// The blocks in order, each checkpointed as <see cref="GradientCheckpointing"/> says. <paramref name="attention"/>
    /// gives block i's attention for this forward; its second argument says whether the call is checkpointed, i.e.
    /// run again in backward (so what it reads must not change until then).
    /// </summary>
    protected Tensor RunBlocks(Tensor x, Tensor context, Tensor timestepProj, (Tensor Cos, Tensor Sin) rope,
        Func<int, bool, BlockAttention>? attention = null)
    {
        for (int i = 0; i < blocks.Count; i++)
        {
            var block = blocks[i];
            bool checkpointed = GradientCheckpointing is { } policy && policy.Checkpoints(i) && is_grad_enabled();
            var a = attention?.Invoke(i, checkpointed) ?? default;
            x = checkpointed
                ? ActivationCheckpoint.Apply(t => block.Forward(t[0], t[1], t[2], (t[3], t[4]), a.SelfAttention, a.CrossKeysValues),
                    [x, context, timestepProj, rope.Cos, rope.Sin], block.parameters(), GradientCheckpointing!.Selective)
                : block.Forward(x, context, timestepProj, rope, a.SelfAttention, a.CrossKeysValues);
        }
        return x;
    }

    /// <summary>
    /// Modulated norm, projection and unpatchify: [B,S,D] tokens with <paramref name="temb"/> [B,F,D] (F groups of
    /// tokens, as the blocks' modulation) -> [B,out_channels,T,H,W] in <see cref="ParamDtype"/>.
    /// </summary>
    protected Tensor OutputHead(Tensor x, Tensor temb, LatentGrid g, ScalarType dtype)
    {
        var p = Config.PatchSize;
        var mod = (scale_shift_table.to_type(ScalarType.Float32).unsqueeze(1) + temb.to_type(ScalarType.Float32).unsqueeze(2)).chunk(2, 2); // [B,F,1,D]
        x = FrameModulation.ScaleShift(Fp32LayerNorm.Apply(x, Config.Eps), mod[1], mod[0]).to_type(dtype);
        x = proj_out.forward(x); // [B,S,pt*ph*pw*C]

        // [B,F',H',W',pt,ph,pw,C] -> [B,C,F',pt,H',ph,W',pw] -> [B,C,T,H,W]
        x = x.reshape(g.Batch, g.GridFrames, g.GridHeight, g.GridWidth, p[0], p[1], p[2], Config.OutChannels)
             .permute(0, 7, 1, 4, 2, 5, 3, 6)
             .reshape(g.Batch, Config.OutChannels, g.Frames, g.Height, g.Width);
        return x.to_type(ParamDtype);
    }

    protected static string Shape(Tensor x) => "[" + string.Join(",", x.shape) + "]";
}

/// <summary>
/// The Wan 2.1 text-to-video transformer. Forward: hidden_states [B,C,T,H,W], timestep [B] (one value per sample),
/// encoder_hidden_states [B,L,text_dim] -> [B,out_channels,T,H,W]. The text mask is not used (as in Wan).
/// </summary>
public sealed partial class WanTransformer3DModel : WanTransformerBase
{
    /// <inheritdoc cref="WanTransformerBase(string, WanTransformerConfig, Device?)"/>
    public WanTransformer3DModel(WanTransformerConfig config, Device? device = null) : base(nameof(WanTransformer3DModel), config, device) { }

    public override Tensor Forward(Tensor hiddenStates, Tensor timestep, Tensor encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        CountForward();
        var g = Grid(hiddenStates);
        if (timestep.numel() != g.Batch) throw new ArgumentException($"timestep must have one value per sample ([{g.Batch}]), got {Shape(timestep)}");
        var dtype = ActivationDtype;

        var rope = RotaryPosEmbed3D.Tables(Config.AttentionHeadDim, g.GridFrames, g.GridHeight, g.GridWidth, device: hiddenStates.device);
        var x = EmbedPatches(hiddenStates, dtype); // [B,S,D], S ordered (f,h,w)

        var (temb, tproj, context) = condition_embedder.Forward(timestep.reshape(g.Batch), encoderHiddenStates, dtype);
        tproj = tproj.unflatten(1, [1, 6, Config.InnerDim]);  // [B,1,6,D]: one modulation for all tokens of a sample

        x = RunBlocks(x, context, tproj, rope);
        return OutputHead(x, temb.unsqueeze(1), g, dtype).MoveToOuterDisposeScope();
    }
}

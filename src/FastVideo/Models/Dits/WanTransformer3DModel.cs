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
        int Int(string k, int d) => o[k] is null ? d : Get(() => (int)o[k]!, k, "an integer");
        T Get<T>(Func<T> f, string k, string what)
        {
            try { return f(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException or InvalidCastException)
            { throw new UserError($"{source}: {k} must be {what}, got {o[k]!.ToJsonString()}"); }
        }
        if (o["image_dim"] is not null || o["added_kv_proj_dim"] is not null)
            throw new UserError($"{source}: image_dim/added_kv_proj_dim are set: image-to-video Wan is not supported yet (text-to-video only)");
        var cfg = new WanTransformerConfig
        {
            PatchSize = o["patch_size"] is JsonArray p ? Get(() => p.Select(x => (int)x!).ToArray(), "patch_size", "a list of 3 integers") : [1, 2, 2],
            NumAttentionHeads = Int("num_attention_heads", 40),
            AttentionHeadDim = Int("attention_head_dim", 128),
            InChannels = Int("in_channels", 16),
            OutChannels = Int("out_channels", 16),
            TextDim = Int("text_dim", 4096),
            FreqDim = Int("freq_dim", 256),
            FfnDim = Int("ffn_dim", 13824),
            NumLayers = Int("num_layers", 40),
            CrossAttnNorm = o["cross_attn_norm"] is null || Get(() => (bool)o["cross_attn_norm"]!, "cross_attn_norm", "true or false"),
            QkNorm = o["qk_norm"] is null ? "rms_norm_across_heads" : Get(() => (string)o["qk_norm"]!, "qk_norm", "a string"),
            Eps = o["eps"] is null ? 1e-6 : Get(() => (double)o["eps"]!, "eps", "a number"),
            RopeMaxSeqLen = Int("rope_max_seq_len", 1024),
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
    public Tensor Forward(Tensor x, Tensor? context = null, (Tensor Cos, Tensor Sin)? rope = null)
    {
        using var scope = NewDisposeScope();
        var kv = context ?? x;
        long b = x.shape[0], s = x.shape[1], l = kv.shape[1], d = x.shape[2], hd = d / _heads;
        // Linears and attention go through ActivationCheckpoint, which keeps their outputs under the "ops" policy.
        var q = norm_q.forward(ActivationCheckpoint.Linear(to_q, x)).view(b, s, _heads, hd);   // [B,S,H,hd]
        var k = norm_k.forward(ActivationCheckpoint.Linear(to_k, kv)).view(b, l, _heads, hd);
        var v = ActivationCheckpoint.Linear(to_v, kv).view(b, l, _heads, hd);
        if (rope is { } r)
        {
            q = RotaryPosEmbed3D.Apply(q, r.Cos, r.Sin);
            k = RotaryPosEmbed3D.Apply(k, r.Cos, r.Sin);
        }
        // [B,S,H,hd] -> [B,H,S,hd] for SDPA, and back.
        var o = ActivationCheckpoint.Attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
        o = o.transpose(1, 2).reshape(b, s, d);
        return ActivationCheckpoint.Linear(to_out[0], o).MoveToOuterDisposeScope();
    }
}

/// <summary>Linear -> GELU(tanh) -> Linear with Diffusers' keys <c>net.0.proj</c> and <c>net.2</c>.</summary>
public sealed class WanFeedForward : nn.Module<Tensor, Tensor>
{
    public readonly ModuleList<nn.Module<Tensor, Tensor>> net;

    public WanFeedForward(int dim, int innerDim, Device? device = null) : base(nameof(WanFeedForward))
    {
        net = nn.ModuleList<nn.Module<Tensor, Tensor>>(new GeluTanhProjection(dim, innerDim, device), nn.Dropout(0.0), new LoraLinear(innerDim, dim, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var h = net[0].forward(x);
        return ActivationCheckpoint.Linear(net[2], h);
    }

    private sealed class GeluTanhProjection : nn.Module<Tensor, Tensor>
    {
        public readonly LoraLinear proj;

        public GeluTanhProjection(int dim, int inner, Device? device) : base("GELU")
        {
            proj = new LoraLinear(dim, inner, device: device);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var h = ActivationCheckpoint.Linear(proj, x);
            return nn.functional.gelu(h, GELU.Approximate.tanh);
        }
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
    public readonly WanFeedForward ffn;
    private readonly double _eps;

    public WanTransformerBlock(WanTransformerConfig c, Device? device = null) : base(nameof(WanTransformerBlock))
    {
        int dim = c.InnerDim;
        _eps = c.Eps;
        scale_shift_table = ModuleParameter.Create(() => randn(1, 6, dim, device: device) / Math.Sqrt(dim));
        attn1 = new WanAttention(dim, c.NumAttentionHeads, c.Eps, device);
        attn2 = new WanAttention(dim, c.NumAttentionHeads, c.Eps, device);
        norm2 = c.CrossAttnNorm ? new Fp32AffineLayerNorm(dim, c.Eps, device: device) : null;
        ffn = new WanFeedForward(dim, c.FfnDim, device);
        RegisterComponents();
    }

    /// <param name="x">[B, S, D] video tokens.</param>
    /// <param name="context">[B, L, D] projected text.</param>
    /// <param name="timestepProj">[B, 6, D] per-sample modulation from the condition embedder.</param>
    public Tensor Forward(Tensor x, Tensor context, Tensor timestepProj, (Tensor Cos, Tensor Sin) rope)
    {
        using var scope = NewDisposeScope();
        var mod = (scale_shift_table.to_type(ScalarType.Float32) + timestepProj.to_type(ScalarType.Float32)).chunk(6, 1); // 6 x [B,1,D]
        var (shiftA, scaleA, gateA, shiftF, scaleF, gateF) = (mod[0], mod[1], mod[2], mod[3], mod[4], mod[5]);

        var y = (Fp32LayerNorm.Apply(x, _eps) * (scaleA + 1.0) + shiftA).to_type(x.dtype);
        var a = attn1.Forward(y, rope: rope);
        x = (x.to_type(ScalarType.Float32) + a * gateA).to_type(x.dtype);

        y = norm2 is null ? x : norm2.forward(x).to_type(x.dtype);
        x = x + attn2.Forward(y, context);

        y = (Fp32LayerNorm.Apply(x, _eps) * (scaleF + 1.0) + shiftF).to_type(x.dtype);
        var f = ffn.forward(y);
        x = (x.to_type(ScalarType.Float32) + f.to_type(ScalarType.Float32) * gateF).to_type(x.dtype);
        return x.MoveToOuterDisposeScope();
    }
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

/// <summary>
/// The Wan 2.1 text-to-video transformer. Forward: hidden_states [B,C,T,H,W], timestep [B] (one value per sample),
/// encoder_hidden_states [B,L,text_dim] -> [B,out_channels,T,H,W]. The text mask is not used (as in Wan).
/// </summary>
public sealed partial class WanTransformer3DModel : nn.Module
{
    public WanTransformerConfig Config { get; }

    public readonly Conv3d patch_embedding;
    public readonly WanTimeTextEmbedding condition_embedder;
    public readonly ModuleList<WanTransformerBlock> blocks;
    public readonly LoraLinear proj_out;
    public readonly Parameter scale_shift_table; // [1, 2, D]: index 0 = shift, 1 = scale

    /// <param name="config">The architecture.</param>
    /// <param name="device">Where the parameters live, CPU by default. On the meta device the model has shapes but no
    /// memory and skips the random initialisation: the way to build it for <see cref="FastVideo.Weights.StateDict.Materialize"/>.</param>
    public WanTransformer3DModel(WanTransformerConfig config, Device? device = null) : base(nameof(WanTransformer3DModel))
    {
        config.Validate("WanTransformer3DModel config");
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

    public Tensor Forward(Tensor hiddenStates, Tensor timestep, Tensor encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        Interlocked.Increment(ref _forwardCount);
        if (hiddenStates.dim() != 5) throw new ArgumentException($"hidden_states must be [B,C,T,H,W], got {Shape(hiddenStates)}");
        var p = Config.PatchSize;
        long b = hiddenStates.shape[0], t = hiddenStates.shape[2], h = hiddenStates.shape[3], w = hiddenStates.shape[4];
        if (hiddenStates.shape[1] != Config.InChannels)
            throw new ArgumentException($"hidden_states has {hiddenStates.shape[1]} channels, the model expects {Config.InChannels}");
        if (t % p[0] != 0 || h % p[1] != 0 || w % p[2] != 0)
            throw new ArgumentException($"latent size {t}x{h}x{w} is not divisible by patch_size [{string.Join(",", p)}]");
        if (timestep.numel() != b) throw new ArgumentException($"timestep must have one value per sample ([{b}]), got {Shape(timestep)}");
        long ft = t / p[0], fh = h / p[1], fw = w / p[2];
        var dtype = ComputeDtype ?? ParamDtype;

        var rope = RotaryPosEmbed3D.Tables(Config.AttentionHeadDim, ft, fh, fw, device: hiddenStates.device);
        var patches = dtype == ParamDtype
            ? patch_embedding.forward(hiddenStates.to_type(dtype))
            : nn.functional.conv3d(hiddenStates.to_type(dtype), patch_embedding.weight!.to_type(dtype), patch_embedding.bias!.to_type(dtype),
                strides: [p[0], p[1], p[2]]);
        var x = patches.flatten(2).transpose(1, 2); // [B,S,D], S ordered (f,h,w)

        var (temb, tproj, context) = condition_embedder.Forward(timestep.reshape(b), encoderHiddenStates, dtype);
        tproj = tproj.unflatten(1, [6, Config.InnerDim]);  // [B,6,D]

        for (int i = 0; i < blocks.Count; i++)
        {
            var block = blocks[i];
            x = GradientCheckpointing is { } policy && policy.Checkpoints(i)
                ? ActivationCheckpoint.Apply(a => block.Forward(a[0], a[1], a[2], (a[3], a[4])), [x, context, tproj, rope.Cos, rope.Sin],
                    block.parameters(), policy.Selective)
                : block.Forward(x, context, tproj, rope);
        }

        var mod = (scale_shift_table.to_type(ScalarType.Float32) + temb.to_type(ScalarType.Float32).unsqueeze(1)).chunk(2, 1);
        x = (Fp32LayerNorm.Apply(x, Config.Eps) * (mod[1] + 1.0) + mod[0]).to_type(dtype);
        x = proj_out.forward(x); // [B,S,pt*ph*pw*C]

        // [B,F',H',W',pt,ph,pw,C] -> [B,C,F',pt,H',ph,W',pw] -> [B,C,T,H,W]
        x = x.reshape(b, ft, fh, fw, p[0], p[1], p[2], Config.OutChannels)
             .permute(0, 7, 1, 4, 2, 5, 3, 6)
             .reshape(b, Config.OutChannels, t, h, w);
        return x.to_type(ParamDtype).MoveToOuterDisposeScope();
    }

    private static string Shape(Tensor x) => "[" + string.Join(",", x.shape) + "]";
}

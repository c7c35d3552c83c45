using System.Text.Json.Nodes;
using FastVideo.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

// HunyuanVideo text-to-video DiT with Diffusers' parameter names and semantics (transformer_hunyuan_video.py), so a
// Diffusers checkpoint loads key for key and the text attention mask is honoured as Diffusers does (refiner
// self-attention, the refiner's masked mean pooling, the joint attention's key mask). Reads top-down: config,
// attention, condition embedding, token refiner, dual-stream block, single-stream block, model.

/// <summary>Fields of a Diffusers <c>transformer/config.json</c> for HunyuanVideoTransformer3DModel (names as in the file).</summary>
public sealed record HunyuanVideoTransformerConfig
{
    public int InChannels { get; init; } = 16;
    public int OutChannels { get; init; } = 16;
    public int NumAttentionHeads { get; init; } = 24;
    public int AttentionHeadDim { get; init; } = 128;
    /// <summary>Dual-stream blocks.</summary>
    public int NumLayers { get; init; } = 20;
    /// <summary>Single-stream blocks.</summary>
    public int NumSingleLayers { get; init; } = 40;
    public int NumRefinerLayers { get; init; } = 2;
    public double MlpRatio { get; init; } = 4.0;
    public int PatchSize { get; init; } = 2;
    public int PatchSizeT { get; init; } = 1;
    public string QkNorm { get; init; } = "rms_norm";
    /// <summary>Whether the model embeds a guidance scale (HunyuanVideo is guidance-distilled: true).</summary>
    public bool GuidanceEmbeds { get; init; } = true;
    public int TextEmbedDim { get; init; } = 4096;
    public int PooledProjectionDim { get; init; } = 768;
    public double RopeTheta { get; init; } = 256.0;
    public int[] RopeAxesDim { get; init; } = [16, 56, 56];

    public int InnerDim => NumAttentionHeads * AttentionHeadDim;
    /// <summary>int(hidden · mlp_ratio), as Diffusers' FeedForward and single block compute it.</summary>
    public int MlpDim => (int)(InnerDim * MlpRatio);
    /// <summary>Output features per token: channels × p_t × p × p.</summary>
    public long PatchFeatures => (long)OutChannels * PatchSizeT * PatchSize * PatchSize;

    /// <summary>Reads config.json; Diffusers fields not listed here are ignored, unsupported variants are refused.</summary>
    public static HunyuanVideoTransformerConfig FromJson(JsonObject o, string source)
    {
        var j = new ConfigJson(o, source);
        if (j.String("image_condition_type", null) is { } image)
            throw new UserError($"{source}: image_condition_type '{image}' is set: image-to-video HunyuanVideo is not supported (text-to-video only)");
        var cfg = new HunyuanVideoTransformerConfig
        {
            InChannels = j.Int("in_channels", 16),
            OutChannels = j.Int("out_channels", 16),
            NumAttentionHeads = j.Int("num_attention_heads", 24),
            AttentionHeadDim = j.Int("attention_head_dim", 128),
            NumLayers = j.Int("num_layers", 20),
            NumSingleLayers = j.Int("num_single_layers", 40),
            NumRefinerLayers = j.Int("num_refiner_layers", 2),
            MlpRatio = j.Double("mlp_ratio", 4.0),
            PatchSize = j.Int("patch_size", 2),
            PatchSizeT = j.Int("patch_size_t", 1),
            QkNorm = j.String("qk_norm", null) ?? "rms_norm",
            GuidanceEmbeds = j.Bool("guidance_embeds", true),
            TextEmbedDim = j.Int("text_embed_dim", 4096),
            PooledProjectionDim = j.Int("pooled_projection_dim", 768),
            RopeTheta = j.Double("rope_theta", 256.0),
            RopeAxesDim = j.Ints("rope_axes_dim", [16, 56, 56]),
        };
        cfg.Validate(source);
        return cfg;
    }

    public void Validate(string source)
    {
        if (QkNorm != "rms_norm") throw new UserError($"{source}: qk_norm '{QkNorm}' is not supported (expected 'rms_norm')");
        foreach (var (k, v) in new[] { ("in_channels", InChannels), ("out_channels", OutChannels), ("num_attention_heads", NumAttentionHeads),
                     ("attention_head_dim", AttentionHeadDim), ("patch_size", PatchSize), ("patch_size_t", PatchSizeT),
                     ("text_embed_dim", TextEmbedDim), ("pooled_projection_dim", PooledProjectionDim) })
            if (v < 1) throw new UserError($"{source}: {k} must be >= 1, got {v}");
        foreach (var (k, v) in new[] { ("num_layers", NumLayers), ("num_single_layers", NumSingleLayers), ("num_refiner_layers", NumRefinerLayers) })
            if (v < 0) throw new UserError($"{source}: {k} must be >= 0, got {v}");
        if (!(MlpRatio > 0) || MlpDim < 1) throw new UserError($"{source}: mlp_ratio must be > 0, got {MlpRatio}");
        if (!(RopeTheta > 0)) throw new UserError($"{source}: rope_theta must be > 0, got {RopeTheta}");
        if (RopeAxesDim.Length != 3 || RopeAxesDim.Any(d => d < 2 || d % 2 != 0) || RopeAxesDim.Sum() != AttentionHeadDim)
            throw new UserError($"{source}: rope_axes_dim must be 3 even sizes summing to attention_head_dim {AttentionHeadDim}, got [{string.Join(", ", RopeAxesDim)}]");
    }

    public JsonObject ToJson() => new()
    {
        ["_class_name"] = "HunyuanVideoTransformer3DModel",
        ["_diffusers_version"] = "0.32.1",
        ["in_channels"] = InChannels,
        ["out_channels"] = OutChannels,
        ["num_attention_heads"] = NumAttentionHeads,
        ["attention_head_dim"] = AttentionHeadDim,
        ["num_layers"] = NumLayers,
        ["num_single_layers"] = NumSingleLayers,
        ["num_refiner_layers"] = NumRefinerLayers,
        ["mlp_ratio"] = MlpRatio,
        ["patch_size"] = PatchSize,
        ["patch_size_t"] = PatchSizeT,
        ["qk_norm"] = QkNorm,
        ["guidance_embeds"] = GuidanceEmbeds,
        ["text_embed_dim"] = TextEmbedDim,
        ["pooled_projection_dim"] = PooledProjectionDim,
        ["rope_theta"] = RopeTheta,
        ["rope_axes_dim"] = new JsonArray(RopeAxesDim.Select(x => (JsonNode)x).ToArray()),
        ["image_condition_type"] = null,
    };
}

/// <summary>
/// Diffusers' Attention as HunyuanVideo configures it (HunyuanVideoAttnProcessor2_0, or the plain processor in the
/// token refiner): q/k/v projections, per-head RMSNorm of q and k (<c>qk_norm: rms_norm</c>), optionally a second set
/// of projections for the text stream (<c>add_q_proj</c>... with <c>norm_added_q/k</c>), and output projections
/// <c>to_out.0</c> / <c>to_add_out</c> where the block has them. Attention scale 1/sqrt(head_dim).
/// </summary>
public sealed class HunyuanVideoAttention : nn.Module
{
    public readonly LoraLinear to_q, to_k, to_v;
    public readonly RMSNorm? norm_q, norm_k;
    public readonly LoraLinear? add_q_proj, add_k_proj, add_v_proj;
    public readonly RMSNorm? norm_added_q, norm_added_k;
    public readonly ModuleList<nn.Module<Tensor, Tensor>>? to_out; // [Linear, Dropout]: key "to_out.0"
    public readonly LoraLinear? to_add_out;
    private readonly int _heads;

    /// <param name="dim">Hidden size (heads × head_dim).</param>
    /// <param name="heads">Attention heads.</param>
    /// <param name="qkNorm">Per-head RMSNorm of q and k (eps 1e-6).</param>
    /// <param name="addedProjections">Separate projections for the text stream (dual-stream blocks).</param>
    /// <param name="outputProjection">An output projection (<c>to_out.0</c>; single-stream blocks have none).</param>
    public HunyuanVideoAttention(int dim, int heads, bool qkNorm, bool addedProjections, bool outputProjection, Device? device = null)
        : base(nameof(HunyuanVideoAttention))
    {
        _heads = heads;
        int headDim = dim / heads;
        to_q = new LoraLinear(dim, dim, device: device);
        to_k = new LoraLinear(dim, dim, device: device);
        to_v = new LoraLinear(dim, dim, device: device);
        if (qkNorm)
        {
            norm_q = new RMSNorm(headDim, 1e-6, device: device);
            norm_k = new RMSNorm(headDim, 1e-6, device: device);
        }
        if (addedProjections)
        {
            add_q_proj = new LoraLinear(dim, dim, device: device);
            add_k_proj = new LoraLinear(dim, dim, device: device);
            add_v_proj = new LoraLinear(dim, dim, device: device);
            to_add_out = new LoraLinear(dim, dim, device: device);
            if (qkNorm)
            {
                norm_added_q = new RMSNorm(headDim, 1e-6, device: device);
                norm_added_k = new RMSNorm(headDim, 1e-6, device: device);
            }
        }
        if (outputProjection) to_out = nn.ModuleList<nn.Module<Tensor, Tensor>>(new LoraLinear(dim, dim, device: device), nn.Dropout(0.0));
        RegisterComponents();
    }

    /// <summary>
    /// Joint attention over [image ; text] tokens, RoPE on the image part only. Dual-stream (with added projections):
    /// <paramref name="image"/> [B,S,D] and <paramref name="text"/> [B,L,D] are projected separately and the outputs go
    /// through <c>to_out.0</c> / <c>to_add_out</c>. Single-stream: <paramref name="text"/> is null and
    /// <paramref name="image"/> is the whole sequence whose first <paramref name="imageTokens"/> tokens are the image;
    /// the output is the unprojected attention over it.
    /// </summary>
    /// <param name="keyMask">Boolean [B,1,1,S+L]: which keys every query sees.</param>
    /// <param name="rope">cos/sin tables [S, head_dim/2] of the image tokens.</param>
    public (Tensor Image, Tensor? Text) Forward(Tensor image, Tensor? text, long imageTokens, Tensor keyMask, (Tensor Cos, Tensor Sin) rope)
    {
        using var scope = NewDisposeScope();
        var q = Rotated(Heads(norm_q, ActivationCheckpoint.Linear(to_q, image)), imageTokens, rope);
        var k = Rotated(Heads(norm_k, ActivationCheckpoint.Linear(to_k, image)), imageTokens, rope);
        var v = Heads(null, ActivationCheckpoint.Linear(to_v, image));
        if (text is not null)
        {
            q = cat([q, Heads(norm_added_q, ActivationCheckpoint.Linear(add_q_proj!, text))], 1);
            k = cat([k, Heads(norm_added_k, ActivationCheckpoint.Linear(add_k_proj!, text))], 1);
            v = cat([v, Heads(null, ActivationCheckpoint.Linear(add_v_proj!, text))], 1);
        }
        var o = Attend(q, k, v, keyMask);                                   // [B,N,D]
        if (text is null) return (o.MoveToOuterDisposeScope(), null);
        long s = image.shape[1];
        var oi = ActivationCheckpoint.Linear(to_out![0], o.narrow(1, 0, s));
        var ot = ActivationCheckpoint.Linear(to_add_out!, o.narrow(1, s, text.shape[1]));
        return (oi.MoveToOuterDisposeScope(), ot.MoveToOuterDisposeScope());
    }

    /// <summary>Self-attention of the token refiner: <paramref name="mask"/> boolean [B,1,L,L] (null: all to all), then <c>to_out.0</c>.</summary>
    public Tensor SelfAttention(Tensor x, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        var o = Attend(Heads(norm_q, to_q.forward(x)), Heads(norm_k, to_k.forward(x)), Heads(null, to_v.forward(x)), mask);
        return to_out![0].forward(o).MoveToOuterDisposeScope();
    }

    /// <summary>[B,N,D] -> [B,N,H,hd], RMS-normalised per head when <paramref name="norm"/> is given.</summary>
    private Tensor Heads(RMSNorm? norm, Tensor x)
    {
        var h = x.view(x.shape[0], x.shape[1], _heads, x.shape[2] / _heads);
        return norm is null ? h : norm.forward(h);
    }

    /// <summary>RoPE on the first <paramref name="imageTokens"/> tokens of [B,N,H,hd].</summary>
    private static Tensor Rotated(Tensor x, long imageTokens, (Tensor Cos, Tensor Sin) rope)
    {
        if (imageTokens == x.shape[1]) return RotaryPosEmbed3D.Apply(x, rope.Cos, rope.Sin);
        return cat([RotaryPosEmbed3D.Apply(x.narrow(1, 0, imageTokens), rope.Cos, rope.Sin), x.narrow(1, imageTokens, x.shape[1] - imageTokens)], 1);
    }

    /// <summary>SDPA on [B,N,H,hd] q/k/v with a boolean mask -> [B,N,D].</summary>
    private static Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        var o = ActivationCheckpoint.Attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask); // [B,H,N,hd]
        return o.transpose(1, 2).flatten(2);
    }
}

/// <summary>
/// Timestep (+ guidance) + pooled-text embedding (Diffusers' HunyuanVideoConditionEmbedding, and without guidance the
/// refiner's CombinedTimestepTextProjEmbeddings): sinusoid(256) -> TimestepEmbedding, pooled -> Linear-SiLU-Linear, summed.
/// </summary>
public sealed class HunyuanVideoConditionEmbedding : nn.Module
{
    public readonly TimestepEmbedding timestep_embedder;
    public readonly TextProjection text_embedder;
    public readonly TimestepEmbedding? guidance_embedder;

    public HunyuanVideoConditionEmbedding(int dim, int pooledDim, bool guidance, Device? device = null) : base(nameof(HunyuanVideoConditionEmbedding))
    {
        timestep_embedder = new TimestepEmbedding(256, dim, device: device);
        text_embedder = new TextProjection(pooledDim, dim, device: device, silu: true);
        if (guidance) guidance_embedder = new TimestepEmbedding(256, dim, device: device);
        RegisterComponents();
    }

    /// <summary>timestep [B], pooled [B,P], guidance [B] (with a guidance embedder) -> [B,D] in the weights' dtype.</summary>
    public Tensor Forward(Tensor timestep, Tensor pooled, Tensor? guidance = null)
    {
        using var scope = NewDisposeScope();
        var own = timestep_embedder.linear_1.weight!.dtype;
        var emb = timestep_embedder.forward(TimestepSinusoid.Embed(timestep, 256).to_type(own)) + text_embedder.forward(pooled.to_type(own));
        if (guidance_embedder is not null)
            emb = emb + guidance_embedder.forward(TimestepSinusoid.Embed(guidance ?? throw new ArgumentException("this model embeds a guidance scale: guidance is required"), 256).to_type(own));
        return emb.MoveToOuterDisposeScope();
    }
}

/// <summary>One block of the token refiner: masked self-attention and a SiLU MLP, both gated by the refiner's embedding.</summary>
public sealed class HunyuanVideoIndividualTokenRefinerBlock : nn.Module
{
    public readonly Fp32AffineLayerNorm norm1, norm2;   // LayerNorm with affine weight/bias, eps 1e-6
    public readonly HunyuanVideoAttention attn;
    public readonly FeedForward ff;
    public readonly AdaModulation norm_out;             // gate_msa, gate_mlp

    public HunyuanVideoIndividualTokenRefinerBlock(HunyuanVideoTransformerConfig c, Device? device = null) : base(nameof(HunyuanVideoIndividualTokenRefinerBlock))
    {
        int dim = c.InnerDim;
        norm1 = new Fp32AffineLayerNorm(dim, 1e-6, device: device);
        attn = new HunyuanVideoAttention(dim, c.NumAttentionHeads, qkNorm: false, addedProjections: false, outputProjection: true, device);
        norm2 = new Fp32AffineLayerNorm(dim, 1e-6, device: device);
        ff = new FeedForward(dim, c.MlpDim, FeedForwardActivation.Silu, device);
        norm_out = new AdaModulation(dim, 2, device);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor temb, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        var a = attn.SelfAttention(norm1.forward(x).to_type(x.dtype), mask);
        var gates = norm_out.Forward(temb);
        x = (x.to_type(ScalarType.Float32) + a * gates[0]).to_type(x.dtype);
        var f = ff.forward(norm2.forward(x).to_type(x.dtype));
        return (x.to_type(ScalarType.Float32) + f * gates[1]).to_type(x.dtype).MoveToOuterDisposeScope();
    }
}

/// <summary>The refiner's blocks under <c>refiner_blocks.N</c>, and the self-attention mask they share.</summary>
public sealed class HunyuanVideoIndividualTokenRefiner : nn.Module
{
    public readonly ModuleList<HunyuanVideoIndividualTokenRefinerBlock> refiner_blocks;

    public HunyuanVideoIndividualTokenRefiner(HunyuanVideoTransformerConfig c, Device? device = null) : base(nameof(HunyuanVideoIndividualTokenRefiner))
    {
        refiner_blocks = nn.ModuleList(Enumerable.Range(0, c.NumRefinerLayers).Select(_ => new HunyuanVideoIndividualTokenRefinerBlock(c, device)).ToArray());
        RegisterComponents();
    }

    /// <param name="mask">[B,L] text mask (null: every token): a token attends to the valid tokens when it is valid
    /// itself; every row also sees token 0, so that padded rows stay finite (Diffusers).</param>
    public Tensor Forward(Tensor x, Tensor temb, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        Tensor? selfMask = null;
        if (mask is not null)
        {
            long b = mask.shape[0], l = mask.shape[1];
            var m = mask.to_type(ScalarType.Bool).view(b, 1, 1, l).expand(b, 1, l, l);
            selfMask = m.logical_and(m.transpose(2, 3));
            selfMask.select(3, 0).fill_(true);
        }
        foreach (var block in refiner_blocks) x = block.Forward(x, temb, selfMask);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The text path (Diffusers' HunyuanVideoTokenRefiner, key <c>context_embedder</c>): the mean of the text tokens over
/// the mask conditions the refiner's own timestep embedding; the tokens are projected and refined.
/// </summary>
public sealed class HunyuanVideoTokenRefiner : nn.Module
{
    public readonly HunyuanVideoConditionEmbedding time_text_embed;
    public readonly Linear proj_in;
    public readonly HunyuanVideoIndividualTokenRefiner token_refiner;

    public HunyuanVideoTokenRefiner(HunyuanVideoTransformerConfig c, Device? device = null) : base(nameof(HunyuanVideoTokenRefiner))
    {
        time_text_embed = new HunyuanVideoConditionEmbedding(c.InnerDim, c.TextEmbedDim, guidance: false, device);
        proj_in = nn.Linear(c.TextEmbedDim, c.InnerDim, device: device);
        token_refiner = new HunyuanVideoIndividualTokenRefiner(c, device);
        RegisterComponents();
    }

    /// <summary>text [B,L,text_embed_dim], timestep [B], mask [B,L] (null: every token) -> [B,L,D] in the weights' dtype.</summary>
    public Tensor Forward(Tensor text, Tensor timestep, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        var own = proj_in.weight!.dtype;
        text = text.to_type(own);
        Tensor pooled;
        if (mask is null) pooled = text.mean([1L]);
        else
        {
            // Masked mean in float32. A prompt with no valid token pools to zeros (Diffusers would divide by zero).
            var m = mask.to_type(ScalarType.Float32).unsqueeze(-1);
            pooled = ((text.to_type(ScalarType.Float32) * m).sum(1) / m.sum(1).clamp_min(1.0)).to_type(own);
        }
        var temb = time_text_embed.Forward(timestep, pooled);
        var x = token_refiner.Forward(proj_in.forward(text), temb, mask);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Dual-stream block: image and text keep their own modulation, projections and MLPs and meet in one joint
/// attention. Modulation and the parameter-free norms run in float32.
/// </summary>
public sealed class HunyuanVideoTransformerBlock : nn.Module
{
    public readonly AdaModulation norm1, norm1_context;  // shift, scale, gate (attention); shift, scale, gate (MLP)
    public readonly HunyuanVideoAttention attn;
    public readonly FeedForward ff, ff_context;

    public HunyuanVideoTransformerBlock(HunyuanVideoTransformerConfig c, Device? device = null) : base(nameof(HunyuanVideoTransformerBlock))
    {
        int dim = c.InnerDim;
        norm1 = new AdaModulation(dim, 6, device);
        norm1_context = new AdaModulation(dim, 6, device);
        attn = new HunyuanVideoAttention(dim, c.NumAttentionHeads, qkNorm: true, addedProjections: true, outputProjection: true, device);
        ff = new FeedForward(dim, c.MlpDim, FeedForwardActivation.GeluTanh, device);
        ff_context = new FeedForward(dim, c.MlpDim, FeedForwardActivation.GeluTanh, device);
        RegisterComponents();
    }

    /// <param name="image">[B,S,D]</param>
    /// <param name="text">[B,L,D]</param>
    /// <param name="temb">[B,D] conditioning.</param>
    /// <param name="keyMask">Boolean [B,1,1,S+L].</param>
    /// <param name="rope">Image tokens' RoPE tables.</param>
    public (Tensor Image, Tensor Text) Forward(Tensor image, Tensor text, Tensor temb, Tensor keyMask, (Tensor Cos, Tensor Sin) rope)
    {
        using var scope = NewDisposeScope();
        var mi = norm1.Forward(temb);          // 6 x [B,1,D] fp32
        var mt = norm1_context.Forward(temb);
        var (ai, at) = attn.Forward(Modulated(image, mi[1], mi[0]), Modulated(text, mt[1], mt[0]), image.shape[1], keyMask, rope);
        image = Gated(image, ai, mi[2]);
        text = Gated(text, at!, mt[2]);
        image = Gated(image, ff.forward(Modulated(image, mi[4], mi[3])), mi[5]);
        text = Gated(text, ff_context.forward(Modulated(text, mt[4], mt[3])), mt[5]);
        return (image.MoveToOuterDisposeScope(), text.MoveToOuterDisposeScope());
    }

    /// <summary>LayerNorm (no affine, eps 1e-6, fp32) · (1 + scale) + shift, in x's dtype.</summary>
    internal static Tensor Modulated(Tensor x, Tensor scale, Tensor shift) =>
        (Fp32LayerNorm.Apply(x, 1e-6) * (scale + 1.0) + shift).to_type(x.dtype);

    /// <summary>x + y · gate, added in fp32, in x's dtype.</summary>
    internal static Tensor Gated(Tensor x, Tensor y, Tensor gate) =>
        (x.to_type(ScalarType.Float32) + y.to_type(ScalarType.Float32) * gate).to_type(x.dtype);
}

/// <summary>
/// Single-stream block over the concatenated [image ; text] sequence: one modulation, attention (q/k/v, no output
/// projection) and MLP in parallel, joined by <c>proj_out</c>.
/// </summary>
public sealed class HunyuanVideoSingleTransformerBlock : nn.Module
{
    public readonly HunyuanVideoAttention attn;
    public readonly AdaModulation norm;   // shift, scale, gate
    public readonly LoraLinear proj_mlp, proj_out;

    public HunyuanVideoSingleTransformerBlock(HunyuanVideoTransformerConfig c, Device? device = null) : base(nameof(HunyuanVideoSingleTransformerBlock))
    {
        int dim = c.InnerDim;
        attn = new HunyuanVideoAttention(dim, c.NumAttentionHeads, qkNorm: true, addedProjections: false, outputProjection: false, device);
        norm = new AdaModulation(dim, 3, device);
        proj_mlp = new LoraLinear(dim, c.MlpDim, device: device);
        proj_out = new LoraLinear(dim + c.MlpDim, dim, device: device);
        RegisterComponents();
    }

    /// <param name="x">[B,S+L,D], the image's S tokens first.</param>
    public Tensor Forward(Tensor x, long imageTokens, Tensor temb, Tensor keyMask, (Tensor Cos, Tensor Sin) rope)
    {
        using var scope = NewDisposeScope();
        var m = norm.Forward(temb);
        var y = HunyuanVideoTransformerBlock.Modulated(x, m[1], m[0]);
        var mlp = nn.functional.gelu(ActivationCheckpoint.Linear(proj_mlp, y), GELU.Approximate.tanh);
        var (a, _) = attn.Forward(y, null, imageTokens, keyMask, rope);
        var h = ActivationCheckpoint.Linear(proj_out, cat([a, mlp], 2));
        return HunyuanVideoTransformerBlock.Gated(x, h, m[2]).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The HunyuanVideo text-to-video transformer. Forward: hidden_states [B,C,T,H,W], timestep [B],
/// encoder_hidden_states [B,L,text_embed_dim] with encoder_attention_mask [B,L], pooled_projections [B,P] and, for a
/// guidance-embedding model, guidance [B] (the embedded guidance scale × 1000) -> [B,out_channels,T,H,W].
/// </summary>
public sealed partial class HunyuanVideoTransformer3DModel : nn.Module, IDiffusionTransformer
{
    public HunyuanVideoTransformerConfig Config { get; }

    public readonly HunyuanVideoPatchEmbed x_embedder;
    public readonly HunyuanVideoTokenRefiner context_embedder;
    public readonly HunyuanVideoConditionEmbedding time_text_embed;
    public readonly ModuleList<HunyuanVideoTransformerBlock> transformer_blocks;
    public readonly ModuleList<HunyuanVideoSingleTransformerBlock> single_transformer_blocks;
    public readonly AdaModulation norm_out;   // scale, shift (this order, AdaLayerNormContinuous)
    public readonly LoraLinear proj_out;

    /// <param name="config">The architecture.</param>
    /// <param name="device">Where the parameters live, CPU by default; on the meta device the model has shapes only
    /// (build it there for <see cref="FastVideo.Weights.StateDict.Materialize"/>).</param>
    public HunyuanVideoTransformer3DModel(HunyuanVideoTransformerConfig config, Device? device = null) : base(nameof(HunyuanVideoTransformer3DModel))
    {
        config.Validate($"{nameof(HunyuanVideoTransformer3DModel)} config");
        using var scope = NewDisposeScope();
        Config = config;
        int dim = config.InnerDim;
        x_embedder = new HunyuanVideoPatchEmbed(config, device);
        context_embedder = new HunyuanVideoTokenRefiner(config, device);
        time_text_embed = new HunyuanVideoConditionEmbedding(dim, config.PooledProjectionDim, config.GuidanceEmbeds, device);
        transformer_blocks = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(_ => new HunyuanVideoTransformerBlock(config, device)).ToArray());
        single_transformer_blocks = nn.ModuleList(Enumerable.Range(0, config.NumSingleLayers).Select(_ => new HunyuanVideoSingleTransformerBlock(config, device)).ToArray());
        norm_out = new AdaModulation(dim, 2, device);
        proj_out = new LoraLinear(dim, config.PatchFeatures, device: device);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public CheckpointingPolicy? GradientCheckpointing { get; set; }

    /// <inheritdoc/>
    public ScalarType ParamDtype => proj_out.weight.dtype;

    /// <inheritdoc/>
    public ScalarType? ComputeDtype { get; set; }

    /// <param name="hiddenStates">[B,C,T,H,W] latents.</param>
    /// <param name="timestep">[B] (or one value).</param>
    /// <param name="encoderHiddenStates">[B,L,text_embed_dim] text tokens (LLaMA).</param>
    /// <param name="encoderAttentionMask">[B,L], 1 = token, 0 = padding; null = every token (upstream FastVideo's numerics).</param>
    /// <param name="pooledProjections">[B,pooled_projection_dim] (CLIP).</param>
    /// <param name="guidance">[B] embedded guidance (scale × 1000); required when the config has guidance_embeds.</param>
    public Tensor Forward(Tensor hiddenStates, Tensor timestep, Tensor encoderHiddenStates, Tensor? encoderAttentionMask,
        Tensor pooledProjections, Tensor? guidance = null)
    {
        using var scope = NewDisposeScope();
        var g = Grid(hiddenStates);
        long b = g.Batch, l = encoderHiddenStates.shape[1];
        CheckInputs(b, timestep, encoderHiddenStates, encoderAttentionMask, pooledProjections, guidance);
        var dtype = ComputeDtype ?? ParamDtype;
        timestep = timestep.numel() == 1 ? timestep.reshape(1).expand(b) : timestep.reshape(b);

        var rope = RotaryPosEmbed3D.Tables(Config.RopeAxesDim, g.GridFrames, g.GridHeight, g.GridWidth, Config.RopeTheta,
            ScalarType.Float32, device: hiddenStates.device);
        var temb = time_text_embed.Forward(timestep, pooledProjections, guidance?.reshape(-1).expand(b));   // [B,D]
        var image = x_embedder.Forward(hiddenStates, dtype);                                                // [B,S,D]
        var text = context_embedder.Forward(encoderHiddenStates, timestep, encoderAttentionMask).to_type(dtype); // [B,L,D]
        long s = image.shape[1];

        // Keys: every image token, and the first sum(mask) text tokens of each sample (Diffusers counts the mask).
        var valid = encoderAttentionMask is null ? full(new[] { b }, l, dtype: ScalarType.Int64) : encoderAttentionMask.to_type(ScalarType.Float32).sum(1).to_type(ScalarType.Int64);
        var keyMask = arange(s + l, device: hiddenStates.device).unsqueeze(0).lt(valid.to(hiddenStates.device).unsqueeze(1) + s).view(b, 1, 1, s + l);

        int index = 0;
        foreach (var block in transformer_blocks)
        {
            if (Checkpointed(index++))
            {
                var both = ActivationCheckpoint.Apply(t =>
                {
                    var (i, x) = block.Forward(t[0], t[1], t[2], t[3], (t[4], t[5]));
                    return cat([i, x], 1);
                }, [image, text, temb, keyMask, rope.Cos, rope.Sin], block.parameters(), GradientCheckpointing!.Selective);
                (image, text) = (both.narrow(1, 0, s), both.narrow(1, s, l));
            }
            else (image, text) = block.Forward(image, text, temb, keyMask, rope);
        }
        var joint = cat([image, text], 1);
        foreach (var block in single_transformer_blocks)
        {
            joint = Checkpointed(index++)
                ? ActivationCheckpoint.Apply(t => block.Forward(t[0], s, t[1], t[2], (t[3], t[4])),
                    [joint, temb, keyMask, rope.Cos, rope.Sin], block.parameters(), GradientCheckpointing!.Selective)
                : block.Forward(joint, s, temb, keyMask, rope);
        }
        return OutputHead(joint.narrow(1, 0, s), temb, g, dtype).MoveToOuterDisposeScope();
    }

    private bool Checkpointed(int index) => GradientCheckpointing is { } p && p.Checkpoints(index) && is_grad_enabled();

    private LatentGrid Grid(Tensor hiddenStates) =>
        LatentGrid.Of(hiddenStates, Config.InChannels, Config.PatchSizeT, Config.PatchSize, Config.PatchSize);

    private void CheckInputs(long b, Tensor timestep, Tensor text, Tensor? mask, Tensor pooled, Tensor? guidance)
    {
        if (timestep.numel() != 1 && timestep.numel() != b) throw new ArgumentException($"timestep must have 1 or B={b} values, got {Shape(timestep)}");
        if (text.dim() != 3 || text.shape[0] != b || text.shape[2] != Config.TextEmbedDim)
            throw new ArgumentException($"encoder_hidden_states must be [{b},L,{Config.TextEmbedDim}], got {Shape(text)}");
        if (mask is not null && (mask.dim() != 2 || mask.shape[0] != b || mask.shape[1] != text.shape[1]))
            throw new ArgumentException($"encoder_attention_mask must be [{b},{text.shape[1]}], got {Shape(mask)}");
        if (pooled.dim() != 2 || pooled.shape[0] != b || pooled.shape[1] != Config.PooledProjectionDim)
            throw new ArgumentException($"pooled_projections must be [{b},{Config.PooledProjectionDim}], got {Shape(pooled)}");
        if (Config.GuidanceEmbeds && guidance is null)
            throw new ArgumentException("this model embeds a guidance scale (guidance_embeds): guidance [B] is required");
        if (guidance is not null && guidance.numel() != 1 && guidance.numel() != b)
            throw new ArgumentException($"guidance must have 1 or B={b} values, got {Shape(guidance)}");
    }

    /// <summary>
    /// norm_out (scale, shift) and proj_out, then unpatchify: per token the features are (C, p_t, p, p), channel
    /// first (Diffusers' reshape [B,T',H',W',C,p_t,p,p]; Wan orders them channel last).
    /// </summary>
    private Tensor OutputHead(Tensor x, Tensor temb, LatentGrid g, ScalarType dtype)
    {
        var m = norm_out.Forward(temb);
        x = HunyuanVideoTransformerBlock.Modulated(x, m[0], m[1]).to_type(dtype);
        x = proj_out.forward(x);   // [B,S,C·pt·p·p]
        int p = Config.PatchSize, pt = Config.PatchSizeT;
        // [B,T',H',W',C,pt,p,p] -> [B,C,T',pt,H',p,W',p] -> [B,C,T,H,W]
        x = x.reshape(g.Batch, g.GridFrames, g.GridHeight, g.GridWidth, Config.OutChannels, pt, p, p)
             .permute(0, 4, 1, 5, 2, 6, 3, 7)
             .reshape(g.Batch, Config.OutChannels, g.Frames, g.Height, g.Width);
        return x.to_type(ParamDtype);
    }

    private static string Shape(Tensor x) => "[" + string.Join(",", x.shape) + "]";
}

/// <summary>Conv3d patch embedding under the key <c>proj</c>: [B,C,T,H,W] -> [B,S,D] tokens ordered (frame, row, column).</summary>
public sealed class HunyuanVideoPatchEmbed : nn.Module
{
    public readonly Conv3d proj;

    public HunyuanVideoPatchEmbed(HunyuanVideoTransformerConfig c, Device? device = null) : base(nameof(HunyuanVideoPatchEmbed))
    {
        proj = nn.Conv3d(c.InChannels, c.InnerDim, kernel_size: (c.PatchSizeT, c.PatchSize, c.PatchSize),
            stride: (c.PatchSizeT, c.PatchSize, c.PatchSize), device: device);
        RegisterComponents();
    }

    /// <summary>Computed in <paramref name="dtype"/>, the weights cast per use.</summary>
    public Tensor Forward(Tensor x, ScalarType dtype) => LatentGrid.EmbedPatches(proj, x, dtype);
}

using FastVideo.Models.Layers;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

// The block-causal Wan 2.1 DiT of CausVid / Self-Forcing (FastVideo's causal_wanvideo.py): the parameters of
// WanTransformer3DModel, so a bidirectional Diffusers checkpoint initialises it key for key, with one timestep per
// latent frame and attention restricted to the current block of frames and the earlier ones. Reads top-down: the
// attention pattern's settings, then the model with its training forward and its streaming forward.

/// <summary>
/// The causal DiT's attention pattern, in latent frames: FastVideo's arch-config fields, which Diffusers'
/// config.json does not carry. Validated once by <see cref="Validate"/>.
/// </summary>
public sealed record CausalAttentionConfig
{
    /// <summary>Frames denoised together: a block attends to all its frames and to the earlier blocks (1..3).</summary>
    public int NumFramesPerBlock { get; init; } = 3;

    /// <summary>Frames a block's tokens see, its own and the sink frames included; -1 = every earlier frame.</summary>
    public int LocalAttnSize { get; init; } = -1;

    /// <summary>The clip's first frames, which every block keeps seeing (attention sinks); needs a local window.</summary>
    public int SinkSize { get; init; }

    /// <summary>Frames a global-attention streaming cache holds before it grows (upstream's fixed cache size).</summary>
    public int SlidingWindowNumFrames { get; init; } = 21;

    /// <summary>Rows the text embeddings are zero-padded to before the text embedder (the padded rows are attended).</summary>
    public int TextLen { get; init; } = 512;

    /// <summary>Every problem of these settings, each with its key (num_frames_per_block, ...).</summary>
    public IEnumerable<Configs.OptionProblem> Problems()
    {
        foreach (var p in ValueProblems(NumFramesPerBlock, LocalAttnSize, SinkSize, SlidingWindowNumFrames)) yield return p;
        if (TextLen < 1) yield return new("text_len", $"must be >= 1, got {TextLen}");
        if (SinkSize > 0 && LocalAttnSize == -1)
            yield return new("sink_size", "attention sinks need a local window (local_attn_size > 0); with global attention every frame is seen anyway");
        // The window counts the sink frames; the rest must hold a whole block, or a block would not see all its own frames.
        else if (LocalAttnSize >= 1 && LocalAttnSize - SinkSize < NumFramesPerBlock)
            yield return new("local_attn_size", $"({LocalAttnSize}) must be at least sink_size ({SinkSize}) + num_frames_per_block ({NumFramesPerBlock})");
    }

    /// <summary>
    /// The problems of each given value on its own (null: not given), for a recipe record that holds some of the
    /// settings; how they combine is checked where they are merged (<see cref="Problems"/>).
    /// </summary>
    public static IEnumerable<Configs.OptionProblem> ValueProblems(int? numFramesPerBlock, int? localAttnSize, int? sinkSize, int? slidingWindowNumFrames)
    {
        if (numFramesPerBlock is < 1 or > 3) yield return new("num_frames_per_block", $"must be 1, 2 or 3, got {numFramesPerBlock}");
        if (localAttnSize is not null and not -1 and < 1) yield return new("local_attn_size", $"must be -1 (global) or >= 1, got {localAttnSize}");
        if (sinkSize < 0) yield return new("sink_size", $"must be >= 0, got {sinkSize}");
        if (slidingWindowNumFrames < 1) yield return new("sliding_window_num_frames", $"must be >= 1, got {slidingWindowNumFrames}");
    }

    /// <summary>Throws the first of <see cref="Problems"/> as "<paramref name="source"/>.key: problem".</summary>
    public void Validate(string source)
    {
        if (Problems().FirstOrDefault() is { } p) throw new UserError($"{source}.{p.Key}: {p.Detail}");
    }

    /// <summary>These settings with the given values replacing theirs (null keeps a value).</summary>
    public CausalAttentionConfig Overlay(int? numFramesPerBlock, int? localAttnSize, int? sinkSize, int? slidingWindowNumFrames) => this with
    {
        NumFramesPerBlock = numFramesPerBlock ?? NumFramesPerBlock,
        LocalAttnSize = localAttnSize ?? LocalAttnSize,
        SinkSize = sinkSize ?? SinkSize,
        SlidingWindowNumFrames = slidingWindowNumFrames ?? SlidingWindowNumFrames,
    };

    /// <summary>The window in tokens for latents of <paramref name="frameTokens"/> tokens per frame.</summary>
    public AttentionWindow Window(long frameTokens) => LocalAttnSize == -1
        ? AttentionWindow.Global
        : new AttentionWindow(SinkSize * frameTokens, (LocalAttnSize - SinkSize) * frameTokens);

    /// <summary>Frames a streaming chunk may have: all of them with global attention, else what the window keeps besides the sinks.</summary>
    public int? MaxChunkFrames => LocalAttnSize == -1 ? null : LocalAttnSize - SinkSize;
}

/// <summary>
/// The block-causal Wan transformer. Both forwards take hidden_states [B,C,T,H,W], a timestep per latent frame
/// ([B,T]; a scalar or [B] is broadcast) and encoder_hidden_states [B,L,text_dim] with L at most text_len, and
/// return [B,out_channels,T,H,W]:
/// <list type="bullet">
/// <item><see cref="Forward"/>, the training forward: the whole clip at once, each block of
/// <see cref="CausalAttentionConfig.NumFramesPerBlock"/> frames attending to itself and to the earlier frames its
/// window shows (upstream's block-causal mask);</item>
/// <item><see cref="ForwardStreaming"/>: one chunk of frames at a time, attending to the earlier frames through a
/// <see cref="CausalWanCache"/>; streaming a clip block by block gives the training forward's output.</item>
/// </list>
/// </summary>
public sealed partial class CausalWanTransformer3DModel : WanTransformerBase
{
    /// <summary>The <c>_class_name</c> of a causal folder's config.json (upstream's registry name for this model).</summary>
    public const string ClassName = "CausalWanTransformer3DModel";

    public CausalAttentionConfig Attention { get; }

    /// <inheritdoc cref="WanTransformerBase(string, WanTransformerConfig, Device?)"/>
    /// <param name="attention">The attention pattern (validated here).</param>
    public CausalWanTransformer3DModel(WanTransformerConfig config, CausalAttentionConfig attention, Device? device = null)
        : base(nameof(CausalWanTransformer3DModel), Checked(config, attention), device)
    {
        Attention = attention;
    }

    /// <summary>Checks before anything is allocated.</summary>
    private static WanTransformerConfig Checked(WanTransformerConfig config, CausalAttentionConfig attention)
    {
        attention.Validate("causal attention");
        if (config.PatchSize.Length == 3 && config.PatchSize[0] != 1)
            throw new UserError($"the causal Wan transformer needs patch_size[0] = 1 (one token grid per latent frame), got {config.PatchSize[0]}");
        return config;
    }

    /// <summary>The training forward over a whole clip, block-causal (see the class summary).</summary>
    public override Tensor Forward(Tensor hiddenStates, Tensor timestep, Tensor encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        CountForward();
        var g = Grid(hiddenStates);
        var dtype = ActivationDtype;
        var (x, temb, tproj, context, rope) = Embed(hiddenStates, timestep, PadText(encoderHiddenStates), g, startFrame: 0, dtype);
        var blockCausal = BlockCausalAttention(g.FrameTokens);
        x = RunBlocks(x, context, tproj, rope, (_, _) => new BlockAttention(blockCausal));
        return OutputHead(x, temb, g, dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Teacher forcing (FastVideo's forward with <c>clean_x</c>): the clean clip <paramref name="cleanStates"/> and the
    /// noisy one run as one sequence [clean | noisy]; clean frame f and noisy frame f share RoPE position f, the clean
    /// frames are modulated by <paramref name="cleanTimestep"/> (0 when null), and each noisy block attends to itself
    /// and to the clean frames of the earlier blocks, while the clean frames attend block-causally among themselves.
    /// Returns the prediction for the noisy frames. So block b sees exactly what streaming shows it after the clean
    /// blocks before it were written as context at that timestep. Global attention only (as upstream).
    /// </summary>
    public Tensor ForwardTeacherForcing(Tensor hiddenStates, Tensor timestep, Tensor encoderHiddenStates, Tensor cleanStates,
        Tensor? cleanTimestep = null)
    {
        using var scope = NewDisposeScope();
        CountForward();
        if (Attention.LocalAttnSize != -1)
            throw new UserError($"teacher forcing needs global attention (local_attn_size: -1), got local_attn_size {Attention.LocalAttnSize}: " +
                                "its clean context is every earlier block (windowed teacher forcing is not implemented, as upstream)");
        var g = Grid(hiddenStates);
        if (!cleanStates.shape.SequenceEqual(hiddenStates.shape))
            throw new ArgumentException($"clean latents {Shape(cleanStates)} must have the noisy latents' shape {Shape(hiddenStates)}");
        var dtype = ActivationDtype;
        var noisyT = FrameTimesteps(timestep, g.Batch, g.GridFrames).reshape(g.Batch, g.GridFrames);
        var cleanT = cleanTimestep is null ? zeros_like(noisyT) : FrameTimesteps(cleanTimestep, g.Batch, g.GridFrames).reshape(g.Batch, g.GridFrames);
        // One condition embedding for both halves: per sample, F clean frames then F noisy ones.
        var bothT = cat([cleanT.to_type(noisyT.dtype), noisyT], 1).reshape(-1);
        var (temb, tproj, context) = condition_embedder.Forward(bothT, PadText(encoderHiddenStates), dtype);
        temb = temb.unflatten(0, [g.Batch, 2 * g.GridFrames]).narrow(1, g.GridFrames, g.GridFrames);    // [B,F,D] (noisy half)
        tproj = tproj.unflatten(0, [g.Batch, 2 * g.GridFrames]).unflatten(2, [6, Config.InnerDim]);      // [B,2F,6,D]
        var (cos, sin) = RotaryPosEmbed3D.Tables(Config.AttentionHeadDim, g.GridFrames, g.GridHeight, g.GridWidth, device: hiddenStates.device);
        var x = cat([EmbedPatches(cleanStates, dtype), EmbedPatches(hiddenStates, dtype)], 1);              // [B,2S,D]
        x = RunBlocks(x, context, tproj, (cat([cos, cos], 0), cat([sin, sin], 0)), (_, _) => new BlockAttention(TeacherForcingAttention(g.FrameTokens)));
        return OutputHead(x.narrow(1, g.Tokens, g.Tokens), temb, g, dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One chunk of a clip, its frames starting at latent frame <paramref name="startFrame"/>: every block writes the
    /// chunk's keys and values into <paramref name="cache"/> (replacing what was there from that frame on, so a chunk
    /// may be run again, at another timestep or as clean context) and attends to the earlier frames of its window.
    /// The cross-attention keys and values of the text are cached when grad is off (with grad they are recomputed,
    /// so that gradients reach the text path).
    /// </summary>
    public Tensor ForwardStreaming(Tensor hiddenStates, Tensor timestep, Tensor encoderHiddenStates, CausalWanCache cache, long startFrame)
    {
        using var scope = NewDisposeScope();
        CountForward();
        var g = Grid(hiddenStates);
        if (cache.FrameTokens != g.FrameTokens)
            throw new ArgumentException($"the cache was made for {cache.FrameTokens} tokens per frame, the latents have {g.FrameTokens}: make a cache for this frame size");
        if (cache.SelfAttention.Count != blocks.Count) throw new ArgumentException($"the cache has {cache.SelfAttention.Count} blocks, the model {blocks.Count}");
        if (startFrame < 0) throw new ArgumentException($"startFrame must be >= 0, got {startFrame}");
        if (Attention.MaxChunkFrames is { } max && g.GridFrames > max)
            throw new ArgumentException($"a chunk of {g.GridFrames} frames does not fit the local window of {Attention.LocalAttnSize} frames " +
                                        $"({Attention.SinkSize} of them sinks): stream at most {max} frames at a time");
        var dtype = ActivationDtype;
        var text = PadText(encoderHiddenStates);
        var (x, temb, tproj, context, rope) = Embed(hiddenStates, timestep, text, g, startFrame, dtype);
        bool cacheText = !is_grad_enabled();
        if (cacheText) cache.UseText(text);
        long start = startFrame * g.FrameTokens;
        x = RunBlocks(x, context, tproj, rope, (i, checkpointed) => new BlockAttention(
            CachedAttention(cache.SelfAttention[i], checkpointed ? cache.SnapshotForRecomputation(i) : null, start),
            cacheText ? (attn, ctx) => cache.CrossKeysValues(i, attn, ctx) : null));
        return OutputHead(x, temb, g, dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A streaming cache for latents of <paramref name="latentHeight"/> x <paramref name="latentWidth"/>: one
    /// <see cref="KvCache"/> per block with this model's window, allocating <paramref name="capacityFrames"/> frames
    /// (default: the local window, or sliding_window_num_frames with global attention, as upstream sizes its cache;
    /// a global cache grows past it, a local one rolls).
    /// </summary>
    public CausalWanCache NewCache(long latentHeight, long latentWidth, int? capacityFrames = null)
    {
        long frameTokens = latentHeight / Config.PatchSize[1] * (latentWidth / Config.PatchSize[2]);
        var window = Attention.Window(frameTokens);
        long frames = capacityFrames ?? (Attention.LocalAttnSize == -1 ? Attention.SlidingWindowNumFrames : Attention.LocalAttnSize);
        return new CausalWanCache(frameTokens, blocks.Select(_ => (IKvCache)new KvCache(window, frames * frameTokens)).ToArray());
    }

    /// <summary>Patches, per-frame condition embedding and RoPE (frames numbered from <paramref name="startFrame"/>).</summary>
    private (Tensor X, Tensor Temb, Tensor TimestepProj, Tensor Context, (Tensor Cos, Tensor Sin) Rope) Embed(
        Tensor hiddenStates, Tensor timestep, Tensor text, LatentGrid g, long startFrame, ScalarType dtype)
    {
        var perFrame = FrameTimesteps(timestep, g.Batch, g.GridFrames);   // [B·F]
        var rope = RotaryPosEmbed3D.Tables(Config.AttentionHeadDim, g.GridFrames, g.GridHeight, g.GridWidth, startFrame: startFrame, device: hiddenStates.device);
        var x = EmbedPatches(hiddenStates, dtype);   // [B,S,D], S ordered (f,h,w)
        var (temb, tproj, context) = condition_embedder.Forward(perFrame, text, dtype);
        return (x, temb.unflatten(0, [g.Batch, g.GridFrames]),                          // [B,F,D]
            tproj.unflatten(0, [g.Batch, g.GridFrames]).unflatten(2, [6, Config.InnerDim]), // [B,F,6,D]
            context, rope);
    }

    /// <summary>One timestep per latent frame, [B·F]: from a scalar, one value per sample [B], or [B,F].</summary>
    private static Tensor FrameTimesteps(Tensor timestep, long batch, long frames)
    {
        long n = timestep.numel();
        if (n == 1) return timestep.reshape(1).expand(batch * frames);
        if (n == batch) return timestep.reshape(batch, 1).expand(batch, frames).reshape(batch * frames);
        if (n == batch * frames && (timestep.dim() == 1 || timestep.shape[0] == batch)) return timestep.reshape(batch * frames);
        throw new ArgumentException($"timestep must be a scalar, [B={batch}] or [B={batch}, T={frames}], got {Shape(timestep)}");
    }

    /// <summary>
    /// Text as upstream feeds it: zero rows appended up to text_len before the text embedder, so the padded rows pass
    /// through it and are attended like the others (no mask). The zero block has the batch's size, so any B works.
    /// </summary>
    private Tensor PadText(Tensor text)
    {
        long b = text.shape[0], l = text.shape[1];
        if (l > Attention.TextLen) throw new ArgumentException($"the text has {l} tokens, more than text_len {Attention.TextLen}");
        if (l == Attention.TextLen) return text;
        return cat([text, zeros([b, Attention.TextLen - l, text.shape[2]], dtype: text.dtype, device: text.device)], 1);
    }

    /// <summary>
    /// Upstream's block-causal mask without building it: each block of NumFramesPerBlock frames attends to the keys
    /// its window shows up to the block's end (itself and the earlier frames); blocks start at frame 0.
    /// </summary>
    private AttentionKernel BlockCausalAttention(long frameTokens)
    {
        var window = Attention.Window(frameTokens);
        long blockTokens = Attention.NumFramesPerBlock * frameTokens;
        return (q, k, v) =>
        {
            long total = q.shape[2];
            var outputs = new List<Tensor>();
            for (long start = 0; start < total; start += blockTokens)
            {
                long end = Math.Min(start + blockTokens, total);
                outputs.Add(ActivationCheckpoint.Attention(q.narrow(2, start, end - start), window.Select(k, end), window.Select(v, end)));
            }
            return cat(outputs, 2);
        };
    }

    /// <summary>
    /// Upstream's teacher-forcing mask on [clean | noisy] tokens (S each), without building it: a clean block attends
    /// to the clean tokens up to its end; noisy block [s, e) attends to the clean tokens before s and to itself.
    /// </summary>
    private AttentionKernel TeacherForcingAttention(long frameTokens)
    {
        long blockTokens = Attention.NumFramesPerBlock * frameTokens;
        return (q, k, v) =>
        {
            long half = q.shape[2] / 2;
            var outputs = new List<Tensor>();
            for (long start = 0; start < half; start += blockTokens)
            {
                long end = Math.Min(start + blockTokens, half);
                outputs.Add(ActivationCheckpoint.Attention(q.narrow(2, start, end - start), k.narrow(2, 0, end), v.narrow(2, 0, end)));
            }
            for (long start = 0; start < half; start += blockTokens)
            {
                long end = Math.Min(start + blockTokens, half);
                var (keys, values) = (k.narrow(2, half + start, end - start), v.narrow(2, half + start, end - start));
                if (start > 0) (keys, values) = (cat([k.narrow(2, 0, start), keys], 2), cat([v.narrow(2, 0, start), values], 2));
                outputs.Add(ActivationCheckpoint.Attention(q.narrow(2, half + start, end - start), keys, values));
            }
            return cat(outputs, 2);
        };
    }

    /// <summary>
    /// A chunk at token <paramref name="start"/> attending through a block's cache: to the earlier tokens of its
    /// window (read before the write: a rolling cache may evict while writing) and to its own, whose keys and values
    /// it then stores. A checkpointed call runs again in backward: it reads from <paramref name="snapshot"/>, taken
    /// before it, so that the recomputation sees what the forward saw, and writes once.
    /// </summary>
    private static AttentionKernel CachedAttention(IKvCache cache, IKvCache? snapshot, long start)
    {
        bool written = false;
        return (q, k, v) =>
        {
            long end = start + q.shape[2];
            var (keys, values) = (snapshot ?? cache).ReadWindow(start, end) is { } earlier
                ? (cat([earlier.Keys, k], 2), cat([earlier.Values, v], 2))
                : (k, v);
            if (!written)
            {
                using (no_grad()) cache.Append(start, k.detach(), v.detach());
                written = true;
            }
            return ActivationCheckpoint.Attention(q, keys, values);
        };
    }
}

// Loading: the bidirectional model's checkpoints, with the attention pattern given separately.
public sealed partial class CausalWanTransformer3DModel
{
    /// <inheritdoc cref="WanTransformerBase.LoadPretrained"/>
    public static CausalWanTransformer3DModel FromPretrained(string pathOrModelId, CausalAttentionConfig attention,
        ScalarType dtype = ScalarType.Float32, Device? device = null, string? weightsOverride = null) =>
        LoadPretrained(pathOrModelId, (c, d) => new CausalWanTransformer3DModel(c, attention, d), dtype, device, weightsOverride);

    /// <inheritdoc cref="WanTransformerBase.LoadWeights"/>
    public static CausalWanTransformer3DModel FromWeights(WanTransformerConfig config, CausalAttentionConfig attention, WeightSet weights,
        string source, ScalarType dtype) =>
        LoadWeights(new CausalWanTransformer3DModel(config, attention, torch.META), weights, source, dtype);

    /// <summary>A freshly initialised model whose weights depend only on <paramref name="seed"/> (see <see cref="WanTransformerBase.InitRandom"/>).</summary>
    public static CausalWanTransformer3DModel CreateRandom(WanTransformerConfig config, CausalAttentionConfig attention, ulong seed) =>
        InitRandom(new CausalWanTransformer3DModel(config, attention), seed);
}

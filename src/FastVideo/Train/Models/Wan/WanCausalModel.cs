using System.ComponentModel;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Models.Vae;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models.Wan;

/// <summary>
/// <c>roles.&lt;role&gt;</c> of the <c>wan_causal</c> family: the wan options and the causal attention settings. A
/// setting left null comes from <c>pipeline.dit_config</c>, else the default.
/// </summary>
public sealed record WanCausalRoleConfig : RoleConfig, ICheckedOptions
{
    [Description("frames denoised together: full attention inside a block and to the earlier blocks (1..3); null = pipeline.dit_config, else 3")]
    public int? NumFramesPerBlock { get; init; }

    [Description("frames a block sees, its own and the sinks included; -1 = every earlier frame; null = pipeline.dit_config, else -1")]
    public int? LocalAttnSize { get; init; }

    [Description("first frames every block keeps seeing (attention sinks; needs a local window); null = pipeline.dit_config, else 0")]
    public int? SinkSize { get; init; }

    [Description("frames a global-attention streaming cache holds before it grows; null = pipeline.dit_config, else 21")]
    public int? SlidingWindowNumFrames { get; init; }

    public IEnumerable<OptionProblem> Check() => CausalAttentionConfig.ValueProblems(NumFramesPerBlock, LocalAttnSize, SinkSize, SlidingWindowNumFrames);
}

/// <summary>
/// The <c>wan_causal</c> family (upstream's WanCausalModel): the wan plugin around a
/// <see cref="CausalWanTransformer3DModel"/>, which loads the same Diffusers checkpoints. <see cref="ModelBase.PredictNoise"/>
/// runs the block-causal training forward (timesteps as a scalar, [B] or one per frame [B,T]); the streaming
/// predictions run chunks through key/value caches held here, one set per cache tag, so that a method's rollouts do
/// not see each other's state. A tag's caches are rebuilt (empty) when the batch size, dtype, device, frame size or
/// window settings of a call differ from the ones they were built for.
/// </summary>
public sealed class WanCausalModel : WanModel, ICausalModel
{
    public static new ModelFamily Family { get; } = WanModel.Family with
    {
        Name = "wan_causal",
        Description = "Wan 2.1 text-to-video with block-causal attention (CausVid / Self-Forcing), loads wan checkpoints; streams with KV caches",
        RoleConfigType = typeof(WanCausalRoleConfig),
        Create = ctx => new WanCausalModel(ctx),
        ClassPaths = ["fastvideo.train.models.wan.WanCausalModel", "fastvideo.train.models.wan.wan_causal.WanCausalModel"],
        TransformerClass = CausalWanTransformer3DModel.ClassName,
        // The block-causal training forward is wan's plus its attention pattern.
        EstimateActivations = q => WanActivations.Estimate(q, Settings(q.Role)),
        // The rest is wan's: latent space, defaults, LoRA layers and random folders (the causal transformer has the
        // same parameters).
    };

    /// <summary>What a tag's caches were built for.</summary>
    private sealed record CacheKey(long FrameTokens, long Batch, ScalarType Dtype, DeviceType DeviceType, int DeviceIndex,
        CausalAttentionConfig Attention, int CapacityFrames);

    private readonly Dictionary<string, (CacheKey Key, CausalWanCache Cache)> _caches = new(StringComparer.Ordinal);
    // Caches dropped since the last backward: a checkpointed streaming call may still recompute from their snapshots.
    private readonly List<CausalWanCache> _droppedBeforeBackward = [];

    public WanCausalModel(ModelBuildContext context)
        : base(context, (config, weights, source, dtype) => CausalWanTransformer3DModel.FromWeights(config, Settings(context), weights, source, dtype))
    {
        // What an export writes: a causal folder that says so (generate tells the family by it) and carries the
        // settings it runs with, which a model made from it starts from.
        TransformerConfig["_class_name"] = CausalWanTransformer3DModel.ClassName;
        foreach (var (key, value) in SettingsKeys(Attention)) TransformerConfig[key] = value;
    }

    /// <summary>The causal settings under FastVideo's arch-config names, as a causal folder's config.json holds them.</summary>
    private static IEnumerable<(string Key, int Value)> SettingsKeys(CausalAttentionConfig a) =>
    [
        ("num_frames_per_block", a.NumFramesPerBlock), ("local_attn_size", a.LocalAttnSize), ("sink_size", a.SinkSize),
        ("sliding_window_num_frames", a.SlidingWindowNumFrames),
    ];

    /// <summary>
    /// The role's causal settings over pipeline.dit_config's over the model folder's config.json (a causal export
    /// carries them) over the defaults (text_len: pipeline, else the family's).
    /// </summary>
    internal static CausalAttentionConfig Settings(ModelBuildContext context)
    {
        var pipeline = context.Run.Pipeline;
        var dit = pipeline.DitConfig;
        var role = context.Options as WanCausalRoleConfig;   // a code-built plain RoleConfig has no settings of its own
        var folder = DiffusersModelFolder.Resolve(context.Options.InitFrom);
        var config = folder.ReadConfig();
        int? Folder(string key) => config[key] switch
        {
            null => null,
            System.Text.Json.Nodes.JsonValue v when v.TryGetValue<int>(out var i) => i,
            var other => throw new UserError($"{folder.ConfigPath}: {key} must be an integer, got {other.ToJsonString()}"),
        };
        var settings = new CausalAttentionConfig { TextLen = pipeline.TextLen ?? context.Family.Defaults.TextLen }
            .Overlay(Folder("num_frames_per_block"), Folder("local_attn_size"), Folder("sink_size"), Folder("sliding_window_num_frames"))
            .Overlay(dit.NumFramesPerBlock, dit.LocalAttnSize, dit.SinkSize, dit.SlidingWindowNumFrames)
            .Overlay(role?.NumFramesPerBlock, role?.LocalAttnSize, role?.SinkSize, role?.SlidingWindowNumFrames);
        if (settings.Problems().FirstOrDefault() is { } p)
            throw new UserError($"roles.{context.Role}.{p.Key} (else pipeline.dit_config.{p.Key}, else {folder.ConfigPath}): {p.Detail}");
        return settings;
    }

    public CausalWanTransformer3DModel CausalTransformer => (CausalWanTransformer3DModel)WanTransformer;

    /// <summary>The settings the transformer runs with.</summary>
    public CausalAttentionConfig Attention => CausalTransformer.Attention;

    /// <summary>The causal DiT takes a scalar, [B] or [B,T] timestep (checked there).</summary>
    protected override Tensor TransformerTimestep(Tensor timestep, long batch) => timestep;

    public int NumFramesPerBlock => Attention.NumFramesPerBlock;

    public long CacheFrames(string cacheTag = "pos") =>
        _caches.TryGetValue(cacheTag, out var entry) ? entry.Cache.CapacityTokens / entry.Cache.FrameTokens : 0;

    public void ClearCaches(string cacheTag = "pos")
    {
        if (!_caches.Remove(cacheTag, out var entry)) return;
        entry.Cache.Dispose();
        _droppedBeforeBackward.Add(entry.Cache);
    }

    public Tensor? PredictNoiseStreaming(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
        string cacheTag = "pos", bool storeKv = false, int curStartFrame = 0, CfgUncondPolicy? cfgUncond = null,
        AttnKind attnKind = AttnKind.Dense)
    {
        if (curStartFrame < 0) throw new ArgumentException($"wan_causal: curStartFrame must be >= 0, got {curStartFrame}");
        using var scope = NewDisposeScope();
        var text = (conditional ? batch.Conditional : UncondText(batch, cfgUncond ?? CfgUncondPolicy.Default))[Conditioning.Text].Values;
        var x = noisyLatents.permute(0, 2, 1, 3, 4);   // BTCHW -> BCTHW
        var cache = CacheFor(cacheTag, x);
        if (storeKv)
        {
            // Only the cache writes matter: the chunk's keys and values (clean context) for the blocks after it.
            using (no_grad()) CausalTransformer.ForwardStreaming(x, timestep.to(Device), text, cache, curStartFrame);
            return null;
        }
        var v = CausalTransformer.ForwardStreaming(x, timestep.to(Device), text, cache, curStartFrame);
        return v.permute(0, 2, 1, 3, 4).MoveToOuterDisposeScope();   // BCTHW -> BTCHW
    }

    public Tensor PredictNoiseTeacherForcing(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, Tensor cleanLatents,
        bool conditional, Tensor? cleanTimestep = null, CfgUncondPolicy? cfgUncond = null, AttnKind attnKind = AttnKind.Dense)
    {
        using var scope = NewDisposeScope();
        var text = (conditional ? batch.Conditional : UncondText(batch, cfgUncond ?? CfgUncondPolicy.Default))[Conditioning.Text].Values;
        var v = CausalTransformer.ForwardTeacherForcing(noisyLatents.permute(0, 2, 1, 3, 4), timestep.to(Device), text,   // BTCHW -> BCTHW
            cleanLatents.permute(0, 2, 1, 3, 4), cleanTimestep?.to(Device));
        return v.permute(0, 2, 1, 3, 4).MoveToOuterDisposeScope();   // BCTHW -> BTCHW
    }

    /// <summary>The caches of <paramref name="tag"/> for latents like <paramref name="x"/> [B,C,T,H,W], rebuilt when they were built for others.</summary>
    private CausalWanCache CacheFor(string tag, Tensor x)
    {
        var p = CausalTransformer.Config.PatchSize;
        var key = new CacheKey(x.shape[3] / p[1] * (x.shape[4] / p[2]), x.shape[0], x.dtype, x.device_type, x.device_index, Attention, CapacityFrames());
        if (_caches.TryGetValue(tag, out var entry))
        {
            if (entry.Key == key) return entry.Cache;
            ClearCaches(tag);
        }
        var cache = CausalTransformer.NewCache(x.shape[3], x.shape[4], key.CapacityFrames);
        _caches[tag] = (key, cache);
        return cache;
    }

    /// <summary>
    /// Frames each block's cache allocates: upstream's window (local_attn_size, or sliding_window_num_frames for global
    /// attention); with activation checkpointing on a trainable role at least the clip's latent frames
    /// (training.data.num_latent_t), so that the cache does not roll before a checkpointed call is recomputed in backward.
    /// </summary>
    private int CapacityFrames()
    {
        int window = Attention.LocalAttnSize == -1 ? Attention.SlidingWindowNumFrames : Attention.LocalAttnSize;
        return CausalTransformer.GradientCheckpointing is null ? window : Math.Max(window, Context.Training.Data.NumLatentT);
    }

    /// <summary>Backward, then frees the cache snapshots that checkpointed streaming calls kept for it.</summary>
    public override void Backward(Tensor loss, object? context, int gradAccumRounds)
    {
        base.Backward(loss, context, gradAccumRounds);
        foreach (var (_, cache) in _caches.Values) cache.ReleaseSnapshots();
        foreach (var cache in _droppedBeforeBackward) cache.ReleaseSnapshots();
        _droppedBeforeBackward.Clear();
    }

    public override void Dispose()
    {
        foreach (var tag in _caches.Keys.ToList()) ClearCaches(tag);
        foreach (var cache in _droppedBeforeBackward) cache.ReleaseSnapshots();
        _droppedBeforeBackward.Clear();
        base.Dispose();
    }
}

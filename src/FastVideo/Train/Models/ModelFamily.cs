using System.Reflection;
using FastVideo.Configs;
using FastVideo.Models.Vae;
using static TorchSharp.torch;

namespace FastVideo.Train.Models;

/// <summary>Pipeline defaults of a family, overridable by the recipe's <c>pipeline:</c> section.</summary>
public sealed record FamilyDefaults(double FlowShift, int TextLen, VaeConfig Vae);

/// <summary>
/// What a family's activation estimate reads: the role (its options and the run's), its transformer's config.json,
/// the data shape of one micro-batch, the master and compute dtypes and the role's activation checkpointing type
/// (full, ops, block_skip; null = none).
/// </summary>
public sealed record ActivationQuery(ModelBuildContext Role, System.Text.Json.Nodes.JsonObject TransformerConfig, DataShape Shape,
    ScalarType MasterDtype, ScalarType ComputeDtype, string? Checkpointing)
{
    /// <summary>The role trains its own weights (trainable and not LoRA): their inputs are kept for the weight gradients.</summary>
    public bool TrainsBase => Role.Options.Trainable && !Role.Options.Lora.Enable;

    /// <summary>The role's LoRA options when it trains adapters, else null.</summary>
    public LoraOptions? Lora => Role.Options.Trainable && Role.Options.Lora.Enable ? Role.Options.Lora : null;
}

/// <summary>
/// A family's estimate of the activation memory of one role for one micro-batch, in bytes: <see cref="Kept"/> is what
/// the forward keeps for backward; <see cref="Peak"/> adds what backward holds at its worst (a checkpointed block
/// recomputed, the gradients flowing through a block); for a frozen role, one block's working set of a forward
/// without grad. <see cref="Retained"/>: freed memory the allocator keeps on top (<see cref="AllocatorRetention"/>).
/// <see cref="Note"/> says in a few words how it was counted (the attention kernel, the policy).
/// </summary>
public sealed record ActivationEstimate(long Kept, long Peak, long Retained, string Note);

/// <summary>
/// Freed memory glibc's allocator keeps on top of the live tensors (RSS minus live memory), fitted to the runs of
/// bench/MemoryPlanBench (bench/results/memory-plan-2026-12-04.md): the mid-size Wan in fp32 and bf16 with and without
/// full checkpointing and the 1.3B-config LoRA run each kept 0.39-0.47 of the memory below. A step frees its
/// activations while the gradients and the next tensors are allocated between them, and the freed holes are rarely
/// the right size again: without checkpointing about 0.4 of the kept activations stays in the heap; with
/// checkpointing each block run with grad in backward (and each checkpointed block's forward, whose output stays
/// pinned) leaves about 0.45 of one block's working set behind, growing over the first step and then stable. Only
/// tensors below <see cref="MmapThreshold"/> count: bigger ones are mapped and unmapped on their own.
/// </summary>
public static class AllocatorRetention
{
    /// <summary>glibc's mmap threshold at its highest (64-bit): bigger tensors are mapped on their own and returned
    /// when freed, so only smaller ones count towards what the heap keeps.</summary>
    public const long MmapThreshold = 32L << 20;

    /// <summary>Fraction of one block's working set (heap-sized tensors) kept per checkpointed block.</summary>
    public const double PerCheckpointedBlock = 0.45;

    /// <summary>Fraction of the kept activations (heap-sized tensors) kept after a backward without checkpointing.</summary>
    public const double WithoutCheckpointing = 0.4;

    public static long Checkpointed(long blocks, long blockWorkingSet) => (long)(PerCheckpointedBlock * blocks * blockWorkingSet);

    public static long Plain(long keptActivations) => (long)(WithoutCheckpointing * keptActivations);
}

/// <summary>
/// A model family: its name, the record its role options bind into, the latent space it works in (roles of one
/// method must share it), its pipeline defaults and how to build a model. <see cref="EstimateActivations"/> gives
/// the dry-run plan the activation memory of a role for one micro-batch (null: the family has no estimate).
/// </summary>
public sealed record ModelFamily(
    string Name,
    string Description,
    Type RoleConfigType,
    string LatentSpace,
    FamilyDefaults Defaults,
    Func<ModelBuildContext, ModelBase> Create)
{
    public Func<ActivationQuery, ActivationEstimate>? EstimateActivations { get; init; }

    /// <summary>
    /// The conditioning channels the family's transformer reads (<see cref="FastVideo.Data.Conditioning"/> names):
    /// text (tokens + mask) by default, plus pooled_text for HunyuanVideo. <c>generate</c> asks the prompt file for them.
    /// </summary>
    public IReadOnlyList<string> Conditioning { get; init; } = [FastVideo.Data.Conditioning.Text];

    /// <summary>
    /// FastVideo class paths (<c>models.&lt;role&gt;._target_</c>) that name this family, the one written back first
    /// (e.g. <c>fastvideo.train.models.wan.WanModel</c>). A family made from another with <c>with</c> must declare its
    /// own: the registry refuses a path declared twice.
    /// </summary>
    public IReadOnlyList<string> ClassPaths { get; init; } = [];

    /// <summary>
    /// The Diffusers <c>_class_name</c> of this family's transformer in a model folder's config.json (e.g.
    /// <c>WanTransformer3DModel</c>): how <c>generate</c> tells a folder's family. Null: none.
    /// </summary>
    public string? TransformerClass { get; init; }

    /// <summary>
    /// The family that streams this family's checkpoints block by block (<c>generate --causal</c>): itself for a
    /// causal family, the causal variant with the same parameters otherwise (wan: wan_causal). Null: none.
    /// </summary>
    public string? StreamingFamily { get; init; }


    /// <summary>
    /// The family's per-sample random draws (training noise, timesteps) go through
    /// <see cref="FastVideo.Distributed.DataParallelDraws"/>, so a data-parallel run draws what one process would; a
    /// run on several processes refuses a family without it.
    /// </summary>
    public bool DataParallelDraws { get; init; }

    /// <summary>
    /// Writes a transformer folder (config.json + Diffusers-named weights) of the given config with weights drawn
    /// from a seed: for tests, the demo and the quickstart's untrained teacher. Null when the family has none.
    /// </summary>
    public Action<System.Text.Json.Nodes.JsonObject, ulong, string>? WriteRandomTransformer { get; init; }

    /// <summary>
    /// Which layers (module names, the weight key without <c>.weight</c>) of the family's transformer can take a
    /// LoRA adapter: the layers <c>lora.target_modules</c> chooses from, in training and in the dry-run plan (which
    /// reads only safetensors headers). Null when the family has no LoRA.
    /// </summary>
    public Func<string, bool>? IsLoraCapable { get; init; }

    /// <summary>
    /// FastVideo's module name of one of the family's layers (null: none), when FastVideo's own DiT names them
    /// otherwise: <c>lora.target_modules</c> match a layer by either name, so FastVideo's recipes choose the same
    /// layers. Null when the names agree.
    /// </summary>
    public Func<string, string?>? UpstreamLayerName { get; init; }
}

/// <summary>
/// A model to sample with outside training: family, model folder and how to run it; <paramref name="Pipeline"/> as a
/// recipe's <c>pipeline:</c> (text_len, dit_config's causal settings; null = the family's defaults);
/// <paramref name="RoleOptions"/> the family's own role options as a recipe's <c>roles.&lt;role&gt;</c> keys (e.g.
/// <c>embedded_guidance_scale</c>), bound and checked like a recipe's.
/// </summary>
public sealed record InferenceModel(string Family, string ModelPath, string Device = "cpu", string Precision = "fp32",
    double? FlowShift = null, string? NegativePromptEmbeds = null, string Role = "generator", string ComputePrecision = "auto",
    PipelineConfig? Pipeline = null, IReadOnlyDictionary<string, object?>? RoleOptions = null);

/// <summary>Implemented by user assemblies that add families; loaded with <see cref="ModelFamilyRegistry.LoadPlugins"/>.</summary>
public interface IModelFamilyProvider
{
    IEnumerable<ModelFamily> Families();
}

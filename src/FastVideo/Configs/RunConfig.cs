namespace FastVideo.Configs;

// The typed recipe. YAML keys are the snake_case forms of these property names (LearningRate <-> learning_rate).
// Defaults are upstream's (FastVideo fastvideo/train/utils/training_config.py) except that an explicit falsy value
// (0, false, "") is kept as written instead of being replaced by the default.

/// <summary>The whole resolved recipe: what every other part of the program receives.</summary>
public sealed record RunConfig
{
    public RecipeSection Recipe { get; init; } = new();
    /// <summary>Role name -> that role's options, typed by the role's family (see <see cref="IFamilyCatalog"/>).</summary>
    public IReadOnlyDictionary<string, RoleConfig> Roles { get; init; } = new Dictionary<string, RoleConfig>();
    /// <summary>
    /// <c>method:</c>, bound into the options record that <c>recipe.method</c> declares (plain
    /// <see cref="Configs.MethodOptions"/> when the recipe names no method). Read it typed with
    /// <see cref="MethodOptions{T}"/>.
    /// </summary>
    public MethodOptions Method { get; init; } = new();
    public TrainingConfig Training { get; init; } = new();
    /// <summary>Callback name -> its options record (the type the callback declares), in recipe order (dispatch order).</summary>
    public IReadOnlyList<KeyValuePair<string, object>> Callbacks { get; init; } = [];
    public PipelineConfig Pipeline { get; init; } = new();
    /// <summary>The recipe as a plain tree after overrides, with every default filled in (saved with checkpoints).</summary>
    public IReadOnlyDictionary<string, object?> Raw { get; init; } = new Dictionary<string, object?>();
    /// <summary>The form the recipe file was written in (<c>config convert</c> writes the other one).</summary>
    public RecipeForm Form { get; init; } = RecipeForm.RecipeRoles;
    /// <summary>Warnings, differences from FastVideo and features training refuses, found when the recipe was loaded
    /// (<c>config show</c> prints them, <c>train</c> prints them and refuses a <see cref="RecipeNoteKind.NotImplemented"/> one).</summary>
    public IReadOnlyList<RecipeNote> Notes { get; init; } = [];

    /// <summary>Throws the first <see cref="RecipeNoteKind.NotImplemented"/> note as a <see cref="RecipeError"/>: a
    /// recipe asking for a feature FastVideoSharp does not have loads, but does not train.</summary>
    public void RequireImplemented()
    {
        if (Notes.FirstOrDefault(n => n.Kind == RecipeNoteKind.NotImplemented) is { } note) throw note.ToError();
    }

    /// <summary>The method's options as the record type it declares.</summary>
    /// <exception cref="InvalidOperationException">The config holds another options type (a code-built config that
    /// did not set <see cref="Method"/> for its method).</exception>
    public T MethodOptions<T>() where T : MethodOptions =>
        Method as T ?? throw new InvalidOperationException(
            $"method '{Recipe.Method}' needs {typeof(T).Name} in RunConfig.Method, but it holds {Method.GetType().Name}");

    /// <summary>The options of callback <paramref name="name"/>, or null when the recipe does not enable it.</summary>
    public T? CallbackOptions<T>(string name) where T : class =>
        Callbacks.FirstOrDefault(c => c.Key == name).Value switch
        {
            null => null,
            T options => options,
            var other => throw new InvalidOperationException(
                $"callback '{name}' needs {typeof(T).Name} in RunConfig.Callbacks, but it holds {other.GetType().Name}"),
        };
}

public sealed record RecipeSection
{
    /// <summary>Default model family for every role that does not name its own.</summary>
    public string? Family { get; init; }
    /// <summary>Training method name (finetune, dmd2, ...).</summary>
    public string? Method { get; init; }
}

/// <summary>
/// Options common to every family. A family may extend this record with its own options; the recipe binder binds
/// <c>roles.&lt;role&gt;</c> into the family's record type, so unknown keys are caught per family.
/// </summary>
public record RoleConfig
{
    /// <summary>Falls back to <c>recipe.family</c> when absent.</summary>
    public string? Family { get; init; }
    /// <summary>Required: a Diffusers pipeline folder, a transformer folder, or a Hugging Face model id in the local cache.</summary>
    [System.ComponentModel.Description("a Diffusers pipeline folder, a transformer folder, or a Hugging Face model id in the local cache")]
    public required string InitFrom { get; init; }
    public bool Trainable { get; init; } = true;
    /// <summary>Shift of this role's own noise scheduler; null = the family default (Wan 3.0, Hunyuan 7.0).</summary>
    public double? FlowShift { get; init; }
    /// <summary>If true, <see cref="TransformerOverrideSafetensor"/> is ignored.</summary>
    public bool DisableCustomInitWeights { get; init; }
    /// <summary>"full" / "ops" / "block_skip"; null = <c>training.model.enable_gradient_checkpointing_type</c>.</summary>
    public string? EnableGradientCheckpointingType { get; init; }
    /// <summary>FastVideo's role-local attention backend (<c>TORCH_SDPA</c>, <c>FLASH_ATTN</c>, ...); null = the default.
    /// Exact backends are what every role computes here; the others are refused by training.</summary>
    [System.ComponentModel.Description("FastVideo's attention backend for this role: null, TORCH_SDPA or FLASH_ATTN (exact attention, what runs here); other backends (ATTN_QAT_TRAIN, VIDEO_SPARSE_ATTN, SLA_ATTN, ...) load but do not train")]
    public string? AttentionBackend { get; init; }
    /// <summary>A .safetensors file (or folder of them) loaded instead of the model folder's transformer weights.</summary>
    public string? TransformerOverrideSafetensor { get; init; }
    /// <summary>Precomputed negative-prompt embeddings (safetensors with <c>negative_prompt_embeds</c> [1,L,D]);
    /// null = look for <c>negative_prompt_embeds.safetensors</c> in the model folder.</summary>
    public string? NegativePromptEmbeds { get; init; }
    /// <summary>LoRA training of this role (upstream's <c>lora: {enable, rank, alpha, target_modules}</c>).</summary>
    public LoraOptions Lora { get; init; } = new();
}

public sealed record TrainingConfig
{
    public DistributedConfig Distributed { get; init; } = new();
    public DataConfig Data { get; init; } = new();
    public OptimizerConfig Optimizer { get; init; } = new();
    public LoopConfig Loop { get; init; } = new();
    public CheckpointConfig Checkpoint { get; init; } = new();
    public TrackerConfig Tracker { get; init; } = new();
    public ModelTrainingConfig Model { get; init; } = new();
    public VsaConfig Vsa { get; init; } = new();
    /// <summary>Master-weight dtype of loaded transformers: fp32, bf16 or fp16.</summary>
    public string DitPrecision { get; init; } = "fp32";
    /// <summary>
    /// The dtype the transformers compute in (weights are cast per use; gradients reach the dit_precision masters):
    /// auto = bf16 where the device computes it natively (a CPU with AVX-512 BF16 or AMX, any CUDA device), else the
    /// master dtype; or fp32, bf16, fp16. FastVideo computes under bf16 autocast / FSDP bf16 mixed precision.
    /// </summary>
    public string ComputePrecision { get; init; } = "auto";
    /// <summary>Base model folder; null = the student's init_from.</summary>
    public string? ModelPath { get; init; }
    /// <summary>Torch device for every role: "cpu", "cuda", "cuda:1", ...</summary>
    public string Device { get; init; } = "cpu";
}

/// <summary>
/// <c>training.distributed</c>. Upstream's layout keys map onto what runs here: data parallel over the processes of
/// MPICH's <c>mpiexec -n N</c> (the launcher sets the number, as torchrun does upstream), every process holding a
/// full replica of the weights. Tensor and sequence parallelism are refused (not implemented).
/// </summary>
public sealed record DistributedConfig : ICheckedOptions
{
    /// <summary>The processes the recipe was written for; upstream's default for sp_size and hsdp_shard_dim.</summary>
    public int NumGpus { get; init; } = 1;
    public int TpSize { get; init; } = 1;
    /// <summary>null = num_gpus.</summary>
    public int? SpSize { get; init; }
    public int HsdpReplicateDim { get; init; } = 1;
    /// <summary>null (or -1) = num_gpus / hsdp_replicate_dim.</summary>
    public int? HsdpShardDim { get; init; }
    public bool PinCpuMemory { get; init; }
    /// <summary>Every this many steps (and at the start) the processes of a multi-process run compare a checksum of
    /// their weights and generator states; a mismatch stops the run. 0 = at the start only.</summary>
    [System.ComponentModel.Description("multi-process runs: compare a checksum of every process's weights every this many steps (and at the start); 0 = at the start only")]
    public int WeightCheckSteps { get; init; } = 100;

    public int ResolvedSpSize => SpSize ?? NumGpus;
    public int ResolvedHsdpShardDim => HsdpShardDim is null or -1 ? NumGpus / Math.Max(1, HsdpReplicateDim) : HsdpShardDim.Value;

    /// <summary>Values no layout could mean.</summary>
    public IEnumerable<OptionProblem> Check()
    {
        if (NumGpus < 1) yield return new("num_gpus", $"must be >= 1, got {NumGpus}");
        if (HsdpReplicateDim < 1) yield return new("hsdp_replicate_dim", $"must be >= 1, got {HsdpReplicateDim}");
        if (WeightCheckSteps < 0) yield return new("weight_check_steps", $"must be >= 0 (0 = at the start only), got {WeightCheckSteps}");
    }

    /// <summary>What the layout asks for that does not exist here (the recipe loads; training refuses it).</summary>
    public IEnumerable<OptionProblem> Unsupported()
    {
        const string dp = "FastVideoSharp runs data parallel over the processes of mpiexec (each holds a full replica)";
        if (TpSize != 1) yield return new("tp_size", $"tensor parallelism (tp_size {TpSize}) is not implemented: {dp}; set tp_size: 1");
        if (ResolvedSpSize != 1)
            yield return new("sp_size", (SpSize is null ? $"is not set, so it defaults to num_gpus ({NumGpus}) as upstream: " : $"{SpSize}: ") +
                $"sequence parallelism is not implemented: {dp}; set sp_size: 1");
        if (HsdpReplicateDim >= 1 && HsdpReplicateDim * ResolvedHsdpShardDim != NumGpus)
            yield return new(HsdpShardDim is null ? "hsdp_replicate_dim" : "hsdp_shard_dim",
                $"hsdp_replicate_dim x hsdp_shard_dim = {HsdpReplicateDim} x {ResolvedHsdpShardDim} must equal num_gpus ({NumGpus}), as upstream's device mesh needs");
    }
}

/// <summary>One dataset folder and how many times it is repeated per epoch.</summary>
public sealed record DataSource(string Path, int Weight);

public sealed record DataConfig
{
    /// <summary>A folder (plain string in YAML), a list of folders, or a map folder -> repeat weight.</summary>
    public IReadOnlyList<DataSource> DataPath { get; init; } = [];
    /// <summary>The rows' layout: t2v (latents + text), which is what the loader reads; FastVideo's t2va (with audio)
    /// and text_only (prompts only) load but do not train.</summary>
    public string PreprocessedDataType { get; init; } = "t2v";
    public int TrainBatchSize { get; init; } = 1;
    public int DataloaderNumWorkers { get; init; }
    public double TrainingCfgRate { get; init; }
    public int Seed { get; init; }
    public int NumHeight { get; init; }
    public int NumWidth { get; init; }
    public int NumLatentT { get; init; }
    public int NumFrames { get; init; }
    public bool DropLast { get; init; } = true;
    /// <summary>Batches prepared ahead on a background thread (0 = none).</summary>
    public int PrefetchBatches { get; init; } = 2;
}

public sealed record OptimizerConfig
{
    public double LearningRate { get; init; }
    public IReadOnlyList<double> Betas { get; init; } = [0.9, 0.999];
    public double WeightDecay { get; init; }
    public double Eps { get; init; } = 1e-8;
    public string LrScheduler { get; init; } = "constant";
    public int LrWarmupSteps { get; init; }
    public int LrNumCycles { get; init; }
    public double LrPower { get; init; }
    public double MinLrRatio { get; init; } = 0.5;
}

public sealed record LoopConfig
{
    public int MaxTrainSteps { get; init; }
    public int GradientAccumulationSteps { get; init; } = 1;
}

public sealed record CheckpointConfig
{
    public string OutputDir { get; init; } = "";
    public string ResumeFromCheckpoint { get; init; } = "";
    public int TrainingStateCheckpointingSteps { get; init; }
    public int CheckpointsTotalLimit { get; init; }
}

public sealed record TrackerConfig
{
    public IReadOnlyList<string> Trackers { get; init; } = [];
    /// <summary>The wandb entity (FastVideo's key; kept in the recipe, no tracker here reads it).</summary>
    public string Entity { get; init; } = "";
    public string ProjectName { get; init; } = "fastvideo";
    public string RunName { get; init; } = "";
}

public sealed record VsaConfig
{
    public double Sparsity { get; init; }
    /// <summary>Reuse VSA's padded tile buffer across layers; only meaningful with sparsity > 0 (which does not train here).</summary>
    public bool CacheTileBuf { get; init; }
}

public sealed record ModelTrainingConfig
{
    /// <summary>Timestep density: uniform, logit_normal or mode.</summary>
    public string WeightingScheme { get; init; } = "uniform";
    public double LogitMean { get; init; }
    public double LogitStd { get; init; } = 1.0;
    public double ModeScale { get; init; } = 1.0;
    public bool PreconditionOutputs { get; init; }
    public IReadOnlyDictionary<string, object?> MobaConfig { get; init; } = new Dictionary<string, object?>();
    public string? EnableGradientCheckpointingType { get; init; }
}

/// <summary>Overrides of the family's pipeline defaults. Null = the family default.</summary>
public sealed record PipelineConfig
{
    /// <summary>Shift used by the student's timestep shifting (DMD/critic) and the SF/KD schedulers.</summary>
    public double? FlowShift { get; init; }
    /// <summary>FastVideo's embedded_cfg_scale: the guidance a guidance-embedding transformer (HunyuanVideo's) is given,
    /// times 1000, in training and sampling, for hunyuan roles without their own embedded_guidance_scale; families
    /// whose transformer embeds no guidance ignore it, as FastVideo's pipelines do. Null = 6.0.</summary>
    public double? EmbeddedCfgScale { get; init; }
    /// <summary>Text tokens per prompt after padding/cropping (Wan 512, Hunyuan 256).</summary>
    public int? TextLen { get; init; }
    /// <summary>Path to the VAE config.json whose normalisation constants apply; null = the model folder's vae/.</summary>
    public string? VaeConfig { get; init; }
    /// <summary>Train-time overrides of the transformer's arch config (upstream's <c>pipeline.dit_config</c>).</summary>
    public DitConfigOverrides DitConfig { get; init; } = new();
}

/// <summary>
/// <c>pipeline.dit_config</c>: upstream's train-time overrides of the transformer's arch config, here the causal
/// attention settings; a causal role's own keys win over them, and families without them ignore them. Null = the
/// family default.
/// </summary>
public sealed record DitConfigOverrides : ICheckedOptions
{
    /// <summary>Frames a causal block denoises together (1..3).</summary>
    public int? NumFramesPerBlock { get; init; }
    /// <summary>Frames a causal block sees, its own and the sinks included; -1 = all earlier frames.</summary>
    public int? LocalAttnSize { get; init; }
    /// <summary>First frames every causal block keeps seeing (attention sinks; needs a local window).</summary>
    public int? SinkSize { get; init; }
    /// <summary>Frames a global-attention streaming cache holds before it grows.</summary>
    public int? SlidingWindowNumFrames { get; init; }
    /// <summary>FastVideo's quantization method for the transformer's linears (nvfp4_qat_train, fp8_qat_train, ...):
    /// known names load, training refuses them (not implemented); null = none.</summary>
    public string? QuantConfig { get; init; }

    public IEnumerable<OptionProblem> Check() =>
        Models.Dits.CausalAttentionConfig.ValueProblems(NumFramesPerBlock, LocalAttnSize, SinkSize, SlidingWindowNumFrames);
}

/// <summary>What the recipe binder needs to know of the model families (implemented by the family registry).</summary>
public interface IFamilyCatalog : IClassPathCatalog
{
    IReadOnlyCollection<string> FamilyNames { get; }
    /// <summary>The record type (a <see cref="RoleConfig"/> subclass or RoleConfig itself) that binds roles of this family.</summary>
    Type RoleConfigType(string family);
}

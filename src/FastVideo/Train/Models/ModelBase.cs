using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Schedulers;
using FastVideo.Models.Vae;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models;

/// <summary>Where <see cref="ModelBase.PrepareBatch"/> takes the clean latents from.</summary>
public enum LatentsSource
{
    /// <summary>The loader's VAE latents.</summary>
    Data,
    /// <summary>Zeros of the configured latent shape: methods that generate their own samples need only the shape.</summary>
    Zeros,
}

/// <summary>Which attention metadata is active. Sparse (VSA) attention does not exist yet: "vsa" runs dense.</summary>
public enum AttnKind { Dense, Vsa }

/// <summary>Everything a family needs to build one role's model.</summary>
public sealed record ModelBuildContext(string Role, RoleConfig Options, RunConfig Run, ModelFamily Family)
{
    public TrainingConfig Training => Run.Training;
    public Device Device => torch.device(Run.Training.Device);
}

/// <summary>
/// One role's model (student, teacher, critic, ...). Owns its transformer and noise scheduler and offers the
/// primitives every training method uses. Between methods and plugins, video tensors are BTCHW ([B,T,C,H,W]);
/// transformers see BCTHW, and the permute happens here, at the plugin boundary.
/// </summary>
public abstract class ModelBase : IDisposable
{
    protected ModelBase(ModelBuildContext context)
    {
        Context = context;
        Role = context.Role;
        Trainable = context.Options.Trainable;
        Device = context.Device;
    }

    public ModelBuildContext Context { get; }
    public string Role { get; }
    /// <summary>The role trains (roles.&lt;role&gt;.trainable); with LoRA only its adapters do.</summary>
    public bool Trainable { get; }

    /// <summary>The role's LoRA options when <c>lora.enable</c> is true, else null.</summary>
    public LoraOptions? Lora => Context.Options.Lora.Enable ? Context.Options.Lora : null;

    /// <summary>The layers that carry a trainable LoRA adapter (empty for a role without LoRA).</summary>
    public IReadOnlyList<string> LoraLayers { get; private set; } = [];

    /// <summary>Only LoRA adapters train: checkpoints hold them alone, export merges them or writes them for Diffusers.</summary>
    public bool IsLora => LoraLayers.Count > 0;

    /// <summary>
    /// Upstream's <c>_enable_lora_if_configured</c>: with <c>lora.enable</c>, freezes <paramref name="transformer"/>
    /// (its weights loaded) and adds the adapters to the chosen <see cref="FastVideo.Models.Layers.LoraLinear"/> layers, A drawn
    /// from a generator seeded with (training.data.seed, role) so that it depends on neither the global RNG nor
    /// the order roles are built in. A family calls it at the end of building its transformer; a family that does
    /// not is refused LoRA by the registry.
    /// </summary>
    protected void EnableLoraIfConfigured(nn.Module transformer)
    {
        if (Lora is not { } options) return;
        if (!Trainable) throw new UserError($"roles.{Role}.lora.enable: LoRA training requires trainable: true for the role");
        using var generator = new Generator(LoraSeed(Context.Training.Data.Seed, Role), torch.device("cpu"));
        LoraLayers = FastVideo.Models.Layers.LoraAdapters.Enable(transformer, options, generator, $"roles.{Role}.lora", Context.Family.IsLoraCapable,
            Context.Family.UpstreamLayerName);
        transformer.train();
    }

    /// <summary>The seed of a role's adapter initialisation: data.seed mixed with the role name (FNV-1a), stable across runs.</summary>
    public static ulong LoraSeed(long dataSeed, string role)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in role) { h ^= c; h *= 1099511628211UL; }
        return unchecked((ulong)dataSeed * 0x9E3779B97F4A7C15UL) ^ h;
    }
    public Device Device { get; }
    public abstract nn.Module Transformer { get; }
    public abstract INoiseScheduler NoiseScheduler { get; }

    /// <summary>The dtype the transformer computes in (its parameters' dtype unless the family casts per use).</summary>
    public virtual ScalarType ComputeDtype => Transformer.parameters().First().dtype;
    public int NumTrainTimesteps => NoiseScheduler.NumTrainTimesteps;

    /// <summary>
    /// The role's latent space: latent channels, compression ratios and the normalisation between stored VAE latents
    /// and what the transformer sees (roles of one method share it).
    /// </summary>
    public abstract VaeConfig Vae { get; }

    /// <summary>
    /// A role's VAE constants: the recipe's <c>pipeline.vae_config</c>, else the model folder's vae/config.json, else
    /// <paramref name="familyDefault"/> (also what the dry-run plan reads).
    /// </summary>
    public static VaeConfig ResolveVae(RunConfig run, DiffusersModelFolder folder, VaeConfig familyDefault)
    {
        var explicitPath = run.Pipeline.VaeConfig;
        if (!string.IsNullOrEmpty(explicitPath))
        {
            var p = Directory.Exists(explicitPath) ? Path.Combine(explicitPath, "config.json") : explicitPath;
            if (!File.Exists(p)) throw new UserError($"pipeline.vae_config: '{explicitPath}' does not exist");
            return VaeConfig.Load(p);
        }
        return VaeConfig.FromModelFolder(folder, familyDefault);
    }

    /// <summary>Whether <see cref="DecodeLatents"/> can turn this role's latents into pixels here.</summary>
    public virtual bool CanDecodeLatents => Vae.IsIdentity;

    /// <summary>
    /// Upstream's <c>decode_latents</c>: DiT-space latents [B,T,C,H,W] to pixels [B,C,T,H,W] in about [-1, 1]. The
    /// synthetic dataset's identity VAE only needs denormalising; a real VAE decoder plugs in here when it exists.
    /// </summary>
    public virtual Tensor DecodeLatents(Tensor latents)
    {
        if (!CanDecodeLatents)
            throw new UserError($"role '{Role}': decoding {Context.Family.Name} latents needs a VAE decoder, which FastVideoSharp does not have yet " +
                                $"(the VAE config is {Vae.ClassName ?? Vae.SourcePath ?? "the family default"}); only latents can be written");
        using var scope = NewDisposeScope();
        return Vae.Denormalize(latents.permute(0, 2, 1, 3, 4)).contiguous().MoveToOuterDisposeScope();   // BTCHW -> BCTHW
    }

    /// <summary>
    /// The activation memory of this role for one micro-batch of <paramref name="shape"/>, for the dry-run plan: the
    /// family's estimate for its transformer config, dtypes and checkpointing; null when the family has none.
    /// </summary>
    public ActivationEstimate? Activations(DataShape shape) =>
        Context.Family.EstimateActivations?.Invoke(new ActivationQuery(Context, TransformerConfig, shape,
            Precision.Parse(Context.Training.DitPrecision), ComputeDtype, CheckpointingType));

    /// <summary>
    /// The activation checkpointing asked of this role, as upstream resolves it: the role's
    /// <c>enable_gradient_checkpointing_type</c>, else <c>training.model</c>'s, and only for a trainable role
    /// (full, ops, block_skip; null = none). The family applies it its own way and reports it in <see cref="AppliedCheckpointing"/>.
    /// </summary>
    public string? CheckpointingType => RequestedCheckpointing(Context.Options, Context.Training);

    public static string? RequestedCheckpointing(RoleConfig role, TrainingConfig training) =>
        role.Trainable ? role.EnableGradientCheckpointingType ?? training.Model.EnableGradientCheckpointingType : null;

    /// <summary>The checkpointing policy the family applied to the transformer (null: none); a family that cannot apply
    /// <see cref="CheckpointingType"/> leaves it null and the role is refused.</summary>
    public virtual string? AppliedCheckpointing => null;

    /// <summary>
    /// Writes this role's transformer as a Diffusers transformer folder: its config.json as loaded and its weights
    /// under their Diffusers names (safetensors), so the folder loads back into the same family.
    /// </summary>
    public void SavePretrained(string transformerDir)
    {
        Directory.CreateDirectory(transformerDir);
        IO.Durable.WriteAllText(Path.Combine(transformerDir, "config.json"),
            TransformerConfig.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        var path = Path.Combine(transformerDir, "diffusion_pytorch_model.safetensors");
        if (!IsLora) { StateDict.SaveModule(Transformer, path); return; }
        // A LoRA role is written merged (W + (alpha/rank)·B A, float32), under the base model's keys.
        using var scope = NewDisposeScope();
        SafeTensors.Save(path, FastVideo.Models.Layers.LoraAdapters.MergedState(Transformer));
    }

    /// <summary>
    /// A role's frozen base weights as its options name them: <c>transformer_override_safetensor</c> (unless
    /// <c>disable_custom_init_weights</c>), else the model folder's weights. Returns the tensors and where they came from.
    /// </summary>
    public static (Dictionary<string, Tensor> Weights, string Source) ResolveBaseWeights(RoleConfig options, DiffusersModelFolder folder)
    {
        var (weights, source) = ResolveBaseWeightSet(options, folder);
        return (weights.Load(), source);
    }

    /// <summary>
    /// Like <see cref="ResolveBaseWeights"/>, located from the headers only (nothing read yet), for streaming into a
    /// model (<see cref="StateDict.Materialize"/>, <see cref="StateDict.LoadInto(nn.Module, WeightSet, string)"/>).
    /// </summary>
    public static (WeightSet Weights, string Source) ResolveBaseWeightSet(RoleConfig options, DiffusersModelFolder folder)
    {
        var over = options.TransformerOverrideSafetensor;
        if (!string.IsNullOrEmpty(over) && !options.DisableCustomInitWeights)
        {
            // Upstream silently ignores a missing override path; a typo there would train the wrong weights.
            if (!File.Exists(over) && !Directory.Exists(over))
                throw new UserError($"transformer_override_safetensor '{over}' does not exist");
            return (WeightSet.FromFileOrFolder(over), over);
        }
        return (WeightSet.FromModelFolder(folder), string.Join(", ", folder.WeightFiles));
    }

    /// <summary>The transformer's config.json as loaded, with what the family marks as its own (wan_causal: its class name and
    /// settings): what the family's estimates read and <see cref="SavePretrained"/> writes.</summary>
    public abstract System.Text.Json.Nodes.JsonObject TransformerConfig { get; }

    /// <summary>
    /// Conditioning for sampling: <paramref name="conditioning"/> on this model's device and dtype with the model's
    /// negative side, as <see cref="PrepareBatch"/> builds it for training. The batch's latents are zeros of
    /// <paramref name="latentShape"/> ([C,T,H,W] per sample) and serve only as the sampling dtype and shape.
    /// </summary>
    public TrainingBatch PrepareInference(Conditioning conditioning, long[] latentShape)
    {
        using var raw = new RawBatch
        {
            VaeLatent = zeros([conditioning.BatchSize, .. latentShape]),
            Conditioning = conditioning.Map(t => t.alias()),
        };
        using var throwaway = new Generator(0, Device);   // PrepareBatch's noise and timestep draws are not used
        return PrepareBatch(raw, throwaway, LatentsSource.Data);
    }

    /// <summary>
    /// The sigmas (descending, before the flow shift) the family's Diffusers pipeline samples <paramref name="steps"/>
    /// Euler steps with; null = the scheduler's own spacing (set_timesteps, as Wan's pipeline).
    /// </summary>
    public virtual IReadOnlyList<double>? SamplingSigmas(int steps) => null;

    /// <summary>Student only, called by the method's constructor: VAE constants, timestep mechanics.</summary>
    public virtual void InitPreprocessors() { }

    /// <summary>Called once before the training loop (student only), e.g. to load negative conditioning.</summary>
    public virtual void OnTrainStart() { }

    /// <summary>Applies the model's timestep shifting and clamping (identity by default).</summary>
    public virtual Tensor ShiftAndClampTimestep(Tensor timestep) => timestep.alias();

    /// <summary>Turns a loader batch into forward primitives, drawing noise and timesteps from <paramref name="generator"/>.</summary>
    public abstract TrainingBatch PrepareBatch(RawBatch raw, Generator generator, LatentsSource latentsSource = LatentsSource.Data);

    /// <summary>Forward process on BTCHW latents at timestep <paramref name="timestep"/> ([1], [B], [B·T] or [B,T]).</summary>
    public abstract Tensor AddNoise(Tensor cleanLatents, Tensor noise, Tensor timestep);

    /// <summary>Predicts v = eps - x0 for BTCHW noisy latents.</summary>
    public abstract Tensor PredictNoise(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
        CfgUncondPolicy? cfgUncond = null, AttnKind attnKind = AttnKind.Dense);

    /// <summary>Predicts x0 = x_t - sigma(t) v, with sigma from this model's scheduler grid (nearest lookup).</summary>
    public Tensor PredictX0(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
        CfgUncondPolicy? cfgUncond = null, AttnKind attnKind = AttnKind.Dense)
    {
        using var scope = NewDisposeScope();
        var v = PredictNoise(noisyLatents, timestep, batch, conditional, cfgUncond, attnKind);
        var x0 = NoiseToX0(v, noisyLatents, timestep, NoiseScheduler);
        return x0.MoveToOuterDisposeScope();
    }

    /// <summary>BTCHW v -> x0 using <paramref name="scheduler"/>'s grid; timesteps [1], [B], [B·T] or [B,T].</summary>
    public static Tensor NoiseToX0(Tensor v, Tensor noisyLatents, Tensor timestep, INoiseScheduler scheduler)
    {
        using var scope = NewDisposeScope();
        long b = v.shape[0], t = v.shape[1];
        var flatT = PerFrameTimesteps(timestep, b, t);
        var x0 = FlowMatch.PredNoiseToPredVideo(v.flatten(0, 1), noisyLatents.flatten(0, 1), flatT, scheduler);
        return x0.unflatten(0, [b, t]).MoveToOuterDisposeScope();
    }

    /// <summary>BTCHW forward process with <paramref name="scheduler"/>'s grid; timesteps [1], [B], [B·T] or [B,T].</summary>
    public static Tensor AddNoise(Tensor cleanLatents, Tensor noise, Tensor timestep, INoiseScheduler scheduler)
    {
        using var scope = NewDisposeScope();
        long b = cleanLatents.shape[0], t = cleanLatents.shape[1];
        var flatT = PerFrameTimesteps(timestep, b, t);
        var noisy = scheduler.AddNoise(cleanLatents.flatten(0, 1), noise.flatten(0, 1), flatT);
        return noisy.unflatten(0, [b, t]).MoveToOuterDisposeScope();
    }

    /// <summary>Flattens a timestep to 1 or B·T values; a [B] timestep is repeated for each of the T frames.</summary>
    public static Tensor PerFrameTimesteps(Tensor timestep, long batch, long frames)
    {
        long n = timestep.numel();
        if (n == 1 || n == batch * frames) return timestep.reshape(-1);
        if (n == batch) return timestep.reshape(-1).repeat_interleave(frames);
        throw new ArgumentException($"timestep has {n} values; expected 1, B={batch} or B*T={batch * frames}");
    }

    /// <summary>(loss / max(1, rounds)).backward(), inside whatever context the family needs to recompute activations.</summary>
    public abstract void Backward(Tensor loss, object? context, int gradAccumRounds);

    public IEnumerable<TorchSharp.Modules.Parameter> TrainableParameters() => Transformer.parameters().Where(p => p.requires_grad);

    public virtual void Dispose() => Transformer.Dispose();
}

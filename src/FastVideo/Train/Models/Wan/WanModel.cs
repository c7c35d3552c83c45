using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using FastVideo.Models.Schedulers;
using FastVideo.Models.Vae;
using FastVideo.Train.Utils;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models.Wan;

/// <summary>
/// The <c>wan</c> family: Wan 2.1 text-to-video from a Diffusers folder. One instance per role; owns its
/// <see cref="WanTransformer3DModel"/> and a <see cref="FlowMatchEulerDiscreteScheduler"/> with the role's shift.
/// </summary>
public partial class WanModel : ModelBase
{
    public static ModelFamily Family { get; } = new(
        Name: "wan",
        Description: "Wan 2.1 text-to-video (Diffusers WanTransformer3DModel), bidirectional attention",
        RoleConfigType: typeof(RoleConfig),
        LatentSpace: "wan-vae",
        Defaults: new FamilyDefaults(FlowShift: 3.0, TextLen: 512, Vae: VaeConfig.WanDefault),
        Create: ctx => new WanModel(ctx))
    {
        EstimateActivations = WanActivations.Estimate,
        ClassPaths = ["fastvideo.train.models.wan.WanModel", "fastvideo.train.models.wan.wan.WanModel"],
        TransformerClass = "WanTransformer3DModel",
        StreamingFamily = "wan_causal",
        WriteRandomTransformer = (config, seed, dir) =>
        {
            using var m = WanTransformer3DModel.CreateRandom(WanTransformerConfig.FromJson(config, "random transformer config"), seed);
            m.SavePretrained(dir);
        },
        // The LoraLinear layers of WanTransformer3DModel: upstream's Wan minus its excluded "embedder" layers.
        IsLoraCapable = name => LoraCapableLayer().IsMatch(name),
    };

    [System.Text.RegularExpressions.GeneratedRegex(@"^(blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.(0\.proj|2))|proj_out)$")]
    private static partial System.Text.RegularExpressions.Regex LoraCapableLayer();

    private readonly WanTransformerBase _transformer;
    private readonly FlowMatchEulerDiscreteScheduler _scheduler;
    private Conditioning? _negative;
    private bool _negativeLoaded;

    public WanModel(ModelBuildContext context) : this(context, WanTransformer3DModel.FromWeights) { }

    /// <summary>
    /// A Wan plugin whose transformer <paramref name="load"/> builds from (config, weights, their source, master dtype):
    /// how <c>wan_causal</c> puts its causal transformer in the same plugin.
    /// </summary>
    protected WanModel(ModelBuildContext context, Func<WanTransformerConfig, WeightSet, string, ScalarType, WanTransformerBase> load) : base(context)
    {
        var options = context.Options;
        Folder = DiffusersModelFolder.Resolve(options.InitFrom);
        TransformerConfig = Folder.ReadConfig();
        var config = WanTransformerConfig.FromJson(TransformerConfig, Folder.ConfigPath);
        MasterDtype = Precision.Parse(context.Training.DitPrecision);

        // Built on the meta device and filled from the files straight in the master dtype (no random init, no fp32 detour).
        var (weights, source) = ResolveBaseWeightSet(options, Folder);
        _transformer = load(config, weights, source, MasterDtype);
        _transformer.to(Device);
        ApplyTrainable();
        // LoRA: the base (in the master dtype, bf16 if dit_precision says so) is frozen; float32 adapters train.
        EnableLoraIfConfigured(_transformer);
        // Upstream applies the role's (else training.model's) checkpointing type to a trainable role's blocks only.
        _transformer.GradientCheckpointing = CheckpointingPolicy.FromRecipe(CheckpointingType);
        // Compute dtype (bf16 over fp32 masters where the device computes bf16 natively, as FastVideo's autocast).
        var compute = Precision.ResolveCompute(context.Training.ComputePrecision, MasterDtype, context.Training.Device);
        ComputeDtype = compute;
        _transformer.ComputeDtype = compute == MasterDtype ? null : compute;

        double shift = options.FlowShift ?? context.Family.Defaults.FlowShift;
        _scheduler = new FlowMatchEulerDiscreteScheduler(shift);
        TimestepShift = shift;
        Vae = LoadVaeConfig(context, Folder);
    }

    public override string? AppliedCheckpointing => _transformer.GradientCheckpointing?.ToString();

    public DiffusersModelFolder Folder { get; }
    public WanTransformerBase WanTransformer => _transformer;
    public override nn.Module Transformer => _transformer;
    public override INoiseScheduler NoiseScheduler => _scheduler;
    public override System.Text.Json.Nodes.JsonObject TransformerConfig { get; }
    public ScalarType MasterDtype { get; }
    /// <summary>The dtype the transformer computes in (<c>training.compute_precision</c> resolved for the device).</summary>
    public override ScalarType ComputeDtype { get; }
    public override VaeConfig Vae { get; }
    /// <summary>Shift used by <see cref="ShiftAndClampTimestep"/>; the student takes the pipeline's flow_shift.</summary>
    public double TimestepShift { get; private set; }
    public int MinTimestep { get; } = 0;
    public int MaxTimestep => NumTrainTimesteps;

    private void ApplyTrainable()
    {
        foreach (var p in _transformer.parameters()) p.requires_grad = Trainable;
        if (Trainable) _transformer.train(); else _transformer.eval();
    }

    /// <summary>VAE constants: the recipe's pipeline.vae_config, else the model folder's vae/config.json, else the family default.</summary>
    private static VaeConfig LoadVaeConfig(ModelBuildContext context, DiffusersModelFolder folder)
    {
        var explicitPath = context.Run.Pipeline.VaeConfig;
        if (!string.IsNullOrEmpty(explicitPath))
        {
            var p = Directory.Exists(explicitPath) ? Path.Combine(explicitPath, "config.json") : explicitPath;
            if (!File.Exists(p)) throw new UserError($"pipeline.vae_config: '{explicitPath}' does not exist");
            return VaeConfig.Load(p);
        }
        return VaeConfig.FromModelFolder(folder, context.Family.Defaults.Vae);
    }

    public override void InitPreprocessors()
    {
        // Upstream quirk kept on purpose: the student's DMD/critic timestep shift follows the pipeline's flow_shift
        // while its scheduler grid keeps the role's own flow_shift.
        TimestepShift = Context.Run.Pipeline.FlowShift ?? Context.Family.Defaults.FlowShift;
    }

    public override void OnTrainStart() => EnsureNegativeConditioning();

    public override Tensor ShiftAndClampTimestep(Tensor timestep)
    {
        using var scope = NewDisposeScope();
        var shifted = FlowMatch.ShiftTimestep(timestep, TimestepShift, NumTrainTimesteps);
        return shifted.clamp(MinTimestep, MaxTimestep).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Negative-prompt embeddings from precomputed safetensors (text encoders come later): the role's
    /// negative_prompt_embeds file, else negative_prompt_embeds.safetensors in the model folder. Absent = none;
    /// that is an error only when an unconditional branch actually needs it.
    /// </summary>
    public Conditioning? EnsureNegativeConditioning()
    {
        if (_negativeLoaded) return _negative;
        _negativeLoaded = true;
        string? path = Context.Options.NegativePromptEmbeds;
        string what = $"roles.{Role}.negative_prompt_embeds";
        if (string.IsNullOrEmpty(path))
        {
            path = Folder.FindFile(NegativePromptEmbeds.FileName);
            what = $"roles.{Role}.init_from";
            if (path is null) return null;
        }
        using var loaded = NegativePromptEmbeds.LoadConditioning(path, what);
        _negative = loaded.Map(t => t.to(_transformer.ParamDtype).to(Device)).DetachFromDisposeScope();
        return _negative;
    }

    public override TrainingBatch PrepareBatch(RawBatch raw, Generator generator, LatentsSource latentsSource = LatentsSource.Data)
    {
        var negative = EnsureNegativeConditioning();
        using var scope = NewDisposeScope();
        var dtype = _transformer.ParamDtype;
        var data = Context.Training.Data;
        var text = raw.Conditioning[Conditioning.Text];
        var conditional = Conditioning.FromText(text.Values.to(Device).to_type(dtype),
            (text.Mask ?? ones(text.Values.shape[0], text.Values.shape[1])).to(Device).to_type(dtype));
        long b = raw.BatchSize, textLength = text.Values.shape[1];

        Tensor latents; // BCTHW
        if (latentsSource == LatentsSource.Zeros)
        {
            if (data.NumLatentT <= 0 || data.NumHeight <= 0 || data.NumWidth <= 0)
                throw new UserError("training.data.num_latent_t, num_height and num_width must be set (> 0) to generate latents from zeros");
            int s = Vae.SpatialCompressionRatio;
            latents = zeros([b, Vae.LatentChannels, data.NumLatentT, data.NumHeight / s, data.NumWidth / s], dtype: dtype, device: Device);
        }
        else
        {
            if (raw.VaeLatent is null) throw new UserError("the batch has no vae_latent, but the method needs data latents (latents_source=data)");
            latents = raw.VaeLatent;
            if (data.NumLatentT > 0 && latents.shape[2] > data.NumLatentT) latents = latents.narrow(2, 0, data.NumLatentT);
            latents = latents.to(Device).to_type(dtype);
        }
        latents = Vae.Normalize(latents);

        // Draw order matters for reproducibility: noise first, then the timestep density (as upstream).
        var noise = randn(latents.shape, dtype: ScalarType.Float32, device: Device, generator: generator).to_type(dtype);
        var tm = Context.Training.Model;
        var u = TimestepSampling.Density(TimestepSampling.ParseScheme(tm.WeightingScheme), b, generator, tm.LogitMean, tm.LogitStd, tm.ModeScale);
        var timesteps = FlowMatch.GridTimesteps(_scheduler, u).to(Device);
        var sigmas = FlowMatch.GetSigmas(_scheduler, timesteps, 5, dtype);
        var noisy = (1.0 - sigmas) * latents + sigmas * noise;

        // The negative side is padded like the batch's text and expanded to the batch.
        var uncond = negative?.Map(t => FitLength(t, textLength)).ExpandTo(b, $"the negative prompt of role '{Role}'");
        return new TrainingBatch
        {
            Latents = latents.permute(0, 2, 1, 3, 4).contiguous().MoveToOuterDisposeScope(), // BCTHW -> BTCHW
            RawLatentShape = latents.shape,
            NoisyModelInput = noisy.MoveToOuterDisposeScope(),
            Noise = noise.MoveToOuterDisposeScope(),
            Timesteps = timesteps.MoveToOuterDisposeScope(),
            Sigmas = sigmas.MoveToOuterDisposeScope(),
            Conditional = conditional.MoveToOuterDisposeScope(),
            Unconditional = uncond?.MoveToOuterDisposeScope(),
        };
    }

    /// <summary>Zero-pads or crops dim 1 (tokens) to the batch's text length, as upstream pads both sides to text_len.</summary>
    private static Tensor FitLength(Tensor t, long length)
    {
        long l = t.shape[1];
        if (l == length) return t.alias();
        if (l > length) return t.narrow(1, 0, length);
        var pad = new long[2 * (t.dim() - 1)];   // pairs from the last dim back: only dim 1 grows
        pad[^1] = length - l;
        return nn.functional.pad(t, pad);
    }

    public override Tensor AddNoise(Tensor cleanLatents, Tensor noise, Tensor timestep) => AddNoise(cleanLatents, noise, timestep, _scheduler);

    public override Tensor PredictNoise(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
        CfgUncondPolicy? cfgUncond = null, AttnKind attnKind = AttnKind.Dense)
    {
        using var scope = NewDisposeScope();
        var text = conditional ? batch.Conditional : UncondText(batch, cfgUncond ?? CfgUncondPolicy.Default);
        var t = TransformerTimestep(timestep, noisyLatents.shape[0]);
        var x = noisyLatents.permute(0, 2, 1, 3, 4); // BTCHW -> BCTHW
        var v = _transformer.Forward(x, t.to(Device), text[Conditioning.Text].Values);
        return v.permute(0, 2, 1, 3, 4).MoveToOuterDisposeScope(); // BCTHW -> BTCHW
    }

    /// <summary>The timestep as the transformer takes it: the bidirectional Wan DiT takes one per sample.</summary>
    protected virtual Tensor TransformerTimestep(Tensor timestep, long batch)
    {
        var t = timestep.numel() == 1 ? timestep.reshape(1).expand(batch) : timestep;
        if (t.numel() != batch) throw new ArgumentException($"wan: timestep must have 1 or B={batch} values, got {t.numel()} (per-frame timesteps need the wan_causal family)");
        return t;
    }

    /// <summary>The unconditional text of a CFG pair under the recipe's cfg_uncond policy.</summary>
    protected Conditioning UncondText(TrainingBatch batch, CfgUncondPolicy policy)
    {
        foreach (var (channel, value) in policy.OtherChannels)
            if (value != "keep" && !policy.IgnoreMissing)
                throw new UserError($"method.cfg_uncond.{channel}: the {Context.Family.Name} family has no '{channel}' conditioning (set on_missing: ignore to skip it)");
        return policy.Text switch
        {
            UncondTextPolicy.NegativePrompt => batch.Unconditional ?? throw new UserError(
                $"role '{Role}' needs negative-prompt conditioning but has none: set roles.{Role}.negative_prompt_embeds to a safetensors file " +
                $"with 'negative_prompt_embeds' [1,L,D], put negative_prompt_embeds.safetensors in the model folder, or set method.cfg_uncond.text to keep or zero"),
            UncondTextPolicy.Keep => batch.Conditional,
            UncondTextPolicy.Zero => batch.Conditional.Map(t => zeros_like(t)),
            UncondTextPolicy.Drop => throw new UserError($"method.cfg_uncond.text: 'drop' is not supported by the {Context.Family.Name} family (use negative_prompt, keep or zero)"),
            _ => throw new InvalidOperationException(),
        };
    }

    /// <summary>(loss / max(1, rounds)).backward(); checkpointed blocks recompute inside it (upstream wraps the call in
    /// its forward context for that recomputation; the Wan DiT reads no such context).</summary>
    public override void Backward(Tensor loss, object? context, int gradAccumRounds)
    {
        using var scaled = loss / Math.Max(1, gradAccumRounds);
        scaled.backward();
        ActivationCheckpoint.CompleteBackward();
    }

    public override void Dispose()
    {
        _negative?.Dispose();
        _negative = null;
        base.Dispose();
    }
}

using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Distributed;
using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using FastVideo.Models.Schedulers;
using FastVideo.Models.Vae;
using FastVideo.Train.Utils;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models;

/// <summary>
/// The flow-matching plugin mechanics that upstream's WanModel holds and its HunyuanModel inherits: the transformer
/// loaded from a Diffusers folder in the master dtype (frozen or trainable, LoRA, activation checkpointing, compute
/// dtype), a <see cref="FlowMatchEulerDiscreteScheduler"/> with the role's flow shift, the VAE's normalisation,
/// negative conditioning from precomputed safetensors, <see cref="PrepareBatch"/> (noise, then timestep density, from
/// the method's generator), the forward process, the cfg_uncond policy and backward. A family supplies how its
/// transformer is built, how the loader's conditioning maps to its channels and how its forward is called.
/// </summary>
public abstract class FlowMatchModel<TTransformer> : ModelBase where TTransformer : nn.Module, IDiffusionTransformer
{
    private readonly FlowMatchEulerDiscreteScheduler _scheduler;
    private Conditioning? _negative;
    private bool _negativeLoaded;

    /// <param name="context">The role.</param>
    /// <param name="load">Builds the transformer from (its config.json, that file's path, the weights, their source,
    /// the master dtype).</param>
    protected FlowMatchModel(ModelBuildContext context, Func<JsonObject, string, WeightSet, string, ScalarType, TTransformer> load) : base(context)
    {
        var options = context.Options;
        Folder = DiffusersModelFolder.Resolve(options.InitFrom);
        TransformerConfig = Folder.ReadConfig();
        MasterDtype = Precision.Parse(context.Training.DitPrecision);

        // Built on the meta device and filled from the files straight in the master dtype (no random init, no fp32 detour).
        var (weights, source) = ResolveBaseWeightSet(options, Folder);
        DiT = load(TransformerConfig, Folder.ConfigPath, weights, source, MasterDtype);
        DiT.to(Device);
        foreach (var p in DiT.parameters()) p.requires_grad = Trainable;
        if (Trainable) DiT.train(); else DiT.eval();
        // LoRA: the base (in the master dtype, bf16 if dit_precision says so) is frozen; float32 adapters train.
        EnableLoraIfConfigured(DiT);
        // Upstream applies the role's (else training.model's) checkpointing type to a trainable role's blocks only.
        DiT.GradientCheckpointing = CheckpointingPolicy.FromRecipe(CheckpointingType);
        // Compute dtype (bf16 over fp32 masters where the device computes bf16 natively, as FastVideo's autocast).
        var compute = Precision.ResolveCompute(context.Training.ComputePrecision, MasterDtype, context.Training.Device);
        ComputeDtype = compute;
        DiT.ComputeDtype = compute == MasterDtype ? null : compute;

        double shift = options.FlowShift ?? context.Family.Defaults.FlowShift;
        _scheduler = new FlowMatchEulerDiscreteScheduler(shift);
        TimestepShift = shift;
        Vae = ResolveVae(context.Run, Folder, context.Family.Defaults.Vae);
    }

    /// <summary>The transformer, typed.</summary>
    protected TTransformer DiT { get; }
    public DiffusersModelFolder Folder { get; }
    public override nn.Module Transformer => DiT;
    public override INoiseScheduler NoiseScheduler => _scheduler;
    public override JsonObject TransformerConfig { get; }
    public ScalarType MasterDtype { get; }
    /// <summary>The dtype the transformer computes in (<c>training.compute_precision</c> resolved for the device).</summary>
    public override ScalarType ComputeDtype { get; }
    public override VaeConfig Vae { get; }
    public override string? AppliedCheckpointing => DiT.GradientCheckpointing?.ToString();
    /// <summary>Shift used by <see cref="ShiftAndClampTimestep"/>; the student takes the pipeline's flow_shift.</summary>
    public double TimestepShift { get; private set; }
    public int MinTimestep { get; } = 0;
    public int MaxTimestep => NumTrainTimesteps;

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
    /// Negative-prompt conditioning from precomputed safetensors (text encoders come later): the role's
    /// negative_prompt_embeds file, else negative_prompt_embeds.safetensors in the model folder, in this family's
    /// channels (<see cref="LoadNegative"/>), on the device in the master dtype. Absent = none; that is an error only
    /// when an unconditional branch actually needs it.
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
        using var scope = NewDisposeScope();
        // The loaded tensors are outside any scope (the loader detaches them): disposed here, after the copy is made.
        using var loaded = LoadNegative(path, what);
        _negative = loaded.Map(t => t.to(DiT.ParamDtype).to(Device).clone()).DetachFromDisposeScope();
        return _negative;
    }

    /// <summary>The negative file as this family's conditioning channels (one row), float32 on the CPU.</summary>
    protected virtual Conditioning LoadNegative(string path, string what) => NegativePromptEmbeds.LoadConditioning(path, what);

    /// <summary>
    /// The loader's (or <see cref="ModelBase.PrepareInference"/>'s) conditioning as this family's channels on the
    /// device in <paramref name="dtype"/> (a text channel always has a mask). New tensors.
    /// </summary>
    protected abstract Conditioning ConditionalChannels(Conditioning raw, ScalarType dtype);

    public override TrainingBatch PrepareBatch(RawBatch raw, Generator generator, LatentsSource latentsSource = LatentsSource.Data)
    {
        var negative = EnsureNegativeConditioning();
        using var scope = NewDisposeScope();
        var dtype = DiT.ParamDtype;
        var data = Context.Training.Data;
        var conditional = ConditionalChannels(raw.Conditioning, dtype);
        long b = raw.BatchSize, textLength = conditional[Conditioning.Text].Values.shape[1];

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
        // Both draws are per sample: made for the global batch of a data-parallel run, of which this rank keeps its rows.
        var noise = DataParallelDraws.Local(randn(DataParallelDraws.Global(latents.shape), dtype: ScalarType.Float32, device: Device, generator: generator)).to_type(dtype);
        var tm = Context.Training.Model;
        var u = DataParallelDraws.Local(TimestepSampling.Density(TimestepSampling.ParseScheme(tm.WeightingScheme), DataParallelDraws.Global(b),
            generator, tm.LogitMean, tm.LogitStd, tm.ModeScale));
        var timesteps = FlowMatch.GridTimesteps(_scheduler, u).to(Device);
        var sigmas = FlowMatch.GetSigmas(_scheduler, timesteps, 5, dtype);
        var noisy = (1.0 - sigmas) * latents + sigmas * noise;

        // The negative side's text is padded like the batch's (its mask with zeros) and every channel expanded to the batch.
        var uncond = negative?.Select((name, c) => name == Conditioning.Text
                ? new ConditioningChannel(FitLength(c.Values, textLength), c.Mask is null ? null : FitLength(c.Mask, textLength))
                : new ConditioningChannel(c.Values.alias(), c.Mask?.alias()))
            .ExpandTo(b, $"the negative prompt of role '{Role}'");
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
        var v = RunTransformer(x, t.to(Device), text);
        return v.permute(0, 2, 1, 3, 4).MoveToOuterDisposeScope(); // BCTHW -> BTCHW
    }

    /// <summary>The family's forward: hidden_states [B,C,T,H,W], the timestep as <see cref="TransformerTimestep"/> gives it,
    /// the conditioning channels -> [B,C,T,H,W].</summary>
    protected abstract Tensor RunTransformer(Tensor hiddenStates, Tensor timestep, Conditioning conditioning);

    /// <summary>The timestep as the transformer takes it: one per sample unless a family takes more.</summary>
    protected virtual Tensor TransformerTimestep(Tensor timestep, long batch)
    {
        var t = timestep.numel() == 1 ? timestep.reshape(1).expand(batch) : timestep;
        if (t.numel() != batch)
            throw new ArgumentException($"{Context.Family.Name}: timestep must have 1 or B={batch} values, got {t.numel()} (per-frame timesteps need a causal family)");
        return t;
    }

    /// <summary>The unconditional side of a CFG pair under the recipe's cfg_uncond policy (its text policy applies to
    /// every text channel: the tokens and, where the family has one, the pooled vector).</summary>
    protected Conditioning UncondText(TrainingBatch batch, CfgUncondPolicy policy)
    {
        foreach (var (channel, value) in policy.OtherChannels)
            if (value != "keep" && !policy.IgnoreMissing)
                throw new UserError($"method.cfg_uncond.{channel}: the {Context.Family.Name} family has no '{channel}' conditioning (set on_missing: ignore to skip it)");
        return policy.Text switch
        {
            UncondTextPolicy.NegativePrompt => batch.Unconditional ?? throw new UserError(
                $"role '{Role}' needs negative-prompt conditioning but has none: set roles.{Role}.negative_prompt_embeds to a safetensors file " +
                $"with {NegativeFileContents}, put negative_prompt_embeds.safetensors in the model folder, or set method.cfg_uncond.text to keep or zero"),
            UncondTextPolicy.Keep => batch.Conditional,
            UncondTextPolicy.Zero => batch.Conditional.Map(t => zeros_like(t)),
            UncondTextPolicy.Drop => throw new UserError($"method.cfg_uncond.text: 'drop' is not supported by the {Context.Family.Name} family (use negative_prompt, keep or zero)"),
            _ => throw new InvalidOperationException(),
        };
    }

    /// <summary>What this family's negative file holds, for error messages.</summary>
    protected virtual string NegativeFileContents => $"'{NegativePromptEmbeds.EmbedsKey}' [1,L,D]";

    /// <summary>(loss / max(1, rounds)).backward(); checkpointed blocks recompute inside it (upstream wraps the call in
    /// its forward context for that recomputation; these DiTs read no such context).</summary>
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

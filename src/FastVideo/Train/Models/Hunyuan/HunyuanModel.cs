using System.ComponentModel;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Models.Schedulers;
using FastVideo.Models.Vae;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models.Hunyuan;

/// <summary><c>roles.&lt;role&gt;</c> of the <c>hunyuan</c> family: the common options and the embedded guidance.</summary>
public sealed record HunyuanRoleConfig : RoleConfig, ICheckedOptions, IFastVideoDifferences
{
    [Description("guidance scale given to a guidance-distilled transformer (guidance_embeds), times 1000; null = 6.0 " +
                 "(Diffusers' pipeline default; upstream FastVideo's DiT uses 6.016 when none is given)")]
    public double? EmbeddedGuidanceScale { get; init; }

    public IEnumerable<OptionProblem> Check()
    {
        if (EmbeddedGuidanceScale is { } g && !double.IsFinite(g))
            yield return new OptionProblem("embedded_guidance_scale", $"must be a finite number, got {g}");
    }

    public IEnumerable<OptionProblem> DifferencesFromFastVideo() =>
        HunyuanLoraNames.Differences(Lora).Append(new OptionProblem("embedded_guidance_scale",
            "FastVideo's HunyuanModel gives its DiT no guidance in training, so a guidance-embedding transformer (guidance_embeds, as " +
            "HunyuanVideo's) embeds 6016 (6.016 x 1000) there and embedded_cfg_scale x 1000 (6000) in validation; here training and sampling " +
            $"both embed embedded_guidance_scale x 1000 = {(EmbeddedGuidanceScale ?? 6.0) * 1000:0.###}"));
}

/// <summary>
/// The <c>hunyuan</c> family (upstream's HunyuanModel): the wan plugin's flow-matching mechanics around a
/// <see cref="HunyuanVideoTransformer3DModel"/>, with HunyuanVideo's latent normalisation (× the VAE's scaling_factor),
/// default flow shift 7, text in two channels (LLaMA tokens with their mask, the pooled CLIP vector) and the embedded
/// guidance scale. The loader's packed text (spec 2.1: row 0 = pooled vector zero-padded, rows 1.. = tokens) is split
/// here, at the plugin boundary; conditioning that arrives split (generate) is taken as it is.
/// <para>Masks: the transformer honours the text mask as Diffusers does (refiner attention, masked mean pooling, the
/// joint attention's key mask), in training too. Upstream FastVideo passes no mask, so its DiT also attends to the zero
/// rows the loader pads to text_len (256); that agrees with Diffusers only for a full-length prompt. Training with the
/// mask trains the function that Diffusers' pipeline and <c>generate</c> sample.</para>
/// </summary>
public sealed partial class HunyuanModel : FlowMatchModel<HunyuanVideoTransformer3DModel>
{
    public static ModelFamily Family { get; } = new(
        Name: "hunyuan",
        Description: "HunyuanVideo text-to-video (Diffusers HunyuanVideoTransformer3DModel): LLaMA tokens with their mask + pooled CLIP text, embedded guidance",
        RoleConfigType: typeof(HunyuanRoleConfig),
        LatentSpace: "hunyuan-vae",
        Defaults: new FamilyDefaults(FlowShift: 7.0, TextLen: 256, Vae: VaeConfig.HunyuanDefault),
        Create: ctx => new HunyuanModel(ctx))
    {
        DataParallelDraws = true,
        EstimateActivations = HunyuanActivations.Estimate,
        Conditioning = [Data.Conditioning.Text, Data.Conditioning.PooledText],
        ClassPaths = ["fastvideo.train.models.hunyuan.HunyuanModel", "fastvideo.train.models.hunyuan.hunyuan.HunyuanModel"],
        TransformerClass = "HunyuanVideoTransformer3DModel",
        WriteRandomTransformer = (config, seed, dir) =>
        {
            using var m = HunyuanVideoTransformer3DModel.CreateRandom(HunyuanVideoTransformerConfig.FromJson(config, "random transformer config"), seed);
            m.SavePretrained(dir);
        },
        // The blocks' attention projections and MLPs and the output projection; not the embedders and the token
        // refiner (upstream excludes img_in, txt_in, time_in, vector_in). Upstream's default targets (q_proj, to_q,
        // to_k, to_v, to_out, ...) pick to_q/to_k/to_v/to_out.0 and add_q_proj/add_k_proj/add_v_proj.
        IsLoraCapable = name => LoraCapableLayer().IsMatch(name),
        // FastVideo's recipes name LoRA targets after its own DiT (img_attn_qkv, txt_attn_proj, linear1, ...).
        UpstreamLayerName = HunyuanLoraNames.FastVideoName,
    };

    [System.Text.RegularExpressions.GeneratedRegex(@"^(transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)|ff(_context)?\.net\.(0\.proj|2))|single_transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v)|proj_mlp|proj_out)|proj_out)$")]
    private static partial System.Text.RegularExpressions.Regex LoraCapableLayer();

    public HunyuanModel(ModelBuildContext context)
        : base(context, (json, path, weights, source, dtype) =>
            HunyuanVideoTransformer3DModel.FromWeights(HunyuanVideoTransformerConfig.FromJson(json, path), weights, source, dtype))
    {
        if (Vae.ScalingFactor is null)
            throw new UserError($"{Vae.SourcePath ?? "the VAE config"}: the hunyuan family normalises latents by the VAE's scaling_factor, which this config does not give " +
                                "(latents_mean/latents_std are a Wan VAE's normalisation)");
        var scale = (context.Options as HunyuanRoleConfig)?.EmbeddedGuidanceScale;
        if (scale is not null && !DiT.Config.GuidanceEmbeds)
            throw new UserError($"roles.{Role}.embedded_guidance_scale: the transformer embeds no guidance (guidance_embeds is false in {Folder.ConfigPath}); remove the key");
        EmbeddedGuidanceScale = DiT.Config.GuidanceEmbeds ? scale ?? context.Run.Pipeline.EmbeddedCfgScale ?? 6.0 : null;
    }

    public HunyuanVideoTransformer3DModel HunyuanTransformer => DiT;

    /// <summary>The guidance scale the transformer is given (× 1000); null when it embeds none.</summary>
    public double? EmbeddedGuidanceScale { get; }

    /// <summary>HunyuanVideoPipeline's sigmas: linspace(1, 0, n + 1) without its last point (shifted by the scheduler).</summary>
    public override IReadOnlyList<double>? SamplingSigmas(int steps) => FlowMatchEulerDiscreteScheduler.LinearSigmas(steps);

    /// <summary>Text tokens + mask and the pooled vector: given as two channels, or packed as FastVideo's data holds them.</summary>
    protected override Conditioning ConditionalChannels(Conditioning raw, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var c = DiT.Config;
        var text = raw[Conditioning.Text];
        var channels = raw.TryGet(Conditioning.PooledText, out var pooled)
            ? new Conditioning([
                new(Conditioning.Text, new ConditioningChannel(text.Values.alias(), text.Mask?.alias() ?? ones(text.Values.shape[0], text.Values.shape[1]))),
                new(Conditioning.PooledText, new ConditioningChannel(pooled.Values.alias())),
            ])
            : HunyuanTextLayout.Split(text.Values, text.Mask, c.PooledProjectionDim, "text_embedding");
        CheckWidths(channels, "the batch's text");
        return channels.Map(t => t.to(Device).to_type(dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Diffusers' layout (<c>negative_prompt_embeds</c> [1,L,D], <c>negative_pooled_prompt_embeds</c> [1,P], optional
    /// mask), or the seed's packed row [pooled zero-padded ; LLaMA tokens] in <c>negative_prompt_embeds</c> alone;
    /// the mask is all ones unless the file gives one.
    /// </summary>
    protected override Conditioning LoadNegative(string path, string what)
    {
        using var loaded = NegativePromptEmbeds.LoadConditioning(path, what);
        var channels = loaded.Has(Conditioning.PooledText)
            ? loaded.Map(t => t.alias())
            : HunyuanTextLayout.Split(loaded[Conditioning.Text].Values, loaded[Conditioning.Text].Mask, DiT.Config.PooledProjectionDim,
                $"{what}: '{path}': '{NegativePromptEmbeds.EmbedsKey}' without '{NegativePromptEmbeds.PooledKey}' (read as packed hunyuan text)");
        CheckWidths(channels, $"{what}: '{path}'");
        return channels;
    }

    protected override string NegativeFileContents =>
        $"'{NegativePromptEmbeds.EmbedsKey}' [1,L,D] and '{NegativePromptEmbeds.PooledKey}' [1,P] (or the packed [1,1+L,D] alone)";

    private void CheckWidths(Conditioning c, string what)
    {
        var cfg = DiT.Config;
        long d = c[Conditioning.Text].Values.shape[^1], p = c[Conditioning.PooledText].Values.shape[^1];
        if (d != cfg.TextEmbedDim || p != cfg.PooledProjectionDim)
            throw new UserError($"{what}: text tokens of width {d} and a pooled vector of width {p}; the transformer ({Folder.ConfigPath}) " +
                                $"takes text_embed_dim {cfg.TextEmbedDim} and pooled_projection_dim {cfg.PooledProjectionDim}");
    }

    /// <summary>Spec 4.5's forward arguments (hidden_states, encoder_hidden_states, timestep), with Diffusers' mask, pooled
    /// projections and guidance.</summary>
    protected override Tensor RunTransformer(Tensor hiddenStates, Tensor timestep, Conditioning conditioning)
    {
        using var scope = NewDisposeScope();
        var text = conditioning[Conditioning.Text];
        var guidance = EmbeddedGuidanceScale is { } g ? full(new[] { hiddenStates.shape[0] }, g * 1000.0, dtype: ScalarType.Float32, device: hiddenStates.device) : null;
        return DiT.Forward(hiddenStates, timestep, text.Values, text.Mask, conditioning[Conditioning.PooledText].Values, guidance).MoveToOuterDisposeScope();
    }
}

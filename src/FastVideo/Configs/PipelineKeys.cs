namespace FastVideo.Configs;

/// <summary>
/// The <c>pipeline:</c> section's keys beyond <see cref="PipelineConfig"/>'s: every other field of FastVideo's
/// PipelineConfig dataclasses (configs/pipelines/base.py, wan.py, hunyuan.py at the spec's commit) loads with a warning
/// saying why it has no effect here, mostly because text encoders and the VAE run before training (the data is
/// precomputed latents and embeddings) and the families FastVideoSharp lacks. Anything else is an unknown key.
/// </summary>
internal static class PipelineKeys
{
    private const string Precomputed = "text embeddings and latents are precomputed; training runs no text encoder";
    private const string VaePrecomputed = "latents are precomputed and validation decodes with the model folder's VAE in fp32, untiled";

    /// <summary>(key, why it is ignored here).</summary>
    private static readonly (string Key, string Why)[] Ignored =
    [
        ("model_path", "the model comes from models.student.init_from (FastVideo derives pipeline.model_path from it too)"),
        ("pipeline_config_path", "a pipeline-config file is not read; give the keys in the pipeline map"),
        ("flow_shift_sr", "super-resolution (upsampler) pipelines are not implemented"),
        ("disable_autocast", "there is no autocast; the compute dtype is training.dit_precision"),
        ("is_causal", "causality comes from each role's family (_target_), e.g. WanCausalModel"),
        ("dit_precision", "the transformer's dtype is training.dit_precision"),
        ("precision", "the transformer's dtype is training.dit_precision"),
        ("upsampler_config", "super-resolution (upsampler) pipelines are not implemented"),
        ("upsampler_precision", "super-resolution (upsampler) pipelines are not implemented"),
        ("vae_precision", VaePrecomputed),
        ("vae_tiling", VaePrecomputed),
        ("vae_sp", VaePrecomputed),
        ("image_encoder_config", "image-to-video (image encoder) pipelines are not implemented"),
        ("image_encoder_precision", "image-to-video (image encoder) pipelines are not implemented"),
        ("text_encoder_configs", Precomputed),
        ("text_encoder_precisions", Precomputed),
        ("preprocess_text_funcs", Precomputed),
        ("postprocess_text_funcs", Precomputed),
        ("dmd_denoising_steps", "the denoising steps are the method's dmd_denoising_steps and callbacks.validation's options"),
        ("warp_denoising_step", "the method's warp_denoising_step applies"),
        ("ti2v_task", "Wan2.2 TI2V is not implemented"),
        ("expand_timesteps", "Wan2.2 TI2V is not implemented"),
        ("boundary_ratio", "Wan2.2 A14B's two-expert switch is not implemented"),
        ("context_noise", "MatrixGame pipelines are not implemented"),
        ("num_frames_per_block", "MatrixGame's pipeline setting; the causal block size is pipeline.dit_config.num_frames_per_block or the role's"),
    ];

    /// <summary>
    /// The root's <c>pipeline</c> map with FastVideo's other pipeline keys dropped, each with a warning at its line; a key
    /// neither bound nor FastVideo's is an unknown-key error suggesting the nearest of both. Changes
    /// <paramref name="root"/> in place; a <c>pipeline</c> that is not a map is left to the binder.
    /// </summary>
    public static void DropIgnored(RawMap root, RecipeBinder binder)
    {
        if (!root.TryGetEntry("pipeline", out var pKey, out var pValue)) return;
        if (pValue is RawScalar { Value: string })
            throw binder.Error(pValue, "pipeline", "a pipeline-config file is not supported; give the overrides as a map, e.g. pipeline: {flow_shift: 3}");
        if (pValue is not RawMap pipeline) return;
        var bound = RecordShape.Of(typeof(PipelineConfig)).Select(p => p.Key).ToList();
        var result = new RawMap(pipeline.Line, pipeline.OverrideSource);
        foreach (var (key, value) in pipeline.Entries)
        {
            if (bound.Contains(key.Text)) { result.Entries.Add((key, value)); continue; }
            var rule = Ignored.FirstOrDefault(r => r.Key == key.Text);
            if (rule.Key is null)
                throw binder.UnknownKey(key, $"pipeline.{key.Text}", bound.Concat(Ignored.Select(r => r.Key)));
            binder.Note(RecipeNoteKind.Ignored, key, $"pipeline.{key.Text}", $"ignored: {rule.Why}");
        }
        root.Set(pKey, result);
    }
}

using FastVideo.Configs;
using Xunit;
using static FastVideo.Tests.Configs.FastVideoFormRecipes;

namespace FastVideo.Tests.Configs;

/// <summary>The pipeline section's keys: FastVideo's PipelineConfig fields are known (applied or ignored with a warning).</summary>
public class PipelineKeysTests
{
    private const string Pipeline = """
        pipeline:
          flow_shift: 7
          embedded_cfg_scale: 4.5
          text_len: 128
          dit_precision: bf16
          vae_precision: fp16
          vae_tiling: false
          text_encoder_precisions: [fp16, fp16]
          dmd_denoising_steps: [1000, 757, 522]
          is_causal: false
        """;

    private static readonly string Recipe = HunyuanFinetune.Replace("pipeline:\n  flow_shift: 7", Pipeline);

    [Fact]
    public void FastVideosPipelineKeysLoadAppliedOrIgnoredWithAWarningAtTheirLine()
    {
        Assert.NotEqual(HunyuanFinetune, Recipe);
        var c = Load(Recipe);
        Assert.Equal(7.0, c.Pipeline.FlowShift);
        Assert.Equal(4.5, c.Pipeline.EmbeddedCfgScale);
        Assert.Equal(128, c.Pipeline.TextLen);
        // The hunyuan student has no embedded_guidance_scale of its own: it embeds the pipeline's (x 1000).
        Assert.EndsWith("= 4500", Assert.Single(c.Notes, n => n.KeyPath == "models.student.embedded_guidance_scale").Detail);

        var warnings = c.Notes.Where(n => n.Kind == RecipeNoteKind.Ignored).ToList();
        string[] ignored = ["dit_precision", "vae_precision", "vae_tiling", "text_encoder_precisions", "dmd_denoising_steps", "is_causal"];
        Assert.Equal(ignored.Select(k => $"pipeline.{k}"), warnings.Select(w => w.KeyPath));
        var section = Recipe.IndexOf("\npipeline:", StringComparison.Ordinal);   // dit_precision is a training key too
        Assert.All(warnings, w => Assert.Equal(RecipeTestSupport.LineOf(Recipe[section..], $"  {w.KeyPath["pipeline.".Length..]}:")
                                               + Recipe[..section].Count(ch => ch == '\n'), w.Line));
        Assert.Equal($"warning: run.yaml:{RecipeTestSupport.LineOf(Recipe, "  vae_tiling:")}: pipeline.vae_tiling: ignored: latents are " +
                     "precomputed and validation decodes with the model folder's VAE in fp32, untiled", warnings[2].ToString());
        Assert.Contains("training runs no text encoder", warnings[3].Detail);
    }

    [Fact]
    public void AMisspeltPipelineKeyIsAnUnknownKeyWithASuggestion()
    {
        var yaml = Recipe.Replace("vae_tiling:", "vae_tilng:");
        var e = Assert.Throws<RecipeError>(() => Load(yaml));
        Assert.Equal($"run.yaml:{RecipeTestSupport.LineOf(yaml, "vae_tilng")}: pipeline.vae_tilng: unknown key; did you mean 'vae_tiling'?", e.Message);
        e = Assert.Throws<RecipeError>(() => Load(Recipe.Replace("flow_shift: 7", "flow_shfit: 7")));
        Assert.EndsWith("pipeline.flow_shfit: unknown key; did you mean 'flow_shift'?", e.Message);
    }

    [Fact]
    public void TheOtherFormKnowsTheSameKeys()
    {
        var c = RecipeTestSupport.Load(RecipeTestSupport.Example.Replace("pipeline: {flow_shift: 3.0}", "pipeline: {flow_shift: 3.0, vae_sp: false}"));
        Assert.Equal(3.0, c.Pipeline.FlowShift);
        Assert.Equal("pipeline.vae_sp", Assert.Single(c.Notes, n => n.Kind == RecipeNoteKind.Ignored).KeyPath);
        Assert.Throws<RecipeError>(() => RecipeTestSupport.Load(RecipeTestSupport.Example.Replace("pipeline: {flow_shift: 3.0}", "pipeline: {vae_spp: false}")));
    }
}

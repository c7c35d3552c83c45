using System.Text.RegularExpressions;
using FastVideo.Configs;

namespace FastVideo.Train.Models.Hunyuan;

/// <summary>
/// FastVideo's names for the HunyuanVideo transformer's linears. FastVideo's own DiT (fastvideo/models/dits/hunyuanvideo.py)
/// loads Diffusers weights through its <c>param_names_mapping</c>, fusing some projections: q, k, v of the image stream
/// into <c>img_attn_qkv</c>, of the text stream into <c>txt_attn_qkv</c>, a single block's q, k, v and MLP input into
/// <c>linear1</c>. Its recipes name LoRA targets that way (<c>target_modules: [img_attn_qkv, ...]</c>); here each Diffusers
/// layer answers to its FastVideo name too, so such a recipe adapts the same layers. One difference stays: a fused
/// layer there gets one adapter (one A shared by q, k and v); here each projection gets its own rank-r adapter.
/// </summary>
public static partial class HunyuanLoraNames
{
    /// <summary>Diffusers module name -> FastVideo module name, the reverse of FastVideo's mapping for linear layers.</summary>
    private static readonly (Regex Pattern, string Replacement)[] Rules =
    [
        (Rule(@"^transformer_blocks\.(\d+)\.attn\.to_[qkv]$"), "double_blocks.$1.img_attn_qkv"),
        (Rule(@"^transformer_blocks\.(\d+)\.attn\.to_out\.0$"), "double_blocks.$1.img_attn_proj"),
        (Rule(@"^transformer_blocks\.(\d+)\.attn\.add_[qkv]_proj$"), "double_blocks.$1.txt_attn_qkv"),
        (Rule(@"^transformer_blocks\.(\d+)\.attn\.to_add_out$"), "double_blocks.$1.txt_attn_proj"),
        (Rule(@"^transformer_blocks\.(\d+)\.ff\.net\.0\.proj$"), "double_blocks.$1.img_mlp.fc_in"),
        (Rule(@"^transformer_blocks\.(\d+)\.ff\.net\.2$"), "double_blocks.$1.img_mlp.fc_out"),
        (Rule(@"^transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj$"), "double_blocks.$1.txt_mlp.fc_in"),
        (Rule(@"^transformer_blocks\.(\d+)\.ff_context\.net\.2$"), "double_blocks.$1.txt_mlp.fc_out"),
        (Rule(@"^single_transformer_blocks\.(\d+)\.(attn\.to_[qkv]|proj_mlp)$"), "single_blocks.$1.linear1"),
        (Rule(@"^single_transformer_blocks\.(\d+)\.proj_out$"), "single_blocks.$1.linear2"),
        (Rule(@"^proj_out$"), "final_layer.linear"),
        // The token refiner is FastVideo's txt_in, which it keeps from LoRA (exclude_lora_layers), as the family here.
        (Rule(@"^context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.attn\.to_[qkv]$"), "txt_in.refiner_blocks.$1.self_attn_qkv"),
        (Rule(@"^context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.attn\.to_out\.0$"), "txt_in.refiner_blocks.$1.self_attn_proj"),
        (Rule(@"^context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.ff\.net\.0\.proj$"), "txt_in.refiner_blocks.$1.mlp.fc_in"),
        (Rule(@"^context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.ff\.net\.2$"), "txt_in.refiner_blocks.$1.mlp.fc_out"),
    ];

    private static Regex Rule(string pattern) => new(pattern, RegexOptions.CultureInvariant);

    /// <summary>FastVideo's module name of a Diffusers-named layer; null for a layer without one here.</summary>
    public static string? FastVideoName(string diffusersName)
    {
        foreach (var (pattern, replacement) in Rules)
            if (pattern.IsMatch(diffusersName)) return pattern.Replace(diffusersName, replacement);
        return null;
    }

    /// <summary>FastVideo's fused layers: their name and the Diffusers projections they hold.</summary>
    private static readonly (string Name, string Holds)[] Fused =
    [
        ("img_attn_qkv", "attn.to_q, to_k, to_v"), ("txt_attn_qkv", "attn.add_q_proj, add_k_proj, add_v_proj"),
        ("linear1", "a single block's attn.to_q, to_k, to_v and proj_mlp"),
    ];

    /// <summary>The notes of a role's <c>lora.target_modules</c> written with FastVideo's names: fused layers adapted
    /// per projection, and the token refiner's names (which adapt nothing, there as here).</summary>
    public static IEnumerable<OptionProblem> Differences(LoraOptions lora)
    {
        if (!lora.Enable || lora.TargetModules is not { } targets) yield break;
        var fused = Fused.Where(f => targets.Any(t => f.Name.Contains(t, StringComparison.Ordinal))).ToList();
        if (fused.Count > 0)
            yield return new OptionProblem("lora.target_modules",
                $"FastVideo's HunyuanVideo DiT fuses {string.Join("; ", fused.Select(f => $"{f.Name} ({f.Holds})"))} and gives the fused layer one " +
                $"rank-{lora.Rank} adapter (one A shared by the projections); FastVideoSharp keeps Diffusers' separate projections and gives each " +
                "its own adapter of that rank");
        var refiner = targets.Where(t => t.StartsWith("self_attn", StringComparison.Ordinal) || t is "txt_in" or "refiner_blocks").ToList();
        if (refiner.Count > 0)
            yield return new OptionProblem("lora.target_modules",
                $"{string.Join(", ", refiner)} name{(refiner.Count == 1 ? "s" : "")} layers of the token refiner (FastVideo's txt_in), which " +
                "FastVideo keeps from LoRA (exclude_lora_layers): they adapt nothing, as there (where such a name is skipped silently)");
    }
}

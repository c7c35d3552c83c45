using System.ComponentModel;

namespace FastVideo.Configs;

/// <summary>
/// <c>roles.&lt;role&gt;.lora</c>: LoRA training of one role, with upstream's keys and defaults
/// (FastVideo fastvideo/train/utils/lora.py <c>LoraConfig</c>): <c>enable</c> false, <c>rank</c> required when
/// enabled, <c>alpha</c> = rank when absent, <c>target_modules</c> = upstream's default list when absent. Only the
/// adapters train (the role's base weights are frozen); each adapted linear computes
/// <c>W x + b + (alpha/rank)·B A x</c> with A [rank, in] ~ kaiming-uniform and B [out, rank] = 0, as PEFT.
/// </summary>
public sealed record LoraOptions : ICheckedOptions
{
    /// <summary>Upstream's <c>DEFAULT_LORA_TARGET_MODULES</c>: substrings of module names; names no layer has are skipped.</summary>
    public static IReadOnlyList<string> DefaultTargetModules { get; } =
        ["q_proj", "k_proj", "v_proj", "o_proj", "to_q", "to_k", "to_v", "to_out", "to_qkv", "to_gate_compress"];

    [Description("train LoRA adapters instead of the role's weights (needs trainable: true)")]
    public bool Enable { get; init; }

    [Description("adapter rank r (> 0); required when enable is true")]
    public int? Rank { get; init; }

    [Description("scale numerator: the update is (alpha / rank) * B A; null = rank (scale 1)")]
    public int? Alpha { get; init; }

    [Description("adapt the LoRA-capable linears whose module name contains one of these; null = upstream's default list (q_proj, k_proj, v_proj, o_proj, to_q, to_k, to_v, to_out, to_qkv, to_gate_compress)")]
    [SingleStringAsList]
    public IReadOnlyList<string>? TargetModules { get; init; }

    /// <summary>alpha, or rank when alpha is not given (upstream).</summary>
    public int EffectiveAlpha => Alpha ?? Rank ?? throw new InvalidOperationException("lora.rank is not set");

    /// <summary>alpha / rank, the factor of B A.</summary>
    public double Scale => (double)EffectiveAlpha / (Rank ?? throw new InvalidOperationException("lora.rank is not set"));

    /// <summary>The given target list, or upstream's default (whose names a family may not have).</summary>
    public IReadOnlyList<string> EffectiveTargetModules => TargetModules ?? DefaultTargetModules;

    public IEnumerable<OptionProblem> Check()
    {
        // Upstream accepts a rank with enable: false (configured but off) and checks values only when enabled.
        if (!Enable) yield break;
        if (Rank is null) yield return new("rank", "required when lora.enable is true (an explicit positive rank, e.g. 16)");
        else if (Rank <= 0) yield return new("rank", $"must be > 0, got {Rank}");
        if (Alpha is <= 0) yield return new("alpha", $"must be > 0 (omit it for alpha = rank), got {Alpha}");
        if (TargetModules is { Count: 0 }) yield return new("target_modules", "must name at least one module (omit it for the default list)");
        else if (TargetModules?.FirstOrDefault(string.IsNullOrWhiteSpace) is not null)
            yield return new("target_modules", "entries must not be empty");
    }
}

using FastVideo.Configs;

namespace FastVideo.Train.Models;

/// <summary>What the unconditional branch sees for the text channel.</summary>
public enum UncondTextPolicy { NegativePrompt, Keep, Zero, Drop }

/// <summary>
/// The <c>method.cfg_uncond</c> map, parsed once: how each conditioning channel is replaced in the unconditional
/// branch of classifier-free guidance. <c>on_missing</c>: error (default) or ignore, for channels a family lacks.
/// </summary>
public sealed record CfgUncondPolicy(UncondTextPolicy Text, bool IgnoreMissing, IReadOnlyDictionary<string, string> OtherChannels)
{
    public static CfgUncondPolicy Default { get; } = new(UncondTextPolicy.NegativePrompt, false, new Dictionary<string, string>());

    /// <summary>Parses the recipe map (null = default). Errors name <c>method.cfg_uncond.&lt;key&gt;</c>.</summary>
    public static CfgUncondPolicy Parse(IReadOnlyDictionary<string, object?>? map)
    {
        var (policy, problem) = TryParse(map);
        return problem is null ? policy! : throw new UserError($"method.cfg_uncond.{problem.Key}: {problem.Detail}");
    }

    /// <summary>The first problem of the map (its key relative to <c>cfg_uncond</c>), or null when it parses.</summary>
    public static OptionProblem? Problem(IReadOnlyDictionary<string, object?>? map) => TryParse(map).Problem;

    private static (CfgUncondPolicy? Policy, OptionProblem? Problem) TryParse(IReadOnlyDictionary<string, object?>? map)
    {
        if (map is null) return (Default, null);
        bool ignore = false;
        var text = UncondTextPolicy.NegativePrompt;
        var others = new Dictionary<string, string>();
        foreach (var (key, value) in map)
        {
            string? v = value?.ToString()?.Trim().ToLowerInvariant();
            if (value is not null and not string) return (null, new(key, $"expected a string, got {value}"));
            switch (key)
            {
                case "on_missing":
                    switch (v ?? "error")
                    {
                        case "error": ignore = false; break;
                        case "ignore": ignore = true; break;
                        default: return (null, new(key, $"expected 'error' or 'ignore', got '{v}'"));
                    }
                    break;
                case "text":
                    UncondTextPolicy? t = (v ?? "negative_prompt") switch
                    {
                        "negative_prompt" => UncondTextPolicy.NegativePrompt,
                        "keep" => UncondTextPolicy.Keep,
                        "zero" => UncondTextPolicy.Zero,
                        "drop" => UncondTextPolicy.Drop,
                        _ => null,
                    };
                    if (t is null) return (null, new(key, $"expected one of negative_prompt, keep, zero, drop; got '{v}'"));
                    text = t.Value;
                    break;
                default:
                    if (v is not (null or "keep" or "zero" or "drop"))
                        return (null, new(key, $"expected one of keep, zero, drop; got '{v}'"));
                    others[key] = v ?? "keep";
                    break;
            }
        }
        return (new CfgUncondPolicy(text, ignore, others), null);
    }
}

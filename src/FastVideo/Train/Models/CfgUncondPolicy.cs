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
        if (map is null) return Default;
        bool ignore = false;
        var text = UncondTextPolicy.NegativePrompt;
        var others = new Dictionary<string, string>();
        foreach (var (key, value) in map)
        {
            string? v = value?.ToString()?.Trim().ToLowerInvariant();
            if (value is not null and not string) throw new UserError($"method.cfg_uncond.{key}: expected a string, got {value}");
            switch (key)
            {
                case "on_missing":
                    ignore = (v ?? "error") switch
                    {
                        "error" => false,
                        "ignore" => true,
                        _ => throw new UserError($"method.cfg_uncond.on_missing: expected 'error' or 'ignore', got '{v}'"),
                    };
                    break;
                case "text":
                    text = (v ?? "negative_prompt") switch
                    {
                        "negative_prompt" => UncondTextPolicy.NegativePrompt,
                        "keep" => UncondTextPolicy.Keep,
                        "zero" => UncondTextPolicy.Zero,
                        "drop" => UncondTextPolicy.Drop,
                        _ => throw new UserError($"method.cfg_uncond.text: expected one of negative_prompt, keep, zero, drop; got '{v}'"),
                    };
                    break;
                default:
                    if (v is not (null or "keep" or "zero" or "drop"))
                        throw new UserError($"method.cfg_uncond.{key}: expected one of keep, zero, drop; got '{v}'");
                    others[key] = v ?? "keep";
                    break;
            }
        }
        return new CfgUncondPolicy(text, ignore, others);
    }
}

using System.Globalization;
using System.Text;
using FastVideo.Configs;
using FastVideo.Train.Models;
using static TorchSharp.torch;

namespace FastVideo.Train;

/// <summary>One way to make a plan fit: what changes, the recipe overrides that do it, and the plan's new total.</summary>
public sealed record FitOption(string What, IReadOnlyList<string> Overrides, long TotalBytes, bool Fits, string? Note = null);

/// <summary>
/// Whether a <see cref="MemoryPlan"/> fits the memory it may use (this machine's MemTotal minus a margin, or a
/// budget), and if not, which changes would make it fit, each re-planned: activation checkpointing, bf16 compute,
/// bf16 weights, LoRA, fewer latent frames, smaller frames; and all of the first four together when no single one is
/// enough.
/// </summary>
public sealed record MemoryFit(long PlanBytes, long AvailableBytes, string AvailableSource, IReadOnlyList<FitOption> Options)
{
    public bool Fits => PlanBytes <= AvailableBytes;

    /// <summary>The margin left to the OS, the page cache and other processes: 1/16 of MemTotal, at least 1 GiB.</summary>
    public static long Margin(long memTotal) => Math.Max(1L << 30, memTotal / 16);

    /// <summary>This machine's MemTotal (/proc/meminfo), else what the .NET runtime sees as available.</summary>
    public static long MachineMemory()
    {
        try
        {
            var line = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
            if (line is not null) return long.Parse(line["MemTotal:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    }

    /// <summary>A size in bytes from "16GiB", "512MiB", "16G", "1.5 GiB" or "1000000" (binary units: K/M/G/T with or
    /// without "iB"); null when it is not one (or not positive).</summary>
    public static long? ParseSize(string text)
    {
        var m = System.Text.RegularExpressions.Regex.Match(text.Trim(), @"^([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGT])(?:iB)?|B)?$", System.Text.RegularExpressions.RegexOptions.IgnoreCase);
        if (!m.Success) return null;
        double value = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        int shift = m.Groups[2].Success ? 10 * ("KMGT".IndexOf(char.ToUpperInvariant(m.Groups[2].Value[0])) + 1) : 0;
        double bytes = value * Math.Pow(2, shift);
        return bytes is >= 1 and < long.MaxValue ? (long)bytes : null;
    }

    /// <summary>
    /// Checks <paramref name="plan"/> (the plan of <paramref name="config"/>) against <paramref name="budget"/> or, when
    /// null, this machine; when it does not fit, re-plans each change that could help.
    /// </summary>
    public static MemoryFit Check(RunConfig config, MemoryPlan plan, long? budget, ModelFamilyRegistry? families = null)
    {
        families ??= ModelFamilyRegistry.Default;
        long available;
        string source;
        if (budget is { } b) (available, source) = (b, "--memory-budget");
        else
        {
            long total = MachineMemory();
            available = total - Margin(total);
            source = $"this machine: MemTotal {TrainingPlan.Bytes(total)} minus a {TrainingPlan.Bytes(Margin(total))} margin";
        }
        if (plan.TotalBytes <= available) return new MemoryFit(plan.TotalBytes, available, source, []);
        var files = TrainingPlan.ReadRoles(config, families);
        return new MemoryFit(plan.TotalBytes, available, source, Changes(config, plan, files, families, available));
    }

    private static List<FitOption> Changes(RunConfig config, MemoryPlan plan, IReadOnlyDictionary<string, TrainingPlan.RoleFiles> files,
        ModelFamilyRegistry families, long available)
    {
        var shape = plan.Shape;
        long Total(RunConfig c, DataShape? s = null) => TrainingPlan.Replan(c, families, files, s ?? shape).TotalBytes;
        FitOption Option(string what, (RunConfig Config, List<string> Sets) change, string? note = null)
        {
            long t = Total(change.Config);
            return new FitOption(what, change.Sets, t, t <= available, note);
        }

        var options = new List<FitOption>();
        var changes = new List<(RunConfig, List<string>)>();
        var t = config.Training;
        var trainable = config.Roles.Where(r => r.Value.Trainable).Select(r => r.Key).ToList();

        // Activation checkpointing (full) on every trainable role that has another policy or none.
        var ckptRoles = trainable.Where(r => ModelBase.RequestedCheckpointing(config.Roles[r], t) != "full").ToList();
        if (ckptRoles.Count > 0 && shape is not null)
            changes.Add(Add(options, "full activation checkpointing", Checkpointing(config, ckptRoles), Option));
        // bf16 compute.
        var master = Precision.Parse(t.DitPrecision);
        if (Precision.ResolveCompute(t.ComputePrecision, master, t.Device) != ScalarType.BFloat16 && shape is not null)
            changes.Add(Add(options, "bf16 compute", (config with { Training = t with { ComputePrecision = "bf16" } }, ["training.compute_precision=bf16"]), Option,
                Precision.NativeBf16(t.Device) ? null : $"{t.Device} has no native bf16: slower than fp32"));
        // bf16 weights (with LoRA: the frozen base).
        if (master == ScalarType.Float32)
            changes.Add(Add(options, "bf16 weights (training.dit_precision: masters, gradients and moments in bf16; a LoRA base frozen in bf16)",
                (config with { Training = t with { DitPrecision = "bf16" } }, ["training.dit_precision=bf16"]), Option));
        // LoRA rank 16 (upstream's default target modules) on every trainable role that trains its whole weights.
        var full = trainable.Where(r => !config.Roles[r].Lora.Enable && families.Get(config.Roles[r].Family ?? config.Recipe.Family!).IsLoraCapable is not null).ToList();
        if (full.Count > 0)
            changes.Add(Add(options, $"LoRA rank 16 on {string.Join(", ", full)} (default target modules)", Lora(config, full), Option));

        // A smaller shape with the recipe as it is.
        if (shape is not null) options.AddRange(SmallerShapes(shape, config, [], ""));

        // No single change is enough: all of checkpointing, bf16 compute, bf16 weights and LoRA together, and when
        // even that does not fit, the shape that fits with all of them.
        if (!options.Any(o => o.Fits) && changes.Count > 1)
        {
            var all = Combine(config, changes);
            var together = Option("all of the recipe changes above together", all);
            options.Add(together);
            if (!together.Fits && shape is not null) options.AddRange(SmallerShapes(shape, all.Item1, all.Item2, "all of the recipe changes above and "));
        }
        else if (!options.Any(o => o.Fits) && changes.Count == 1 && shape is not null)
            options.AddRange(SmallerShapes(shape, changes[0].Item1, changes[0].Item2, "the recipe change above and "));
        return options;

        // The largest number of latent frames, and the largest frame size (in eighths of the current one), that fit
        // with config c (reached from the recipe by the overrides sets).
        IEnumerable<FitOption> SmallerShapes(DataShape shape, RunConfig c, List<string> sets, string prefix)
        {
            var frames = Largest(1, shape.Frames - 1, n => Total(c, shape.Resized(n, shape.Height, shape.Width)) <= available);
            if (frames is { } n)
                yield return new FitOption($"{prefix}{n} latent frames instead of {shape.Frames}", [.. sets, $"training.data.num_latent_t={n}"],
                    Total(c, shape.Resized(n, shape.Height, shape.Width)), true);
            var eighths = Largest(1, 7, k => Total(c, Smaller(shape, k)) <= available);
            if (eighths is { } k)
            {
                var small = Smaller(shape, k);
                long ratio = config.Training.Data.NumHeight / Math.Max(1, shape.Height);   // pixels per latent when the recipe sets the size
                yield return new FitOption($"{prefix}frames of {small.Height}x{small.Width} latents instead of {shape.Height}x{shape.Width}",
                    config.Training.Data.NumHeight > 0 ? [.. sets, $"training.data.num_height={small.Height * ratio}", $"training.data.num_width={small.Width * ratio}"] : sets,
                    Total(c, small), true, "methods that read data latents need a dataset encoded at that size");
            }
        }
    }

    private static (RunConfig, List<string>) Add(List<FitOption> options, string what, (RunConfig, List<string>) change,
        Func<string, (RunConfig, List<string>), string?, FitOption> option, string? note = null)
    {
        options.Add(option(what, change, note));
        return change;
    }

    /// <summary>Applies each change's overrides in turn (they touch different keys).</summary>
    private static (RunConfig, List<string>) Combine(RunConfig config, List<(RunConfig Config, List<string> Sets)> changes)
    {
        var c = config;
        var sets = new List<string>();
        foreach (var (changed, s) in changes)
        {
            c = c with
            {
                Training = c.Training with
                {
                    ComputePrecision = changed.Training.ComputePrecision != config.Training.ComputePrecision ? changed.Training.ComputePrecision : c.Training.ComputePrecision,
                    DitPrecision = changed.Training.DitPrecision != config.Training.DitPrecision ? changed.Training.DitPrecision : c.Training.DitPrecision,
                    Model = changed.Training.Model != config.Training.Model ? changed.Training.Model : c.Training.Model,
                },
                Roles = c.Roles.ToDictionary(r => r.Key, r => changed.Roles[r.Key] != config.Roles[r.Key]
                    ? MergeRole(r.Value, changed.Roles[r.Key], config.Roles[r.Key]) : r.Value),
            };
            sets.AddRange(s);
        }
        return (c, sets);
    }

    private static RoleConfig MergeRole(RoleConfig current, RoleConfig changed, RoleConfig original) => current with
    {
        EnableGradientCheckpointingType = changed.EnableGradientCheckpointingType != original.EnableGradientCheckpointingType
            ? changed.EnableGradientCheckpointingType : current.EnableGradientCheckpointingType,
        Lora = changed.Lora != original.Lora ? changed.Lora : current.Lora,
    };

    private static (RunConfig, List<string>) Checkpointing(RunConfig config, List<string> roles)
    {
        var sets = new List<string>();
        var c = config;
        // A role's own type wins over training.model's: set it where the role has one, else training.model's.
        var own = roles.Where(r => config.Roles[r].EnableGradientCheckpointingType is not null).ToList();
        if (own.Count < roles.Count)
        {
            c = c with { Training = c.Training with { Model = c.Training.Model with { EnableGradientCheckpointingType = "full" } } };
            sets.Add("training.model.enable_gradient_checkpointing_type=full");
        }
        foreach (var r in own) sets.Add($"roles.{r}.enable_gradient_checkpointing_type=full");
        c = c with { Roles = c.Roles.ToDictionary(kv => kv.Key, kv => own.Contains(kv.Key) ? kv.Value with { EnableGradientCheckpointingType = "full" } : kv.Value) };
        return (c, sets);
    }

    private static (RunConfig, List<string>) Lora(RunConfig config, List<string> roles)
    {
        var lora = new LoraOptions { Enable = true, Rank = 16 };
        var c = config with { Roles = config.Roles.ToDictionary(kv => kv.Key, kv => roles.Contains(kv.Key) ? kv.Value with { Lora = lora } : kv.Value) };
        return (c, roles.SelectMany(r => new[] { $"roles.{r}.lora.enable=true", $"roles.{r}.lora.rank=16" }).ToList());
    }

    /// <summary>Height and width scaled to <paramref name="eighths"/>/8 (at least 2 latents each).</summary>
    private static DataShape Smaller(DataShape s, long eighths) =>
        s.Resized(s.Frames, Math.Max(2, s.Height * eighths / 8 / 2 * 2), Math.Max(2, s.Width * eighths / 8 / 2 * 2));

    /// <summary>The largest n in [lo, hi] with <paramref name="fits"/> (monotone: fits for small n), or null.</summary>
    private static long? Largest(long lo, long hi, Func<long, bool> fits)
    {
        if (hi < lo || !fits(lo)) return null;
        while (lo < hi)
        {
            long mid = (lo + hi + 1) / 2;
            if (fits(mid)) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    public string Format()
    {
        var sb = new StringBuilder();
        string where = $"{TrainingPlan.Bytes(AvailableBytes)} ({AvailableSource})";
        if (Fits)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"memory: fits: {TrainingPlan.Bytes(PlanBytes)} of {where}");
            return sb.ToString();
        }
        sb.AppendLine(CultureInfo.InvariantCulture, $"memory: does not fit: {TrainingPlan.Bytes(PlanBytes)} needed, {where}");
        if (Options.Count == 0) sb.AppendLine("  no change the plan knows of makes it fit");
        else sb.AppendLine("  re-planned with one change each:");
        foreach (var o in Options)
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"  - {o.What}: {TrainingPlan.Bytes(o.TotalBytes)}, {(o.Fits ? "fits" : "does not fit")}" +
                $"{(o.Overrides.Count > 0 ? "  (" + string.Join(" ", o.Overrides.Select(s => "--set " + s)) + ")" : "")}{(o.Note is null ? "" : $"; {o.Note}")}");
        return sb.ToString();
    }
}

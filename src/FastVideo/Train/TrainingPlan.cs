using System.Globalization;
using System.Text;
using FastVideo.Models.Vae;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;

namespace FastVideo.Train;

/// <summary>One role's line of the dry-run plan; memory in bytes.</summary>
public sealed record RolePlan(string Role, string Family, bool Trainable, long Parameters, long TrainableParameters,
    long WeightBytes, long GradBytes, long OptimizerBytes, long? ActivationBytes, string? Checkpointing = null);
// With LoRA, TrainableParameters, GradBytes and OptimizerBytes count the float32 adapters only.

/// <summary>
/// What <c>fastvideo train --dry-run</c> prints: per role its family, parameter counts and a memory estimate
/// (weights, gradients, AdamW moments, and a rough activation estimate where the family's shape is known).
/// </summary>
public static class TrainingPlan
{
    public static IReadOnlyList<RolePlan> Build(TrainingMethod method)
    {
        var plans = new List<RolePlan>();
        foreach (var (role, model) in method.Roles)
        {
            var ps = model.Transformer.parameters().ToList();
            long total = ps.Sum(p => p.numel());
            long weights = ps.Sum(p => p.numel() * p.element_size());
            var tps = ps.Where(p => p.requires_grad).ToList();
            long trainable = tps.Sum(p => p.numel());
            long grads = tps.Sum(p => p.numel() * p.element_size());
            long optim = 2 * grads;   // exp_avg and exp_avg_sq in the parameter dtype
            plans.Add(new RolePlan(role, model.Context.Family.Name, model.Trainable, total, trainable, weights, grads, optim,
                model.ActivationBytes(method.Training), model.CheckpointingType));
        }
        return plans;
    }

    /// <summary>
    /// The plan without building anything heavy: the method's role checks, then per role the parameter count and
    /// dtype read from the safetensors headers (no tensor data is read) and the transformer config for activations.
    /// </summary>
    public static IReadOnlyList<RolePlan> BuildFromConfig(Configs.RunConfig config, ModelFamilyRegistry? families = null, MethodRegistry? methods = null)
    {
        families ??= ModelFamilyRegistry.Default;
        (methods ?? MethodRegistry.Default).Get(config.Recipe.Method).CheckRoles(config);
        TrainingBuilder.CheckSharedLatentSpace(config, families);
        int bytes = Configs.Precision.BytesPerValue(config.Training.DitPrecision);
        var plans = new List<RolePlan>();
        foreach (var (role, rc) in config.Roles)
        {
            var family = rc.Family ?? config.Recipe.Family!;
            var folder = Weights.DiffusersModelFolder.Resolve(rc.InitFrom);
            var headers = folder.WeightFiles.SelectMany(f => Weights.SafeTensors.ReadHeader(f)).ToList();
            long total = headers.Sum(h => h.Value.NumElements);
            long weights = total * bytes;
            long trainable = rc.Trainable ? total : 0;
            long trainableBytes = trainable * bytes;
            var plugin = families.Get(family);
            if (rc.Lora.Enable)
            {
                // Float32 adapters A [r, in] and B [out, r] on the chosen layers; the base is frozen.
                var capable = plugin.IsLoraCapable ?? throw new UserError($"roles.{role}.lora.enable: the '{family}' family does not support LoRA");
                var layers = headers.Where(h => h.Key.EndsWith(".weight", StringComparison.Ordinal) && h.Value.Shape.Length == 2)
                    .ToDictionary(h => h.Key[..^".weight".Length], h => h.Value.Shape);
                var chosen = FastVideo.Models.Layers.LoraAdapters.SelectTargets(layers.Keys.Where(capable).Order(StringComparer.Ordinal).ToList(), rc.Lora, $"roles.{role}.lora");
                trainable = chosen.Sum(l => (long)rc.Lora.Rank!.Value * (layers[l][0] + layers[l][1]));
                trainableBytes = trainable * 4;
                total += trainable;
                weights += trainableBytes;
            }
            var checkpointing = ModelBase.RequestedCheckpointing(rc, config.Training);
            long? act = !rc.Trainable ? 0
                : plugin.EstimateActivations?.Invoke(new ActivationQuery(folder.ReadConfig(), config.Training,
                    VaeConfig.FromModelFolder(folder, plugin.Defaults.Vae), checkpointing));   // the VAE as the model loads it
            plans.Add(new RolePlan(role, family, rc.Trainable, total, trainable, weights, trainableBytes, 2 * trainableBytes, act, checkpointing));
        }
        return plans;
    }

    public static string Format(IReadOnlyList<RolePlan> plans, string method)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"method: {method}");
        sb.AppendLine("role       family  trainable  params        trainable     weights     grads       optimizer   activations*");
        long sum = 0;
        foreach (var p in plans)
        {
            long roleTotal = p.WeightBytes + p.GradBytes + p.OptimizerBytes + (p.ActivationBytes ?? 0);
            sum += roleTotal;
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"{p.Role,-10} {p.Family,-7} {(p.Trainable ? "yes" : "no"),-10} {p.Parameters,-13:N0} {p.TrainableParameters,-13:N0} {Bytes(p.WeightBytes),-11} {Bytes(p.GradBytes),-11} {Bytes(p.OptimizerBytes),-11} {(p.ActivationBytes is long a ? Bytes(a) : "unknown")}{(p.Checkpointing is { } ck ? $" ({ck} checkpointing)" : "")}");
        }
        sb.AppendLine(CultureInfo.InvariantCulture, $"total memory estimate: {Bytes(sum)}");
        sb.AppendLine("* activations: rough estimate for one micro-batch, with the role's activation checkpointing if any");
        return sb.ToString();
    }

    public static string Bytes(long b) => b switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{b / (double)(1L << 30):0.00} GiB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{b / (double)(1L << 20):0.00} MiB"),
        >= 1L << 10 => string.Create(CultureInfo.InvariantCulture, $"{b / (double)(1L << 10):0.00} KiB"),
        _ => $"{b} B",
    };
}

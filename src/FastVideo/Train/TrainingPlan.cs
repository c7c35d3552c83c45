using System.Globalization;
using System.Text;
using FastVideo.Models.Vae;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;

namespace FastVideo.Train;

/// <summary>One role's line of the dry-run plan; memory in bytes.</summary>
public sealed record RolePlan(string Role, string Family, bool Trainable, long Parameters, long TrainableParameters,
    long WeightBytes, long GradBytes, long OptimizerBytes, long? ActivationBytes);

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
                ActivationEstimate(model, method.Training)));
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
        int bytes = WanModel.ParsePrecision(config.Training.DitPrecision) == TorchSharp.torch.ScalarType.Float32 ? 4 : 2;
        var plans = new List<RolePlan>();
        foreach (var (role, rc) in config.Roles)
        {
            var family = rc.Family ?? config.Recipe.Family!;
            var folder = Weights.DiffusersModelFolder.Resolve(rc.InitFrom);
            long total = folder.WeightFiles.Sum(f => Weights.SafeTensors.ReadHeader(f).Values.Sum(i => i.NumElements));
            long weights = total * bytes;
            long trainable = rc.Trainable ? total : 0;
            long? act = null;
            if (!rc.Trainable) act = 0;
            else if (family is "wan" or "wan_causal")
                act = WanActivations(FastVideo.Models.Dits.WanTransformerConfig.FromJson(folder.ReadConfig(), folder.ConfigPath), config.Training, bytes,
                    VaeConfig.FromModelFolder(folder, families.Get(family).Defaults.Vae).SpatialCompressionRatio); // as the model loads it
            plans.Add(new RolePlan(role, family, rc.Trainable, total, trainable, weights, trainable * bytes, 2 * trainable * bytes, act));
        }
        return plans;
    }

    /// <summary>
    /// Rough activations kept for backward by a Wan transformer on one batch: per layer about N·(14·D + 2·F) values
    /// (norms, q/k/v/out, cross-attention, FFN) plus the heads·N² attention probabilities of an eager attention.
    /// Frozen roles keep none (they run without grad). Null when the family or data shape is unknown.
    /// </summary>
    private static long? ActivationEstimate(ModelBase model, Configs.TrainingConfig training)
    {
        if (!model.Trainable || model is not WanModel wan) return model.Trainable ? null : 0;
        int bytes = WanModel.ParsePrecision(training.DitPrecision) == TorchSharp.torch.ScalarType.Float32 ? 4 : 2;
        return WanActivations(wan.WanTransformer.Config, training, bytes, wan.Vae.SpatialCompressionRatio);
    }

    /// <param name="spatialCompression">The VAE's pixels per latent (num_height/num_width are in pixels).</param>
    private static long? WanActivations(FastVideo.Models.Dits.WanTransformerConfig c, Configs.TrainingConfig training, int bytes, int spatialCompression)
    {
        var d = training.Data;
        if (d.NumLatentT <= 0 || d.NumHeight <= 0 || d.NumWidth <= 0) return null;
        int s = Math.Max(1, spatialCompression);
        long tokens = (long)d.TrainBatchSize * (d.NumLatentT / c.PatchSize[0]) * (d.NumHeight / s / c.PatchSize[1]) * (d.NumWidth / s / c.PatchSize[2]);
        long perLayer = tokens * (14L * c.InnerDim + 2L * c.FfnDim) + (long)c.NumAttentionHeads * tokens * tokens / Math.Max(1, d.TrainBatchSize);
        return perLayer * c.NumLayers * bytes;
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
                $"{p.Role,-10} {p.Family,-7} {(p.Trainable ? "yes" : "no"),-10} {p.Parameters,-13:N0} {p.TrainableParameters,-13:N0} {Bytes(p.WeightBytes),-11} {Bytes(p.GradBytes),-11} {Bytes(p.OptimizerBytes),-11} {(p.ActivationBytes is long a ? Bytes(a) : "unknown")}");
        }
        sb.AppendLine(CultureInfo.InvariantCulture, $"total memory estimate: {Bytes(sum)}");
        sb.AppendLine("* activations: rough estimate for one micro-batch without activation checkpointing");
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

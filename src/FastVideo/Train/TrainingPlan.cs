using System.Globalization;
using System.Text;
using FastVideo.Configs;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using static TorchSharp.torch;

namespace FastVideo.Train;

/// <summary>One role's line of the dry-run plan; memory in bytes.</summary>
/// <remarks>With LoRA, TrainableParameters, GradBytes and OptimizerBytes count the float32 adapters only.</remarks>
public sealed record RolePlan(string Role, string Family, bool Trainable, long Parameters, long TrainableParameters,
    long WeightBytes, long GradBytes, long OptimizerBytes, ActivationEstimate? Activations, string? Checkpointing = null)
{
    /// <summary>Weights, gradients, optimizer state and the activations' peak.</summary>
    public long TotalBytes => WeightBytes + GradBytes + OptimizerBytes + (Activations?.Peak ?? 0);
}

/// <summary>
/// The memory a training run needs at its peak, as <c>fastvideo train --dry-run</c> prints it: per role weights,
/// gradients, AdamW moments and activations (<see cref="RolePlan"/>), plus what the process holds besides the
/// models: its baseline (the .NET runtime and LibTorch), the data loader's buffers, the EMA shadows, and the memory
/// the allocator keeps after a step's tensors are freed. Roles are summed: the graphs of a method's trainable roles
/// are alive together before backward (DMD2's student and critic).
/// </summary>
public sealed record MemoryPlan(string Method, IReadOnlyList<RolePlan> Roles, DataShape? Shape, long LoaderBytes, long EmaBytes, string? DataProblem = null)
{
    /// <summary>
    /// Peak RSS of a training process that holds next to nothing: the .NET runtime, the CLI, LibTorch and its thread
    /// pools after a first forward and backward, the parquet reader (bench/MemoryPlanBench, case baseline).
    /// </summary>
    public const long BaselineBytes = 248L << 20;

    /// <summary>Freed memory the allocator keeps on top of the live tensors (<see cref="AllocatorRetention"/>): the
    /// largest role's, as the roles of a step reuse each other's freed memory (measured: DMD2's student and critic).</summary>
    public long AllocatorBytes => Roles.Select(r => r.Activations?.Retained ?? 0).DefaultIfEmpty().Max();

    public long TotalBytes => BaselineBytes + Roles.Sum(r => r.TotalBytes) + LoaderBytes + EmaBytes + AllocatorBytes;

    /// <summary>Whether every role has an activation estimate.</summary>
    public bool ActivationsKnown => Roles.All(r => r.Activations is not null);
}

/// <summary>
/// Builds the <see cref="MemoryPlan"/> of a recipe: from the recipe alone (<see cref="BuildFromConfig"/>, what the dry
/// run does: configs and safetensors headers, no weights) or from built models (<see cref="Build"/>); both give the
/// same numbers. <see cref="Format"/> prints it; <see cref="MemoryFit"/> says whether it fits and what would.
/// </summary>
public static class TrainingPlan
{
    /// <summary>The plan of built models (their parameters as loaded).</summary>
    public static MemoryPlan Build(TrainingMethod method)
    {
        var config = method.Config;
        var student = method.Roles.TryGetValue("student", out var s) ? s : method.Roles.Values.First();
        var shape = DataShape.Resolve(config, student.Vae, student.Context.Family.Defaults.TextLen, TextDim(student.TransformerConfig), out var problem);
        var plans = new List<RolePlan>();
        foreach (var (role, model) in method.Roles)
        {
            var ps = model.Transformer.parameters().ToList();
            long total = ps.Sum(p => p.numel());
            long weights = ps.Sum(p => p.numel() * p.element_size());
            var tps = ps.Where(p => p.requires_grad).ToList();
            long trainable = tps.Sum(p => p.numel());
            long grads = tps.Sum(p => p.numel() * p.element_size());
            plans.Add(new RolePlan(role, model.Context.Family.Name, model.Trainable, total, trainable, weights, grads, 2 * grads,
                shape is null ? null : model.Activations(shape), model.CheckpointingType));
        }
        return Assemble(config, plans, shape) with { DataProblem = problem };
    }

    /// <summary>
    /// The plan without building anything heavy: the method's role checks, then per role the parameter count and
    /// dtype read from the safetensors headers (no tensor data is read) and the transformer config for activations.
    /// The data shape comes from the recipe, else the dataset's first row (<see cref="DataShape.Resolve"/>).
    /// </summary>
    public static MemoryPlan BuildFromConfig(RunConfig config, ModelFamilyRegistry? families = null, MethodRegistry? methods = null)
    {
        families ??= ModelFamilyRegistry.Default;
        (methods ?? MethodRegistry.Default).Get(config.Recipe.Method).CheckRoles(config);
        TrainingBuilder.CheckSharedLatentSpace(config, families);
        var roles = ReadRoles(config, families);
        var shape = ResolveShape(config, families, roles, out var problem);
        return Replan(config, families, roles, shape) with { DataProblem = problem };
    }

    /// <summary>The data shape, read with the student's VAE and text defaults (the first role without a student).</summary>
    internal static DataShape? ResolveShape(RunConfig config, ModelFamilyRegistry families, IReadOnlyDictionary<string, RoleFiles> roles, out string? problem)
    {
        string name = config.Roles.ContainsKey("student") ? "student" : config.Roles.Keys.First();
        var family = families.Get(config.Roles[name].Family ?? config.Recipe.Family!);
        var vae = ModelBase.ResolveVae(config, roles[name].Folder, family.Defaults.Vae);
        return DataShape.Resolve(config, vae, family.Defaults.TextLen, TextDim(roles[name].TransformerConfig), out problem);
    }

    /// <summary>What a role's plan needs from its model folder: config.json and the safetensors headers.</summary>
    internal sealed record RoleFiles(Weights.DiffusersModelFolder Folder, System.Text.Json.Nodes.JsonObject TransformerConfig,
        IReadOnlyList<KeyValuePair<string, Weights.SafeTensorInfo>> Headers);

    internal static Dictionary<string, RoleFiles> ReadRoles(RunConfig config, ModelFamilyRegistry families) =>
        config.Roles.ToDictionary(kv => kv.Key, kv =>
        {
            var folder = Weights.DiffusersModelFolder.Resolve(kv.Value.InitFrom);
            return new RoleFiles(folder, folder.ReadConfig(), folder.WeightFiles.SelectMany(f => Weights.SafeTensors.ReadHeader(f)).ToList());
        });

    /// <summary>The plan of <paramref name="config"/> for the given files and data shape (also the plan's advice).</summary>
    internal static MemoryPlan Replan(RunConfig config, ModelFamilyRegistry families, IReadOnlyDictionary<string, RoleFiles> files, DataShape? shape)
    {
        var master = Precision.Parse(config.Training.DitPrecision);
        int bytes = Precision.BytesPerValue(config.Training.DitPrecision);
        var compute = Precision.ResolveCompute(config.Training.ComputePrecision, master, config.Training.Device);
        var plans = new List<RolePlan>();
        foreach (var (role, rc) in config.Roles)
        {
            var family = rc.Family ?? config.Recipe.Family!;
            var f = files[role];
            long total = f.Headers.Sum(h => h.Value.NumElements);
            long weights = total * bytes;
            long trainable = rc.Trainable ? total : 0;
            long trainableBytes = trainable * bytes;
            var plugin = families.Get(family);
            if (rc.Lora.Enable)
            {
                // Float32 adapters A [r, in] and B [out, r] on the chosen layers; the base is frozen.
                var capable = plugin.IsLoraCapable ?? throw new UserError($"roles.{role}.lora.enable: the '{family}' family does not support LoRA");
                var layers = f.Headers.Where(h => h.Key.EndsWith(".weight", StringComparison.Ordinal) && h.Value.Shape.Length == 2)
                    .ToDictionary(h => h.Key[..^".weight".Length], h => h.Value.Shape);
                var chosen = FastVideo.Models.Layers.LoraAdapters.SelectTargets(layers.Keys.Order(StringComparer.Ordinal).ToList(), rc.Lora, $"roles.{role}.lora",
                    capable, plugin.UpstreamLayerName);
                trainable = chosen.Sum(l => (long)rc.Lora.Rank!.Value * (layers[l][0] + layers[l][1]));
                trainableBytes = trainable * 4;
                total += trainable;
                weights += trainableBytes;
            }
            var checkpointing = ModelBase.RequestedCheckpointing(rc, config.Training);
            var context = new ModelBuildContext(role, rc, config, plugin);
            var act = shape is null ? null
                : plugin.EstimateActivations?.Invoke(new ActivationQuery(context, f.TransformerConfig, shape, master, compute, checkpointing));
            plans.Add(new RolePlan(role, family, rc.Trainable, total, trainable, weights, trainableBytes, 2 * trainableBytes, act, checkpointing));
        }
        return Assemble(config, plans, shape);
    }

    private static MemoryPlan Assemble(RunConfig config, List<RolePlan> plans, DataShape? shape)
    {
        long ema = config.Callbacks.Any(c => c.Key == "ema") ? 4 * plans.Where(p => p.Role == "student").Sum(p => p.TrainableParameters) : 0;
        return new MemoryPlan(config.Recipe.Method ?? "?", plans, shape, LoaderBytes(config, shape), ema);
    }

    /// <summary>
    /// The data loader's memory: its row-group cache (at most <see cref="Data.DatasetOptions.CacheBytes"/>, at most the
    /// dataset's files), the prefetched batches and the one in use (float32 latents, text and mask), and the batch the
    /// model prepares from it (latents, noise, noisy latents, text in the master dtype).
    /// </summary>
    private static long LoaderBytes(RunConfig config, DataShape? shape)
    {
        var d = config.Training.Data;
        if (d.DataPath.Count == 0 || shape is null) return 0;
        long files = d.DataPath.SelectMany(s => ParquetFilesOrNone(s.Path)).Distinct().Sum(f => new FileInfo(f).Length);
        long cache = Math.Min(new Data.DatasetOptions().CacheBytes, files);
        long text = shape.Batch * shape.TextTokens * shape.TextDim;
        long batch = 4 * (shape.LatentValues + text + shape.Batch * shape.TextTokens);
        int m = Precision.BytesPerValue(config.Training.DitPrecision);
        long prepared = m * (3 * shape.LatentValues + text);
        return cache + (d.PrefetchBatches + 1) * batch + prepared;
    }

    /// <summary>The dataset's files; none when it is not there yet (a dry run before preprocessing).</summary>
    private static IReadOnlyList<string> ParquetFilesOrNone(string path)
    {
        try { return Data.ParquetVideoDataset.FindParquetFiles(path); }
        catch (UserError) { return []; }
    }

    private static long TextDim(System.Text.Json.Nodes.JsonObject transformerConfig) =>
        transformerConfig["text_dim"] is { } t ? (long)t : 4096;

    public static string Format(MemoryPlan plan, MemoryFit? fit = null)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"method: {plan.Method}");
        sb.AppendLine(plan.Shape is { } s ? $"data: {s} (from {s.Source})"
            : $"data: unknown ({plan.DataProblem ?? "no shape"}): activations are not counted");
        sb.AppendLine("role       family      trainable  params        trainable     weights     grads       optimizer   activations*");
        foreach (var p in plan.Roles)
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"{p.Role,-10} {p.Family,-11} {(p.Trainable ? "yes" : "no"),-10} {p.Parameters,-13:N0} {p.TrainableParameters,-13:N0} {Bytes(p.WeightBytes),-11} {Bytes(p.GradBytes),-11} {Bytes(p.OptimizerBytes),-11} {(p.Activations is { } a ? Bytes(a.Peak) : "unknown")}{(p.Checkpointing is { } ck ? $" ({ck} checkpointing)" : "")}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"{"process baseline (.NET runtime, LibTorch)",-52} {Bytes(MemoryPlan.BaselineBytes)}");
        if (plan.LoaderBytes > 0)
            sb.AppendLine(CultureInfo.InvariantCulture, $"{"data loader (row-group cache, batches in flight)",-52} {Bytes(plan.LoaderBytes)}");
        if (plan.EmaBytes > 0)
            sb.AppendLine(CultureInfo.InvariantCulture, $"{"EMA shadows of the student (fp32)",-52} {Bytes(plan.EmaBytes)}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"{"freed memory the allocator keeps (glibc)",-52} {Bytes(plan.AllocatorBytes)}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"total memory estimate: {Bytes(plan.TotalBytes)}");
        sb.AppendLine("* activations: peak for one micro-batch (kept for backward plus backward's worst moment):");
        foreach (var p in plan.Roles)
            sb.AppendLine(CultureInfo.InvariantCulture, $"  {p.Role}: {(p.Activations is { } a ? $"{a.Note}; kept after the forward {Bytes(a.Kept)}" : p.Family + " has no activation estimate")}");
        if (fit is not null) sb.Append(fit.Format());
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

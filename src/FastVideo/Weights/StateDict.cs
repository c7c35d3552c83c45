using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Weights;

/// <summary>Loading weight files into name->tensor maps, strict loading into modules, and saving modules.</summary>
public static class StateDict
{
    /// <summary>How many names of each kind an error message lists before summarising the rest.</summary>
    const int ListCap = 20;

    /// <summary>All weights of a resolved model component: its single file, or every shard its index names.</summary>
    public static Dictionary<string, Tensor> LoadWeights(DiffusersModelFolder folder, Device? device = null) =>
        WeightSet.FromModelFolder(folder).Load(device);

    /// <summary>
    /// Override weights: a .safetensors file, a *.safetensors.index.json, or a folder (its one index if it has
    /// one, else every *.safetensors directly inside it).
    /// </summary>
    public static Dictionary<string, Tensor> LoadSafetensorsFileOrFolder(string path, Device? device = null) =>
        WeightSet.FromFileOrFolder(path).Load(device);

    /// <summary>
    /// Strict load: the weights must name exactly the module's state (parameters and persistent buffers) with the
    /// same shapes. Otherwise one <see cref="UserError"/> names <paramref name="source"/> and lists every missing,
    /// unexpected and mis-shaped key, and the module is left untouched. Values are converted to each parameter's
    /// dtype and device.
    /// </summary>
    public static void LoadInto(nn.Module module, IReadOnlyDictionary<string, Tensor> weights, string source)
    {
        // state_dict() hands back the module's own tensors (no copies), so copy_ into them updates the module.
        var target = module.state_dict();
        CheckFits(module, target, weights.ToDictionary(kv => kv.Key, kv => new Spec(kv.Value.shape, kv.Value.dtype), StringComparer.Ordinal), source);

        using var noGrad = torch.no_grad();
        foreach (var (key, dst) in target)
            dst.copy_(weights[key]);   // copy_ converts dtype and moves across devices
    }

    /// <summary>
    /// Strict load streamed from the files: the same checks and messages as
    /// <see cref="LoadInto(nn.Module, IReadOnlyDictionary{string, Tensor}, string)"/>, made on the headers before any
    /// tensor data is read (so on such an error nothing was loaded); then each file's bytes go straight into the
    /// module's own tensors, converted to their dtype on the way (see <see cref="TensorStreamer"/>). No tensor of
    /// the weights is ever held in memory. A read that fails midway (a file shortened or removed since its header
    /// was read, a disk error) leaves the module partly loaded.
    /// </summary>
    public static void LoadInto(nn.Module module, WeightSet weights, string source)
    {
        var target = module.state_dict();
        if (target.Values.Any(t => t.device_type == DeviceType.META))
            throw new ArgumentException("The module has tensors on the meta device (no memory); use StateDict.Materialize for it.", nameof(module));
        CheckFits(module, target, Specs(weights), source);

        TensorStreamer.Fill(target.Select(kv => new TensorStreamer.Job(kv.Key, weights.Entries[kv.Key], kv.Value)).ToList());
    }

    /// <summary>
    /// Gives a module built on the meta device (shapes and dtypes only: no memory, no random initialisation) its
    /// weights: after the checks of <see cref="LoadInto(nn.Module, WeightSet, string)"/>, each parameter and
    /// persistent buffer is allocated once on the CPU, floating-point ones in <paramref name="floatDtype"/> (integer
    /// and bool ones keep their dtype), filled from the files and put into the module in place of its meta tensor.
    /// The module is never held twice: peak memory is the loaded module plus a few small staging buffers. On any
    /// error the module keeps its meta tensors (and is of no use: dispose it).
    /// </summary>
    public static void Materialize(nn.Module module, WeightSet weights, string source, ScalarType floatDtype)
    {
        if (!torch.is_floating_point(floatDtype))
            throw new ArgumentException($"expected a floating-point dtype, got {floatDtype}", nameof(floatDtype));
        var target = module.state_dict();
        var notMeta = target.Where(kv => kv.Value.device_type != DeviceType.META).Select(kv => kv.Key).ToList();
        if (notMeta.Count > 0)
            throw new ArgumentException(
                $"Materialize expects a module built on the meta device; {notMeta.Count} of its tensors are not: {Cap(notMeta)}.", nameof(module));
        // Non-persistent buffers are not in the files: a meta one would stay without memory.
        var transient = ModuleTensors.AllBuffers(module).Where(b => !b.Persistent).Select(b => b.Name).ToList();
        if (transient.Count > 0)
            throw new ArgumentException(
                $"The module has buffers outside its state ({Cap(transient)}), which no weights file holds; build it on the CPU and use LoadInto.",
                nameof(module));
        CheckFits(module, target, Specs(weights), source);

        var fresh = new Dictionary<string, Tensor>(target.Count, StringComparer.Ordinal);
        try
        {
            foreach (var (key, meta) in target)
            {
                var dtype = torch.is_floating_point(meta.dtype) ? floatDtype : meta.dtype;
                var t = torch.empty(meta.shape, dtype: dtype, device: torch.CPU).DetachFromDisposeScope();
                fresh[key] = t;
                TensorStreamer.AdviseHugePages(t);
            }
            TensorStreamer.Fill(fresh.Select(kv => new TensorStreamer.Job(kv.Key, weights.Entries[kv.Key], kv.Value)).ToList());
        }
        catch
        {
            foreach (var t in fresh.Values) t.Dispose();
            throw;
        }

        var modules = module.named_modules().ToDictionary(nm => nm.name, nm => nm.module, StringComparer.Ordinal);
        foreach (var (key, t) in fresh)
            ModuleTensors.Replace(module, modules, key, t);
        var left = ModuleTensors.Unmaterialized(module);
        if (left.Count > 0)
            throw new InvalidOperationException(
                $"{module.GetType().Name}: after loading, {left.Count} tensor(s) are still on the meta device or disposed: {Cap(left)}.");
    }

    readonly record struct Spec(long[] Shape, ScalarType Dtype);

    static Dictionary<string, Spec> Specs(WeightSet weights) =>
        weights.Entries.ToDictionary(kv => kv.Key, kv => new Spec(kv.Value.Shape, kv.Value.ScalarType), StringComparer.Ordinal);

    /// <summary>The strict checks: one <see cref="UserError"/> listing every missing, unexpected, mis-shaped and
    /// wrong-kind key; nothing is loaded when it is thrown.</summary>
    static void CheckFits(nn.Module module, Dictionary<string, Tensor> target, Dictionary<string, Spec> weights, string source)
    {
        var missing = target.Keys.Where(k => !weights.ContainsKey(k)).ToList();
        var unexpected = weights.Keys.Where(k => !target.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var mismatched = target.Where(kv => weights.TryGetValue(kv.Key, out var w) && !kv.Value.shape.SequenceEqual(w.Shape))
            .Select(kv => $"{kv.Key}: model expects {Shape(kv.Value.shape)}, weights have {Shape(weights[kv.Key].Shape)}")
            .ToList();

        // copy_ would convert an integer tensor into a float parameter without a word: a dtype of another kind
        // (integer or bool where a float is expected, or the reverse) means the file is not these weights.
        var wrongKind = target.Where(kv => weights.TryGetValue(kv.Key, out var w) && Kind(kv.Value.dtype) != Kind(w.Dtype))
            .Select(kv => $"{kv.Key}: model expects {Kind(kv.Value.dtype)} ({kv.Value.dtype}), weights have {weights[kv.Key].Dtype}")
            .ToList();

        if (missing.Count + unexpected.Count + mismatched.Count + wrongKind.Count > 0)
        {
            var sb = new StringBuilder();
            sb.Append($"The weights from '{source}' do not fit the model ({module.GetType().Name}, {target.Count} tensors; ")
              .Append($"the weights have {weights.Count}): {missing.Count} missing, {unexpected.Count} unexpected, ")
              .Append($"{mismatched.Count} with a different shape, {wrongKind.Count} with a dtype of another kind. Nothing was loaded.");
            if (missing.Count > 0) sb.Append($"\n  missing ({missing.Count}): {Cap(missing)}");
            if (unexpected.Count > 0) sb.Append($"\n  unexpected ({unexpected.Count}): {Cap(unexpected)}");
            if (mismatched.Count > 0) sb.Append($"\n  shape mismatch ({mismatched.Count}):\n    {Cap(mismatched, "\n    ")}");
            if (wrongKind.Count > 0) sb.Append($"\n  dtype mismatch ({wrongKind.Count}):\n    {Cap(wrongKind, "\n    ")}");
            throw new UserError(sb.ToString());
        }
    }

    /// <summary>
    /// Saves the module's state (parameters and persistent buffers). With <paramref name="dtype"/>, floating-point
    /// tensors are converted to it; integer and bool tensors keep their type.
    /// </summary>
    public static void SaveModule(nn.Module module, string path, ScalarType? dtype = null,
                                  IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var scope = torch.NewDisposeScope();
        var state = module.state_dict()
            .Select(kv => KeyValuePair.Create(kv.Key,
                dtype is ScalarType dt && kv.Value.is_floating_point() && kv.Value.dtype != dt ? kv.Value.detach().to(dt) : kv.Value));
        SafeTensors.Save(path, state, metadata);
    }

    static string Kind(ScalarType t) =>
        torch.is_floating_point(t) ? "floating point" : torch.is_complex(t) ? "complex" : t == ScalarType.Bool ? "bool" : "integer";

    static string Shape(long[] shape) => "[" + string.Join(", ", shape) + "]";

    internal static string Cap(IReadOnlyList<string> items, string separator = ", ") =>
        string.Join(separator, items.Take(ListCap)) + (items.Count > ListCap ? $"{separator}... and {items.Count - ListCap} more" : "");
}

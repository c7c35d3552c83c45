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
    public static Dictionary<string, Tensor> LoadWeights(DiffusersModelFolder folder, Device? device = null)
    {
        if (folder.IndexPath is not null)
            return LoadByIndex(folder.IndexPath, device);
        return LoadFiles(folder.WeightFiles, device, $"model '{folder.Source}' ({folder.ComponentFolder})");
    }

    /// <summary>
    /// Override weights: a .safetensors file, a *.safetensors.index.json, or a folder (its one index if it has
    /// one, else every *.safetensors directly inside it).
    /// </summary>
    public static Dictionary<string, Tensor> LoadSafetensorsFileOrFolder(string path, Device? device = null)
    {
        if (File.Exists(path))
        {
            return path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase)
                ? LoadByIndex(path, device)
                : SafeTensors.Load(path, device);
        }
        if (!Directory.Exists(path))
            throw new UserError($"Weights path '{path}' does not exist; expected a .safetensors file or a folder of them.");

        var indexes = Directory.GetFiles(path, "*.safetensors.index.json").Order(StringComparer.Ordinal).ToList();
        if (indexes.Count > 1)
            throw new UserError(
                $"Weights folder '{path}' has several shard indexes ({string.Join(", ", indexes.Select(Path.GetFileName))}); " +
                "point at the one to load.");
        if (indexes.Count == 1)
            return LoadByIndex(indexes[0], device);

        var files = Directory.GetFiles(path, "*.safetensors").Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0)
            throw new UserError($"Weights folder '{path}' contains no .safetensors files.");
        return LoadFiles(files, device, $"weights folder '{path}'");
    }

    /// <summary>Loads exactly the keys an index lists, after checking every shard exists and holds its keys.</summary>
    static Dictionary<string, Tensor> LoadByIndex(string indexPath, Device? device)
    {
        var index = ShardIndex.Read(indexPath);
        var missingShards = index.ShardFiles.Where(f => !File.Exists(Path.Combine(index.Folder, f))).ToList();
        if (missingShards.Count > 0)
            throw new UserError(
                $"The shard index '{indexPath}' names {missingShards.Count} shard file(s) that are not in '{index.Folder}': " +
                $"{Cap(missingShards)} (incomplete download?).");

        var keysByShard = index.WeightMap.GroupBy(kv => kv.Value, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.Select(kv => kv.Key).ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal);

        // Check every header before reading any tensor data, so a broken checkpoint fails fast and whole.
        var absent = new List<string>();
        foreach (var shard in index.ShardFiles)
        {
            var header = SafeTensors.ReadHeader(Path.Combine(index.Folder, shard));
            absent.AddRange(keysByShard[shard].Where(k => !header.ContainsKey(k)).Order(StringComparer.Ordinal)
                                              .Select(k => $"{k} (in {shard})"));
        }
        if (absent.Count > 0)
            throw new UserError(
                $"The shard index '{indexPath}' lists {absent.Count} tensor(s) that their shard does not contain: {Cap(absent)}.");

        // The index is the authority: tensors a shard holds but the index does not list are not loaded.
        var result = new Dictionary<string, Tensor>(index.WeightMap.Count, StringComparer.Ordinal);
        try
        {
            foreach (var shard in index.ShardFiles)
            {
                var keys = keysByShard[shard];
                foreach (var (k, t) in SafeTensors.Load(Path.Combine(index.Folder, shard), device, keys.Contains))
                    result[k] = t;
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>Merges several files; a name present in two files is an error (which copy would win is arbitrary).</summary>
    static Dictionary<string, Tensor> LoadFiles(IReadOnlyList<string> files, Device? device, string what)
    {
        if (files.Count == 1) return SafeTensors.Load(files[0], device);

        var owner = new Dictionary<string, string>(StringComparer.Ordinal);
        var duplicates = new List<string>();
        foreach (var f in files)
            foreach (var k in SafeTensors.ReadHeader(f).Keys)
                if (!owner.TryAdd(k, f))
                    duplicates.Add($"{k} (in {Path.GetFileName(owner[k])} and {Path.GetFileName(f)})");
        if (duplicates.Count > 0)
            throw new UserError($"The weight files of {what} define {duplicates.Count} tensor(s) more than once: {Cap(duplicates)}.");

        var result = new Dictionary<string, Tensor>(owner.Count, StringComparer.Ordinal);
        try
        {
            foreach (var f in files)
                foreach (var (k, t) in SafeTensors.Load(f, device))
                    result[k] = t;
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

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

        var missing = target.Keys.Where(k => !weights.ContainsKey(k)).ToList();
        var unexpected = weights.Keys.Where(k => !target.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var mismatched = target.Where(kv => weights.TryGetValue(kv.Key, out var w) && !kv.Value.shape.SequenceEqual(w.shape))
            .Select(kv => $"{kv.Key}: model expects {Shape(kv.Value.shape)}, weights have {Shape(weights[kv.Key].shape)}")
            .ToList();

        // copy_ would convert an integer tensor into a float parameter without a word: a dtype of another kind
        // (integer or bool where a float is expected, or the reverse) means the file is not these weights.
        var wrongKind = target.Where(kv => weights.TryGetValue(kv.Key, out var w) && Kind(kv.Value.dtype) != Kind(w.dtype))
            .Select(kv => $"{kv.Key}: model expects {Kind(kv.Value.dtype)} ({kv.Value.dtype}), weights have {weights[kv.Key].dtype}")
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

        using var noGrad = torch.no_grad();
        foreach (var (key, dst) in target)
            dst.copy_(weights[key]);   // copy_ converts dtype and moves across devices
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

    static string Cap(IReadOnlyList<string> items, string separator = ", ") =>
        string.Join(separator, items.Take(ListCap)) + (items.Count > ListCap ? $"{separator}... and {items.Count - ListCap} more" : "");
}

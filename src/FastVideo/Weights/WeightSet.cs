using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Weights;

/// <summary>One tensor of a <see cref="WeightSet"/>: the file that holds it and where its bytes start.</summary>
/// <param name="File">The safetensors file.</param>
/// <param name="Info">Its header entry (dtype, shape, offsets within the data section).</param>
/// <param name="FileOffset">Absolute offset of the first byte in <paramref name="File"/>.</param>
public sealed record WeightEntry(string File, SafeTensorInfo Info, long FileOffset)
{
    /// <summary>The tensor's type (every entry of a <see cref="WeightSet"/> has a supported dtype).</summary>
    public ScalarType ScalarType => Info.ScalarType!.Value;
    public long[] Shape => Info.Shape;
    public long ByteLength => Info.ByteLength;
}

/// <summary>
/// The tensors of one or more safetensors files, located from their headers alone: no tensor data is read until
/// they are streamed into a module (<see cref="StateDict.LoadInto(nn.Module, WeightSet, string)"/>,
/// <see cref="StateDict.Materialize"/>) or loaded as tensors (<see cref="Load"/>). Building a set validates every
/// header, the shard index, duplicates between files and the dtypes, so a broken checkpoint fails before anything is
/// read and with the same messages as the tensor-returning loaders of <see cref="StateDict"/>.
/// </summary>
public sealed class WeightSet
{
    readonly Dictionary<string, WeightEntry> _entries;

    WeightSet(Dictionary<string, WeightEntry> entries, IReadOnlyList<string> files)
    {
        _entries = entries;
        Files = files;
    }

    /// <summary>Tensor name -> where it is.</summary>
    public IReadOnlyDictionary<string, WeightEntry> Entries => _entries;
    /// <summary>The files the tensors come from, in load order.</summary>
    public IReadOnlyList<string> Files { get; }
    public int Count => _entries.Count;
    /// <summary>Bytes of tensor data in the files (what a load reads).</summary>
    public long TotalBytes => _entries.Values.Sum(e => e.ByteLength);

    /// <summary>The weights of a resolved model component: its single file, or every shard its index names.</summary>
    public static WeightSet FromModelFolder(DiffusersModelFolder folder)
    {
        if (folder.IndexPath is not null)
            return FromIndex(folder.IndexPath);
        return FromFiles(folder.WeightFiles, $"model '{folder.Source}' ({folder.ComponentFolder})");
    }

    /// <summary>
    /// Override weights: a .safetensors file, a *.safetensors.index.json, or a folder (its one index if it has
    /// one, else every *.safetensors directly inside it).
    /// </summary>
    public static WeightSet FromFileOrFolder(string path)
    {
        if (File.Exists(path))
        {
            return path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase)
                ? FromIndex(path)
                : FromFile(path);
        }
        if (!Directory.Exists(path))
            throw new UserError($"Weights path '{path}' does not exist; expected a .safetensors file or a folder of them.");

        var indexes = Directory.GetFiles(path, "*.safetensors.index.json").Order(StringComparer.Ordinal).ToList();
        if (indexes.Count > 1)
            throw new UserError(
                $"Weights folder '{path}' has several shard indexes ({string.Join(", ", indexes.Select(Path.GetFileName))}); " +
                "point at the one to load.");
        if (indexes.Count == 1)
            return FromIndex(indexes[0]);

        var files = Directory.GetFiles(path, "*.safetensors").Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0)
            throw new UserError($"Weights folder '{path}' contains no .safetensors files.");
        return FromFiles(files, $"weights folder '{path}'");
    }

    /// <summary>The tensors of one file (those passing <paramref name="keyFilter"/>, if given).</summary>
    public static WeightSet FromFile(string path, Func<string, bool>? keyFilter = null)
    {
        var entries = new Dictionary<string, WeightEntry>(StringComparer.Ordinal);
        AddFile(entries, path, SafeTensors.ReadFullHeader(path), keyFilter);
        return new WeightSet(entries, [path]);
    }

    /// <summary>Exactly the keys an index lists, after checking every shard exists and holds its keys.</summary>
    static WeightSet FromIndex(string indexPath)
    {
        var index = ShardIndex.Read(indexPath);
        var missingShards = index.ShardFiles.Where(f => !File.Exists(Path.Combine(index.Folder, f))).ToList();
        if (missingShards.Count > 0)
            throw new UserError(
                $"The shard index '{indexPath}' names {missingShards.Count} shard file(s) that are not in '{index.Folder}': " +
                $"{StateDict.Cap(missingShards)} (incomplete download?).");

        var keysByShard = index.WeightMap.GroupBy(kv => kv.Value, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.Select(kv => kv.Key).ToHashSet(StringComparer.Ordinal), StringComparer.Ordinal);

        // Every header is read before any tensor data, so a broken checkpoint fails fast and whole.
        var absent = new List<string>();
        var headers = new List<(string Path, SafeTensors.Header Header, HashSet<string> Keys)>();
        foreach (var shard in index.ShardFiles)
        {
            var path = Path.Combine(index.Folder, shard);
            var header = SafeTensors.ReadFullHeader(path);
            absent.AddRange(keysByShard[shard].Where(k => !header.Tensors.ContainsKey(k)).Order(StringComparer.Ordinal)
                                              .Select(k => $"{k} (in {shard})"));
            headers.Add((path, header, keysByShard[shard]));
        }
        if (absent.Count > 0)
            throw new UserError(
                $"The shard index '{indexPath}' lists {absent.Count} tensor(s) that their shard does not contain: {StateDict.Cap(absent)}.");

        // The index is the authority: tensors a shard holds but the index does not list are not loaded.
        var entries = new Dictionary<string, WeightEntry>(index.WeightMap.Count, StringComparer.Ordinal);
        foreach (var (path, header, keys) in headers)
            AddFile(entries, path, header, keys.Contains);
        return new WeightSet(entries, headers.Select(h => h.Path).ToList());
    }

    /// <summary>Merges several files; a name present in two files is an error (which copy would win is arbitrary).</summary>
    static WeightSet FromFiles(IReadOnlyList<string> files, string what)
    {
        if (files.Count == 1) return FromFile(files[0]);

        var owner = new Dictionary<string, string>(StringComparer.Ordinal);
        var duplicates = new List<string>();
        var headers = new List<(string Path, SafeTensors.Header Header)>();
        foreach (var f in files)
        {
            var header = SafeTensors.ReadFullHeader(f);
            headers.Add((f, header));
            foreach (var k in header.Tensors.Keys)
                if (!owner.TryAdd(k, f))
                    duplicates.Add($"{k} (in {Path.GetFileName(owner[k])} and {Path.GetFileName(f)})");
        }
        if (duplicates.Count > 0)
            throw new UserError($"The weight files of {what} define {duplicates.Count} tensor(s) more than once: {StateDict.Cap(duplicates)}.");

        var entries = new Dictionary<string, WeightEntry>(owner.Count, StringComparer.Ordinal);
        foreach (var (path, header) in headers)
            AddFile(entries, path, header, null);
        return new WeightSet(entries, files.ToList());
    }

    static void AddFile(Dictionary<string, WeightEntry> into, string path, SafeTensors.Header header, Func<string, bool>? keyFilter)
    {
        var wanted = header.Tensors.Where(kv => keyFilter is null || keyFilter(kv.Key)).ToList();
        SafeTensors.ThrowIfUnsupported(path, wanted);
        foreach (var (name, info) in wanted)
            into[name] = new WeightEntry(path, info, header.DataSectionStart + info.DataStart);
    }

    /// <summary>
    /// Reads every tensor into its own new tensor (all of them in memory at once), as the tensor-returning
    /// loaders of <see cref="StateDict"/> do. Streaming into a module needs no such copy.
    /// </summary>
    public Dictionary<string, Tensor> Load(Device? device = null)
    {
        var result = new Dictionary<string, Tensor>(_entries.Count, StringComparer.Ordinal);
        try
        {
            foreach (var file in Files)
            {
                foreach (var (k, t) in SafeTensors.Load(file, device, k => _entries.TryGetValue(k, out var e) && e.File == file))
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
}

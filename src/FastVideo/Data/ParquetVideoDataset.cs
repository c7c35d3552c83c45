using FastVideo.Configs;

namespace FastVideo.Data;

public sealed record DatasetOptions
{
    /// <summary>Decoded row groups kept in memory (least recently used are dropped first). A small dataset fits
    /// whole, so later epochs cost nothing; for big rows this mostly holds the groups of the batch being built.</summary>
    public long CacheBytes { get; init; } = 256L << 20;
    /// <summary>Row groups decoded in parallel when building a batch.</summary>
    public int ReadThreads { get; init; } = Math.Max(1, Math.Min(Environment.ProcessorCount, 4));
    /// <summary>Files that may keep open handles at once (others are reopened when read).</summary>
    public int MaxOpenFiles { get; init; } = 64;
    /// <summary>Decode the two tensor columns with our chunk decoder where it applies (see BinaryColumnChunk);
    /// false = Parquet.Net only: an escape hatch, and the baseline of the data benchmark.</summary>
    public bool FastTensorDecoding { get; init; } = true;
}

/// <summary>
/// A FastVideo T2V dataset: the <c>*.parquet</c> files under one or more folders (searched recursively, sorted by
/// path, as upstream). With several sources each is repeated by its weight: the index space is source 0 repeated
/// weight_0 times, then source 1 repeated weight_1 times, and so on, so <see cref="Count"/> = sum(weight x rows).
/// Rows are read lazily, one row group at a time, through a bounded cache. Thread-safe (reads are serialised;
/// row groups of one batch are decoded in parallel).
/// </summary>
public sealed class ParquetVideoDataset : IDisposable
{
    /// <summary>File a dataset folder may carry with the empty caption's embedding (<c>negative_prompt_embeds</c>
    /// [1, L, D]); the synthetic dataset writes one.</summary>
    public const string NegativePromptEmbedsFile = Weights.NegativePromptEmbeds.FileName;

    private sealed record SourceBlock(DataSource Source, int[] FileIds, long[] FileStarts, long Rows, long Start, long Length);

    private readonly List<ParquetVideoFile> _files = [];
    private readonly List<SourceBlock> _blocks = [];
    private readonly DatasetOptions _options;
    private readonly object _lock = new();
    private readonly LinkedList<(int File, RowGroupData Data)> _lru = new();
    private readonly Dictionary<(int File, int Group), LinkedListNode<(int File, RowGroupData Data)>> _cache = new();
    private long _cachedBytes;
    private readonly LinkedList<int> _openFiles = new();
    private bool _disposed;

    public IReadOnlyList<ParquetVideoFile> Files => _files;
    public IReadOnlyList<DataSource> Sources { get; }
    /// <summary>Number of samples: the sum over sources of weight x rows.</summary>
    public long Count { get; }
    /// <summary>The first source folder's <see cref="NegativePromptEmbedsFile"/>, when one exists.</summary>
    public string? NegativePromptEmbedsPath { get; }

    private ParquetVideoDataset(IReadOnlyList<DataSource> sources, DatasetOptions options)
    {
        _options = options;
        Sources = sources;
        var fileIds = new Dictionary<string, int>(StringComparer.Ordinal);
        long start = 0;
        try
        {
            foreach (var source in sources)
            {
                if (source.Weight < 1)
                    throw new UserError($"data_path '{source.Path}': repeat weight must be a positive integer, got {source.Weight}");
                var ids = new List<int>();
                var starts = new List<long>();
                long rows = 0;
                foreach (var path in FindParquetFiles(source.Path))
                {
                    if (!fileIds.TryGetValue(path, out int id))
                    {
                        id = _files.Count;
                        _files.Add(ParquetVideoFile.Open(path, options.FastTensorDecoding));
                        fileIds[path] = id;
                        TrackOpen(id);
                    }
                    ids.Add(id);
                    starts.Add(rows);
                    rows += _files[id].RowCount;
                }
                if (rows == 0)
                    throw new UserError($"data_path '{source.Path}': its parquet files hold no rows");
                _blocks.Add(new SourceBlock(source, ids.ToArray(), starts.ToArray(), rows, start, rows * source.Weight));
                start += rows * source.Weight;
                NegativePromptEmbedsPath ??= FindSidecar(source.Path);
            }
            if (_blocks.Count == 0) throw new UserError("data_path is empty: give a folder of FastVideo parquet files");
        }
        catch
        {
            foreach (var f in _files) f.Dispose();
            throw;
        }
        Count = start;
    }

    /// <summary>Opens one folder (or a single .parquet file).</summary>
    public static ParquetVideoDataset Open(string path, DatasetOptions? options = null) =>
        Open([new DataSource(path, 1)], options);

    /// <summary>Opens several folders, each repeated by its weight.</summary>
    public static ParquetVideoDataset Open(IReadOnlyList<DataSource> sources, DatasetOptions? options = null) =>
        new(sources, options ?? new DatasetOptions());

    /// <summary>All <c>*.parquet</c> files under <paramref name="path"/> (recursively), sorted by full path; the path
    /// may also name a single file. Throws <see cref="UserError"/> when it does not exist or holds none.</summary>
    public static IReadOnlyList<string> FindParquetFiles(string path)
    {
        var full = Path.GetFullPath(path);
        if (File.Exists(full)) return [full];
        if (!Directory.Exists(full)) throw new UserError($"data_path '{path}' does not exist");
        var files = Directory.EnumerateFiles(full, "*.parquet", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".parquet", StringComparison.Ordinal)) // not our writer's *.parquet.tmp
            .OrderBy(f => f, StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0) throw new UserError($"data_path '{path}': no *.parquet files found (searched recursively)");
        return files;
    }

    /// <summary>The first source folder's <see cref="NegativePromptEmbedsFile"/>, when one exists (no dataset opened).</summary>
    public static string? FindNegativePromptEmbeds(IReadOnlyList<DataSource> sources) =>
        sources.Select(s => FindSidecar(s.Path)).FirstOrDefault(p => p is not null);

    private static string? FindSidecar(string path)
    {
        var dir = Path.GetFullPath(path);
        if (File.Exists(dir)) dir = Path.GetDirectoryName(dir)!;
        var p = Path.Combine(dir, NegativePromptEmbedsFile);
        return File.Exists(p) ? p : null;
    }

    /// <summary>The file and 0-based file row that sample <paramref name="index"/> reads.</summary>
    public (ParquetVideoFile File, long Row) Locate(long index)
    {
        var (id, row) = LocateId(index);
        return (_files[id], row);
    }

    private (int FileId, long Row) LocateId(long index)
    {
        if (index < 0 || index >= Count) throw new ArgumentOutOfRangeException(nameof(index), $"sample {index} outside [0, {Count})");
        var block = _blocks[^1];
        foreach (var b in _blocks)
            if (index < b.Start + b.Length) { block = b; break; }
        long local = (index - block.Start) % block.Rows; // repeats of a source cycle through its rows
        int k = Array.BinarySearch(block.FileStarts, local);
        if (k < 0) k = ~k - 1;
        while (k + 1 < block.FileStarts.Length && block.FileStarts[k + 1] <= local) k++; // skip empty files
        return (block.FileIds[k], local - block.FileStarts[k]);
    }

    /// <summary>Reads one sample as an owned row. Throws <see cref="UserError"/> naming file and row if invalid.</summary>
    public VideoRow ReadRow(long index)
    {
        lock (_lock)
        {
            var groups = LoadGroups([index]);
            var (data, row) = groups[0];
            return data.GetRow(row).Detach();
        }
    }

    /// <summary>Reads the samples of a batch and collates them. The rows are handed to the collator as views into
    /// the cache (no copy), valid during this call.</summary>
    public RawBatch ReadBatch(IReadOnlyList<long> indices, BatchCollator collator)
    {
        if (indices.Count == 0) throw new ArgumentException("a batch needs at least one sample", nameof(indices));
        lock (_lock)
        {
            var groups = LoadGroups(indices);
            var rows = groups.Select(g => g.Data.GetRow(g.Row)).ToList();
            var batch = collator.Collate(rows, indices);
            Evict();
            return batch;
        }
    }

    // Makes sure every row group holding one of the samples is decoded (in parallel) and cached.
    private List<(RowGroupData Data, int Row)> LoadGroups(IReadOnlyList<long> indices)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var wanted = new List<(int File, int Group, int Row)>(indices.Count);
        foreach (var index in indices)
        {
            var (fileId, fileRow) = LocateId(index);
            var (g, r) = _files[fileId].LocateRow(fileRow);
            wanted.Add((fileId, g, r));
        }
        var missing = wanted.Select(w => (w.File, w.Group)).Distinct().Where(k => !_cache.ContainsKey(k)).ToList();
        if (missing.Count > 0)
        {
            foreach (var k in missing.Select(m => m.File).Distinct()) TrackOpen(k);
            var loaded = LoadParallel(missing);
            foreach (var d in loaded) Insert(d.Key, d.Value);
        }
        var result = new List<(RowGroupData, int)>(wanted.Count);
        foreach (var w in wanted)
        {
            var node = _cache[(w.File, w.Group)];
            _lru.Remove(node);
            _lru.AddFirst(node); // most recently used first
            result.Add((node.Value.Data, w.Row));
        }
        return result;
    }

    private Dictionary<(int File, int Group), RowGroupData> LoadParallel(List<(int File, int Group)> keys)
    {
        var results = new Dictionary<(int, int), RowGroupData>();
        var gate = new SemaphoreSlim(Math.Max(1, _options.ReadThreads));
        var tasks = keys.Select(k => Task.Run(async () =>
        {
            await gate.WaitAsync().ConfigureAwait(false);
            try { return (k, await _files[k.File].ReadRowGroupAsync(k.Group).ConfigureAwait(false)); }
            finally { gate.Release(); }
        })).ToList();
        try
        {
            Task.WhenAll(tasks).GetAwaiter().GetResult();
        }
        catch
        {
            foreach (var t in tasks.Where(t => t.IsCompletedSuccessfully)) t.Result.Item2.Dispose();
            throw;
        }
        foreach (var t in tasks) results[t.Result.k] = t.Result.Item2;
        return results;
    }

    private void Insert((int File, int Group) key, RowGroupData data)
    {
        var node = _lru.AddFirst((key.File, data));
        _cache[key] = node;
        _cachedBytes += data.SizeBytes;
    }

    // Drops least recently used groups beyond the byte budget (called between batches, when nothing is in use).
    private void Evict()
    {
        while (_cachedBytes > _options.CacheBytes && _lru.Last is { } last)
        {
            var (fileId, d) = last.Value;
            _lru.RemoveLast();
            _cache.Remove((fileId, d.Group));
            _cachedBytes -= d.SizeBytes;
            d.Dispose();
        }
    }

    // Bounds open file handles: most recently read files keep theirs.
    private void TrackOpen(int fileId)
    {
        _openFiles.Remove(fileId);
        _openFiles.AddFirst(fileId);
        while (_openFiles.Count > Math.Max(1, _options.MaxOpenFiles))
        {
            _files[_openFiles.Last!.Value].CloseIdleReaders();
            _openFiles.RemoveLast();
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var (_, d) in _lru) d.Dispose();
            _lru.Clear();
            _cache.Clear();
            foreach (var f in _files) f.Dispose();
        }
    }
}

using Parquet;
using Parquet.Data;
using Parquet.Schema;

namespace FastVideo.Data;

/// <summary>
/// One parquet file of a FastVideo T2V dataset: its schema (checked on open), its row groups, and reading of one row
/// group at a time (a row group is the smallest unit Parquet.Net decodes). Open readers are pooled so several row
/// groups of the same file can be decoded in parallel; <see cref="CloseIdleReaders"/> releases the handles.
/// </summary>
public sealed class ParquetVideoFile : IDisposable
{
    private readonly Stack<ParquetReader> _idle = new();
    private readonly object _poolLock = new();
    private Microsoft.Win32.SafeHandles.SafeFileHandle? _handle;
    private bool _disposed;

    private DataField _latentBytes = null!, _latentShape = null!, _latentDType = null!;
    private DataField _textBytes = null!, _textShape = null!, _textDType = null!;
    private readonly List<DataField> _metadataFields = [];

    public string Path { get; }
    public long RowCount { get; private set; }
    public IReadOnlyList<long> RowGroupRowCounts { get; private set; } = [];
    /// <summary>First file row of each row group (cumulative row counts).</summary>
    internal long[] RowGroupStarts { get; private set; } = [];
    /// <summary>Top-level columns as (name, type), in file order.</summary>
    public IReadOnlyList<(string Name, string Type)> Columns { get; private set; } = [];
    /// <summary>Columns of the spec layout this file lacks (optional metadata; required ones fail the open).</summary>
    public IReadOnlyList<string> MissingOptionalColumns { get; private set; } = [];
    /// <summary>Metadata columns skipped because their type has no plain value (nested or unusual types).</summary>
    public IReadOnlyList<string> SkippedColumns { get; private set; } = [];

    private readonly bool _fastTensorDecoding;

    private ParquetVideoFile(string path, bool fastTensorDecoding)
    {
        Path = path;
        _fastTensorDecoding = fastTensorDecoding;
    }

    /// <summary>Opens the file and checks its schema. Throws <see cref="UserError"/> naming the file for a missing or
    /// unreadable file and for a missing or mistyped required column.</summary>
    /// <param name="fastTensorDecoding">Decode the tensor columns with <see cref="BinaryColumnChunk"/> where it applies
    /// (false: Parquet.Net only, several times slower on big rows).</param>
    public static ParquetVideoFile Open(string path, bool fastTensorDecoding = true)
    {
        path = System.IO.Path.GetFullPath(path);
        if (!File.Exists(path)) throw new UserError($"{path}: parquet file not found");
        var file = new ParquetVideoFile(path, fastTensorDecoding);
        ParquetReader reader;
        try
        {
            reader = ParquetReader.CreateAsync(path).GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            throw new UserError($"{path}: not a readable parquet file ({e.GetType().Name}: {e.Message})", e);
        }
        try
        {
            file.Inspect(reader);
        }
        catch
        {
            DisposeReader(reader);
            throw;
        }
        file._idle.Push(reader);
        return file;
    }

    private void Inspect(ParquetReader reader)
    {
        var fields = reader.Schema.Fields;
        Columns = fields.Select(f => (f.Name, ParquetSchema.Describe(f))).ToList();
        var byName = new Dictionary<string, Field>(StringComparer.Ordinal);
        foreach (var f in fields) byName.TryAdd(f.Name, f);

        foreach (var name in ParquetSchema.RequiredColumns)
            if (!byName.ContainsKey(name))
                throw new UserError($"{Path}: missing column '{name}'. A FastVideo T2V parquet file needs " +
                                    $"{string.Join(", ", ParquetSchema.RequiredColumns)}; it has {string.Join(", ", byName.Keys)}");
        MissingOptionalColumns = ParquetSchema.AllColumns.Where(c => !byName.ContainsKey(c)).ToList();

        _latentBytes = Binary(byName[ParquetSchema.LatentBytes]);
        _latentShape = ShapeLeaf(byName[ParquetSchema.LatentShape]);
        _latentDType = Text(byName[ParquetSchema.LatentDType]);
        _textBytes = Binary(byName[ParquetSchema.TextBytes]);
        _textShape = ShapeLeaf(byName[ParquetSchema.TextShape]);
        _textDType = Text(byName[ParquetSchema.TextDType]);
        Text(byName[ParquetSchema.Caption]);

        var skipped = new List<string>();
        foreach (var f in fields)
        {
            if (ParquetSchema.IsTensorColumn(f.Name)) continue;
            if (f is DataField { MaxRepetitionLevel: 0 } d && IsPlainType(d.ClrType)) _metadataFields.Add(d);
            else skipped.Add(f.Name);
        }
        SkippedColumns = skipped;

        var counts = new long[reader.RowGroupCount];
        var starts = new long[reader.RowGroupCount];
        long total = 0;
        for (int g = 0; g < counts.Length; g++)
        {
            starts[g] = total;
            counts[g] = reader.RowGroups[g].RowCount;
            total += counts[g];
        }
        RowGroupRowCounts = counts;
        RowGroupStarts = starts;
        RowCount = total;
    }

    private DataField Binary(Field f) =>
        f is DataField { MaxRepetitionLevel: 0 } d && d.ClrType == typeof(ReadOnlyMemory<byte>)
            ? d : throw TypeError(f, "binary");

    private DataField Text(Field f) =>
        f is DataField { MaxRepetitionLevel: 0 } d && d.ClrType == typeof(ReadOnlyMemory<char>)
            ? d : throw TypeError(f, "string");

    /// <summary>The int64 (or int32) leaf of a shape column: a 3-level LIST (pyarrow) or a bare repeated field.</summary>
    private DataField ShapeLeaf(Field f)
    {
        var leaf = f switch
        {
            ListField { Item: DataField item } => item,
            DataField { MaxRepetitionLevel: 1 } d => d,
            _ => null,
        };
        if (leaf is null || leaf.MaxRepetitionLevel != 1 || (leaf.ClrType != typeof(long) && leaf.ClrType != typeof(int)))
            throw TypeError(f, "list<int64>");
        return leaf;
    }

    private UserError TypeError(Field f, string expected) =>
        new($"{Path}: column '{f.Name}' has type {ParquetSchema.Describe(f)}, expected {expected}");

    private static bool IsPlainType(Type t) =>
        t == typeof(ReadOnlyMemory<char>) || t == typeof(long) || t == typeof(int) || t == typeof(short) ||
        t == typeof(double) || t == typeof(float) || t == typeof(bool);

    /// <summary>(row group, row within group) of a file row.</summary>
    internal (int Group, int Row) LocateRow(long fileRow)
    {
        if (fileRow < 0 || fileRow >= RowCount) throw new ArgumentOutOfRangeException(nameof(fileRow));
        int g = Array.BinarySearch(RowGroupStarts, fileRow);
        if (g < 0) g = ~g - 1;
        // Skip empty row groups that share a start with the next one.
        while (g + 1 < RowGroupStarts.Length && RowGroupStarts[g + 1] <= fileRow) g++;
        return (g, (int)(fileRow - RowGroupStarts[g]));
    }

    /// <summary>Reads and decodes one row group (all columns this reader uses).</summary>
    internal async Task<RowGroupData> ReadRowGroupAsync(int group)
    {
        var reader = Rent();
        bool healthy = false;
        try
        {
            var data = await ReadGroupCore(reader, group).ConfigureAwait(false);
            healthy = true;
            return data;
        }
        catch (Exception e) when (e is not UserError)
        {
            long first = RowGroupStarts[group], last = first + RowGroupRowCounts[group] - 1;
            throw new UserError($"{Path}: row group {group} (rows {first}..{last}) cannot be read, the file is corrupt " +
                                $"or uses an encoding Parquet.Net cannot decode ({e.GetType().Name}: {e.Message})", e);
        }
        finally
        {
            if (healthy) Return(reader); else DisposeReader(reader);
        }
    }

    private async Task<RowGroupData> ReadGroupCore(ParquetReader reader, int group)
    {
        var rg = reader.OpenRowGroupReader(group);
        int n = checked((int)rg.RowCount);
        var data = new RowGroupData(this, group, n);
        try
        {
            (data.LatentBytes, data.LatentPresent) = await ReadBinary(rg, _latentBytes, n, data).ConfigureAwait(false);
            (data.TextBytes, data.TextPresent) = await ReadBinary(rg, _textBytes, n, data).ConfigureAwait(false);
            data.LatentShapes = await ReadShapes(rg, _latentShape, n).ConfigureAwait(false);
            data.TextShapes = await ReadShapes(rg, _textShape, n).ConfigureAwait(false);
            data.LatentDTypes = await ReadStrings(rg, _latentDType, n).ConfigureAwait(false);
            data.TextDTypes = await ReadStrings(rg, _textDType, n).ConfigureAwait(false);
            var meta = new List<(string, object?[])>(_metadataFields.Count);
            foreach (var f in _metadataFields) meta.Add((f.Name, await ReadPlain(rg, f, n).ConfigureAwait(false)));
            data.Metadata = meta;
            return data;
        }
        catch
        {
            data.Dispose();
            throw;
        }
    }

    // Tensor bytes: our fast chunk decoder when the chunk is of a kind it handles, else Parquet.Net. Either way the
    // values point into buffers owned by the row group data (no per-value copies).
    private async Task<(ReadOnlyMemory<byte>[], bool[])> ReadBinary(ParquetRowGroupReader rg, DataField f, int n, RowGroupData owner)
    {
        if (_fastTensorDecoding)
        {
            var meta = rg.GetMetadata(f)?.MetaData;
            var rented = new List<byte[]>();
            if (meta is not null && BinaryColumnChunk.TryRead(Handle(), meta, f.MaxDefinitionLevel, n, rented, out var fastValues, out var fastPresent))
            {
                owner.OwnPooled(rented);
                foreach (var fv in fastValues) owner.SizeBytes += fv.Length;
                return (fastValues, fastPresent);
            }
            foreach (var a in rented) System.Buffers.ArrayPool<byte>.Shared.Return(a);
        }
        var raw = (RawColumnData<ReadOnlyMemory<byte>>)await rg.ReadRawColumnDataBaseAsync(f).ConfigureAwait(false);
        owner.Own(raw);
        var values = new ReadOnlyMemory<byte>[n];
        var present = new bool[n];
        var vals = raw.Values;
        var defs = raw.DefinitionLevels;
        int v = 0;
        for (int i = 0; i < n; i++)
        {
            bool has = f.MaxDefinitionLevel == 0 || defs[i] == f.MaxDefinitionLevel;
            present[i] = has;
            if (has) { values[i] = vals[v++]; owner.SizeBytes += values[i].Length; }
        }
        return (values, present);
    }

    // One handle for positional reads (RandomAccess is safe to use from several threads at once).
    private Microsoft.Win32.SafeHandles.SafeFileHandle Handle()
    {
        lock (_poolLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _handle ??= File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        }
    }

    // A shape list per row; null when the list is null, empty or holds a null element (all invalid shapes).
    private static async Task<long[]?[]> ReadShapes(ParquetRowGroupReader rg, DataField leaf, int n)
    {
        using var raw = await rg.ReadRawColumnDataBaseAsync(leaf).ConfigureAwait(false);
        var reps = raw.RepetitionLevels;
        var defs = raw.DefinitionLevels;
        long[] values = raw switch
        {
            RawColumnData<long> l => l.Values.ToArray(),
            RawColumnData<int> i => i.Values.ToArray().Select(x => (long)x).ToArray(),
            _ => throw new InvalidOperationException($"unexpected shape column type {raw.GetType()}"),
        };
        var shapes = new long[]?[n];
        var current = new List<long>(8);
        bool valid = true;
        int row = -1, v = 0;
        for (int i = 0; i < reps.Length; i++)
        {
            if (reps[i] == 0)
            {
                if (row >= 0) shapes[row] = valid && current.Count > 0 ? current.ToArray() : null;
                row++;
                current.Clear();
                valid = true;
            }
            if (defs[i] == leaf.MaxDefinitionLevel) current.Add(values[v++]);
            else valid = false;
        }
        if (row >= 0 && row < n) shapes[row] = valid && current.Count > 0 ? current.ToArray() : null;
        if (row + 1 != n) throw new InvalidOperationException($"shape column holds {row + 1} rows, the row group {n}");
        return shapes;
    }

    private static async Task<string?[]> ReadStrings(ParquetRowGroupReader rg, DataField f, int n)
    {
        var values = new string?[n];
        await rg.ReadAsync(f, values.AsMemory(), null).ConfigureAwait(false);
        return values;
    }

    private static async Task<object?[]> ReadPlain(ParquetRowGroupReader rg, DataField f, int n)
    {
        var t = f.ClrType;
        if (t == typeof(ReadOnlyMemory<char>)) return (await ReadStrings(rg, f, n).ConfigureAwait(false)).Cast<object?>().ToArray();
        if (t == typeof(long)) return await ReadStruct<long>(rg, f, n).ConfigureAwait(false);
        if (t == typeof(int)) return await ReadStruct<int>(rg, f, n).ConfigureAwait(false);
        if (t == typeof(short)) return await ReadStruct<short>(rg, f, n).ConfigureAwait(false);
        if (t == typeof(double)) return await ReadStruct<double>(rg, f, n).ConfigureAwait(false);
        if (t == typeof(float)) return await ReadStruct<float>(rg, f, n).ConfigureAwait(false);
        if (t == typeof(bool)) return await ReadStruct<bool>(rg, f, n).ConfigureAwait(false);
        throw new InvalidOperationException($"unsupported metadata type {t}");
    }

    private static async Task<object?[]> ReadStruct<T>(ParquetRowGroupReader rg, DataField f, int n) where T : struct
    {
        var values = new T?[n];
        await rg.ReadAsync<T>(f, values.AsMemory(), null).ConfigureAwait(false);
        return values.Select(x => x.HasValue ? (object?)x.Value : null).ToArray();
    }

    private ParquetReader Rent()
    {
        lock (_poolLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_idle.Count > 0) return _idle.Pop();
        }
        try
        {
            return ParquetReader.CreateAsync(Path).GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            throw new UserError($"{Path}: cannot reopen parquet file ({e.GetType().Name}: {e.Message})", e);
        }
    }

    private void Return(ParquetReader reader)
    {
        lock (_poolLock)
        {
            // Keep at most two idle handles per file: enough for two decoding threads.
            if (!_disposed && _idle.Count < 2) { _idle.Push(reader); return; }
        }
        DisposeReader(reader);
    }

    // ParquetReader is only IAsyncDisposable; it closes its file stream synchronously underneath.
    private static void DisposeReader(ParquetReader reader) => reader.DisposeAsync().AsTask().GetAwaiter().GetResult();

    /// <summary>True when the file holds open handles (used by the dataset to bound open files).</summary>
    /// <summary>Closes pooled file handles; they are reopened on the next read.</summary>
    public void CloseIdleReaders()
    {
        lock (_poolLock)
        {
            while (_idle.Count > 0) DisposeReader(_idle.Pop());
            _handle?.Dispose();
            _handle = null;
        }
    }

    /// <summary>Reads one row (0-based within this file) as an owned <see cref="VideoRow"/>; throws
    /// <see cref="UserError"/> naming the file and row when the row is invalid.</summary>
    public VideoRow ReadRow(long fileRow)
    {
        var (g, r) = LocateRow(fileRow);
        using var data = ReadRowGroupAsync(g).GetAwaiter().GetResult();
        return data.GetRow(r).Detach();
    }

    public void Dispose()
    {
        lock (_poolLock)
        {
            _disposed = true;
            while (_idle.Count > 0) DisposeReader(_idle.Pop());
            _handle?.Dispose();
            _handle = null;
        }
    }
}

/// <summary>The decoded columns of one row group. Tensor bytes point into Parquet.Net's buffers, owned here.</summary>
internal sealed class RowGroupData : IDisposable
{
    private readonly List<IDisposable> _owned = [];
    private readonly List<byte[]> _pooled = [];

    public RowGroupData(ParquetVideoFile file, int group, int rowCount)
    {
        File = file;
        Group = group;
        RowCount = rowCount;
    }

    public ParquetVideoFile File { get; }
    public int Group { get; }
    public int RowCount { get; }
    public long SizeBytes { get; set; }
    public ReadOnlyMemory<byte>[] LatentBytes { get; set; } = [];
    public bool[] LatentPresent { get; set; } = [];
    public ReadOnlyMemory<byte>[] TextBytes { get; set; } = [];
    public bool[] TextPresent { get; set; } = [];
    public long[]?[] LatentShapes { get; set; } = [];
    public long[]?[] TextShapes { get; set; } = [];
    public string?[] LatentDTypes { get; set; } = [];
    public string?[] TextDTypes { get; set; } = [];
    public List<(string Name, object?[] Values)> Metadata { get; set; } = [];

    public void Own(IDisposable d) => _owned.Add(d);
    public void OwnPooled(IEnumerable<byte[]> arrays) => _pooled.AddRange(arrays);

    public long FileRow(int row) => File.RowGroupStarts[Group] + row;

    /// <summary>The row as a view (bytes not copied), or a <see cref="UserError"/> naming file and row.</summary>
    public VideoRow GetRow(int row) =>
        TryGetRow(row, out var result, out var error) ? result : throw new UserError(error);

    public bool TryGetRow(int row, out VideoRow result, out string error)
    {
        result = null!;
        var meta = new Dictionary<string, object?>(Metadata.Count + 1, StringComparer.Ordinal);
        foreach (var (name, values) in Metadata) meta[name] = values[row];
        string id = meta.GetValueOrDefault(ParquetSchema.Id) as string ?? "";
        string where = $"{File.Path}: row {FileRow(row)}" + (id.Length > 0 ? $" (id '{id}')" : "");

        if (!TryTensor(row, "vae_latent", LatentPresent, LatentBytes, LatentShapes, LatentDTypes, 4, "[C, T, H, W]", out var latent, out var why) ||
            !TryTensor(row, "text_embedding", TextPresent, TextBytes, TextShapes, TextDTypes, 2, "[L, D]", out var text, out why))
        {
            error = $"{where}: {why}";
            return false;
        }

        result = new VideoRow
        {
            Latent = latent,
            Text = text,
            Id = id,
            Caption = meta.GetValueOrDefault(ParquetSchema.Caption) as string ?? "",
            FileName = meta.GetValueOrDefault(ParquetSchema.FileName) as string ?? "",
            MediaType = meta.GetValueOrDefault(ParquetSchema.MediaType) as string ?? "video",
            Width = AsLong(meta.GetValueOrDefault(ParquetSchema.Width)),
            Height = AsLong(meta.GetValueOrDefault(ParquetSchema.Height)),
            NumFrames = AsLong(meta.GetValueOrDefault(ParquetSchema.NumFrames)),
            DurationSec = AsDouble(meta.GetValueOrDefault(ParquetSchema.DurationSec)),
            Fps = AsDouble(meta.GetValueOrDefault(ParquetSchema.Fps)),
            Metadata = meta,
            Source = where,
        };
        error = "";
        return true;
    }

    private static bool TryTensor(int row, string name, bool[] present, ReadOnlyMemory<byte>[] bytes, long[]?[] shapes,
        string?[] dtypes, int rank, string layout, out TensorBytes tensor, out string why)
    {
        tensor = default;
        if (!present[row]) { why = $"{name}_bytes is null"; return false; }
        var shape = shapes[row];
        if (shape is null) { why = $"{name}_shape is null, empty or has a null entry"; return false; }
        if (shape.Length != rank || shape.Any(d => d < 0))
        {
            why = $"{name}_shape {TensorBytes.Format(shape)} is not a {rank}-D shape {layout}";
            return false;
        }
        if (!TensorDTypes.TryParse(dtypes[row], out var dtype))
        {
            why = $"unknown dtype '{dtypes[row] ?? "null"}' in {name}_dtype (expected {TensorDTypes.KnownNames})";
            return false;
        }
        long expected = TensorBytes.ShapeProduct(shape) * dtype.Size();
        if (bytes[row].Length != expected)
        {
            why = $"{name}_bytes holds {bytes[row].Length} bytes but shape {TensorBytes.Format(shape)} of {dtype.Name()} " +
                  $"needs {expected}";
            return false;
        }
        tensor = new TensorBytes(bytes[row], shape, dtype);
        why = "";
        return true;
    }

    private static long? AsLong(object? v) => v switch
    {
        long l => l, int i => i, short s => s, double d => (long)d, float f => (long)f, _ => null,
    };

    private static double? AsDouble(object? v) => v switch
    {
        double d => d, float f => f, long l => l, int i => i, short s => s, _ => null,
    };

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _owned.Clear();
        foreach (var a in _pooled) System.Buffers.ArrayPool<byte>.Shared.Return(a);
        _pooled.Clear();
    }
}

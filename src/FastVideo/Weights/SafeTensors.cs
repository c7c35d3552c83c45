using System.Buffers.Binary;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Weights;

/// <summary>One tensor entry of a safetensors header.</summary>
/// <param name="Dtype">The dtype string as written in the file ("F32", "BF16", ...).</param>
/// <param name="Shape">The tensor shape (empty for a scalar).</param>
/// <param name="DataStart">First byte of the tensor, relative to the start of the data section (the file's data_offsets[0]).</param>
/// <param name="DataEnd">One past the last byte, relative to the data section (data_offsets[1]).</param>
public sealed record SafeTensorInfo(string Dtype, long[] Shape, long DataStart, long DataEnd)
{
    public long ByteLength => DataEnd - DataStart;
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
    /// <summary>The TorchSharp type for <see cref="Dtype"/>, or null when this reader does not support it.</summary>
    public ScalarType? ScalarType => SafeTensors.TryGetScalarType(Dtype, out var st) ? st : null;
}

/// <summary>
/// Reader and writer for the safetensors format: an unsigned 64-bit little-endian header length, a JSON header
/// (<c>{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}</c>) and the raw
/// little-endian tensor bytes. Tensor bytes are streamed straight between the file and the tensor's own memory.
/// </summary>
public static class SafeTensors
{
    const string MetadataKey = "__metadata__";
    // The reference implementation refuses headers above 100 MB; anything bigger is not a safetensors file.
    const long MaxHeaderBytes = 100L * 1024 * 1024;
    // Span-based reads/writes are limited to int.MaxValue bytes, so big tensors are streamed in slices of this size.
    // Settable only so tests can exercise the sliced path with small tensors; any positive value gives the same bytes.
    internal static long ChunkBytes { get; set; } = 1L << 28;

    static readonly (string Name, ScalarType Type, int Size)[] DtypeTable =
    [
        ("F64", torch.ScalarType.Float64, 8),
        ("F32", torch.ScalarType.Float32, 4),
        ("F16", torch.ScalarType.Float16, 2),
        ("BF16", torch.ScalarType.BFloat16, 2),
        ("I64", torch.ScalarType.Int64, 8),
        ("I32", torch.ScalarType.Int32, 4),
        ("I16", torch.ScalarType.Int16, 2),
        ("I8", torch.ScalarType.Int8, 1),
        ("U8", torch.ScalarType.Byte, 1),
        ("BOOL", torch.ScalarType.Bool, 1),
    ];

    /// <summary>Supported dtype strings, for messages.</summary>
    public static IReadOnlyList<string> SupportedDtypes { get; } = DtypeTable.Select(d => d.Name).ToArray();

    public static bool TryGetScalarType(string dtype, out ScalarType type)
    {
        foreach (var d in DtypeTable)
            if (d.Name == dtype) { type = d.Type; return true; }
        type = default;
        return false;
    }

    /// <summary>The safetensors dtype string for a TorchSharp type, or null if the format has none we support.</summary>
    public static string? DtypeName(ScalarType type)
    {
        foreach (var d in DtypeTable)
            if (d.Type == type) return d.Name;
        return null;
    }

    internal static int? ElementSize(string dtype)
    {
        foreach (var d in DtypeTable)
            if (d.Name == dtype) return d.Size;
        return null;
    }

    // ------------------------------------------------------------------------------------------------ reading

    /// <summary>Tensor entries of the header, in header order. Validates the whole header (see <see cref="Load"/>).</summary>
    public static IReadOnlyDictionary<string, SafeTensorInfo> ReadHeader(string path)
    {
        using var fs = OpenRead(path);
        return ReadHeaderCore(fs, path).Tensors;
    }

    /// <summary>The <c>__metadata__</c> map of the header (empty when the file has none).</summary>
    public static IReadOnlyDictionary<string, string> ReadMetadata(string path)
    {
        using var fs = OpenRead(path);
        return ReadHeaderCore(fs, path).Metadata;
    }

    /// <summary>
    /// Loads the tensors of a safetensors file (those whose name passes <paramref name="keyFilter"/>, if given).
    /// Each tensor is allocated once on the CPU and filled directly from the file, then moved to <paramref name="device"/>.
    /// The returned tensors belong to the caller's dispose scope, like the result of any torch operation.
    /// </summary>
    public static Dictionary<string, Tensor> Load(string path, Device? device = null, Func<string, bool>? keyFilter = null)
    {
        using var fs = OpenRead(path);
        var header = ReadHeaderCore(fs, path);
        // Read in file order so the disk sees one forward pass.
        var wanted = header.Tensors.Where(kv => keyFilter is null || keyFilter(kv.Key))
                                   .OrderBy(kv => kv.Value.DataStart).ToList();

        ThrowIfUnsupported(path, wanted);

        var result = new Dictionary<string, Tensor>(wanted.Count, StringComparer.Ordinal);
        try
        {
            foreach (var (name, info) in wanted)
            {
                using var scope = torch.NewDisposeScope();
                var t = torch.empty(info.Shape, dtype: info.ScalarType!.Value, device: torch.CPU);
                fs.Position = header.DataSectionStart + info.DataStart;
                StreamInto(fs, t, path, name);
                if (device is not null && device.type != DeviceType.CPU)
                    t = t.to(device);
                result[name] = t.MoveToOuterDisposeScope();
            }
        }
        catch
        {
            // A failed load returns nothing, so release what was already read.
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>The error for wanted tensors whose dtype this reader cannot hold (names the first, counts all).</summary>
    internal static void ThrowIfUnsupported(string path, IEnumerable<KeyValuePair<string, SafeTensorInfo>> wanted)
    {
        var unsupported = wanted.Where(kv => kv.Value.ScalarType is null).ToList();
        if (unsupported.Count == 0) return;
        var first = unsupported[0];
        throw new UserError(
            $"Safetensors file '{path}': tensor '{first.Key}' has dtype '{first.Value.Dtype}', which is not supported " +
            $"({unsupported.Count} tensor(s) affected). Supported dtypes: {string.Join(", ", SupportedDtypes)}.");
    }

    /// <summary>The whole validated header, with where the data section starts in the file.</summary>
    internal static Header ReadFullHeader(string path)
    {
        using var fs = OpenRead(path);
        return ReadHeaderCore(fs, path);
    }

    static FileStream OpenRead(string path)
    {
        if (Directory.Exists(path))
            throw new UserError($"'{path}' is a folder; expected a .safetensors file.");
        if (!File.Exists(path))
            throw new UserError($"Safetensors file '{path}' does not exist.");
        return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
    }

    internal sealed record Header(
        IReadOnlyDictionary<string, SafeTensorInfo> Tensors,
        IReadOnlyDictionary<string, string> Metadata,
        long DataSectionStart);

    static Header ReadHeaderCore(FileStream fs, string path)
    {
        long fileLength = fs.Length;
        string NotSafetensors(string why) =>
            $"'{path}' is not a valid safetensors file: {why}.";

        if (fileLength < 8)
            throw new UserError(NotSafetensors($"it is {fileLength} bytes long, shorter than the 8-byte header length"));
        Span<byte> lenBytes = stackalloc byte[8];
        fs.Position = 0;
        fs.ReadExactly(lenBytes);
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (headerLen < 2 || headerLen > (ulong)MaxHeaderBytes)
            throw new UserError(NotSafetensors($"the header length field says {headerLen} bytes (expected 2 .. {MaxHeaderBytes})"));
        if ((long)headerLen > fileLength - 8)
            throw new UserError(NotSafetensors(
                $"the header needs {headerLen} bytes but the file has only {fileLength - 8} after the length field (truncated?)"));

        var headerBytes = new byte[headerLen];
        fs.ReadExactly(headerBytes);
        if (headerBytes[0] != (byte)'{')
            throw new UserError(NotSafetensors("the header does not start with '{'"));

        long dataStart = 8 + (long)headerLen;
        long dataLength = fileLength - dataStart;

        JsonDocument doc;
        try { doc = JsonDocument.Parse(headerBytes); }
        catch (JsonException e) { throw new UserError(NotSafetensors($"the header is not valid JSON ({e.Message})"), e); }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new UserError(NotSafetensors("the header is not a JSON object"));

            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == MetadataKey)
                {
                    if (sawMetadata) throw new UserError(NotSafetensors($"'{MetadataKey}' appears twice"));
                    sawMetadata = true;
                    ReadMetadataObject(prop.Value, metadata, path);
                    continue;
                }
                if (tensors.ContainsKey(prop.Name))
                    throw new UserError(NotSafetensors($"tensor '{prop.Name}' appears twice in the header"));
                tensors[prop.Name] = ParseEntry(prop.Name, prop.Value, dataLength, path);
            }
            return new Header(tensors, metadata, dataStart);
        }
    }

    static void ReadMetadataObject(JsonElement e, Dictionary<string, string> into, string path)
    {
        if (e.ValueKind == JsonValueKind.Null) return;   // the reference reader treats null as "no metadata"
        if (e.ValueKind != JsonValueKind.Object)
            throw new UserError($"Safetensors file '{path}': '{MetadataKey}' must be an object of strings, found {e.ValueKind}.");
        foreach (var p in e.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                throw new UserError(
                    $"Safetensors file '{path}': '{MetadataKey}.{p.Name}' must be a string, found {p.Value.ValueKind}.");
            into[p.Name] = p.Value.GetString()!;
        }
    }

    static SafeTensorInfo ParseEntry(string name, JsonElement e, long dataLength, string path)
    {
        string Bad(string why) => $"Safetensors file '{path}': tensor '{name}' {why}.";

        if (e.ValueKind != JsonValueKind.Object)
            throw new UserError(Bad($"must be an object with dtype, shape and data_offsets, found {e.ValueKind}"));
        if (!e.TryGetProperty("dtype", out var dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw new UserError(Bad("has no string 'dtype'"));
        if (!e.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw new UserError(Bad("has no array 'shape'"));
        if (!e.TryGetProperty("data_offsets", out var offEl) || offEl.ValueKind != JsonValueKind.Array
            || offEl.GetArrayLength() != 2)
            throw new UserError(Bad("has no 'data_offsets' pair [begin, end]"));

        var shape = new long[shapeEl.GetArrayLength()];
        int i = 0;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var v) || v < 0)
                throw new UserError(Bad($"has an invalid shape {shapeEl.GetRawText()} (expected non-negative integers)"));
            shape[i++] = v;
        }

        long begin = -1, end = -1;
        if (offEl[0].ValueKind != JsonValueKind.Number || !offEl[0].TryGetInt64(out begin)
            || offEl[1].ValueKind != JsonValueKind.Number || !offEl[1].TryGetInt64(out end)
            || begin < 0 || end < begin)
            throw new UserError(Bad($"has invalid data_offsets {offEl.GetRawText()} (expected 0 <= begin <= end)"));
        if (end > dataLength)
            throw new UserError(Bad(
                $"has data_offsets {offEl.GetRawText()} beyond the data section ({dataLength} bytes); the file is truncated or its header is corrupt"));

        var dtype = dtypeEl.GetString()!;
        var info = new SafeTensorInfo(dtype, shape, begin, end);
        // Only known dtypes can be size-checked; unknown ones are reported by Load if actually requested.
        if (ElementSize(dtype) is int size)
        {
            long expected;
            try { expected = checked(info.NumElements * size); }
            catch (OverflowException) { throw new UserError(Bad($"has an impossibly large shape {shapeEl.GetRawText()}")); }
            if (expected != info.ByteLength)
                throw new UserError(Bad(
                    $"has {info.ByteLength} bytes of data but dtype {dtype} with shape [{string.Join(", ", shape)}] needs {expected}"));
        }
        return info;
    }

    /// <summary>Fills a contiguous CPU tensor from the stream's current position.</summary>
    static void StreamInto(Stream s, Tensor t, string path, string name)
    {
        try
        {
            ForEachByteSlice(t, span => s.ReadExactly(span));
        }
        catch (EndOfStreamException e)
        {
            throw new UserError($"Safetensors file '{path}' ended while reading tensor '{name}' (truncated?).", e);
        }
    }

    /// <summary>
    /// Calls <paramref name="action"/> on consecutive spans over the tensor's own memory (no copy). The tensor must
    /// be contiguous and on the CPU. Slices keep each span under the 2 GB span limit.
    /// </summary>
    static void ForEachByteSlice(Tensor t, SpanAction action)
    {
        long n = t.numel();
        if (n == 0) return;
        long elemSize = t.element_size();
        long chunkBytes = ChunkBytes;
        if (n * elemSize <= chunkBytes)
        {
            action(t.bytes);
            return;
        }
        using var scope = torch.NewDisposeScope();
        var flat = t.view(-1);
        long perChunk = Math.Max(1, chunkBytes / elemSize);
        for (long start = 0; start < n; start += perChunk)
        {
            // narrow() of a contiguous 1-D view is contiguous and its data pointer includes the offset.
            using var part = flat.narrow(0, start, Math.Min(perChunk, n - start));
            action(part.bytes);
        }
    }

    delegate void SpanAction(Span<byte> span);

    // ------------------------------------------------------------------------------------------------ writing

    static readonly JsonWriterOptions HeaderJsonOptions = new()
    {
        // Keep names readable (no \u escapes for '+', non-ASCII, ...), like the reference writer.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Indented = false,
    };

    /// <summary>
    /// Writes tensors (any device, any layout) as a safetensors file. Output is deterministic: tensors ordered by
    /// element size (widest first) then name (ordinal), metadata keys sorted, compact JSON padded with spaces to a
    /// multiple of 8. The file is written under
    /// a temporary name in the same folder and renamed at the end, so a crash never leaves a partial file under
    /// <paramref name="path"/>.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors,
                            IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("Safetensors writing assumes a little-endian machine.");

        var entries = new List<KeyValuePair<string, Tensor>>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var kv in tensors)
        {
            ArgumentNullException.ThrowIfNull(kv.Value, $"tensor '{kv.Key}'");
            if (kv.Key == MetadataKey)
                throw new ArgumentException($"'{MetadataKey}' is reserved and cannot be a tensor name.", nameof(tensors));
            if (!seen.Add(kv.Key))
                throw new ArgumentException($"Tensor name '{kv.Key}' appears twice.", nameof(tensors));
            if (DtypeName(kv.Value.dtype) is null)
                throw new ArgumentException(
                    $"Tensor '{kv.Key}' has dtype {kv.Value.dtype}, which cannot be written; supported: {string.Join(", ", SupportedDtypes)}.",
                    nameof(tensors));
            entries.Add(kv);
        }
        // Wider dtypes first, then by name (ordinal): with the 8-byte-padded header every tensor then starts at a
        // multiple of its element size, as with the reference writer, so memory-mapping readers get aligned data.
        entries.Sort((a, b) =>
        {
            int bySize = b.Value.element_size().CompareTo(a.Value.element_size());
            return bySize != 0 ? bySize : string.CompareOrdinal(a.Key, b.Key);
        });

        byte[] header = BuildHeader(entries, metadata);

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        // Written under a temporary name, fsynced and renamed into place (then the folder fsynced): a reader sees the
        // old file or the whole new one.
        IO.Durable.Write(path, fs =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            fs.Write(len);
            fs.Write(header);
            foreach (var (_, t) in entries)
            {
                // One tensor at a time, so a model on another device is never copied to the CPU all at once.
                // The scope only owns tensors created here; when t is already a contiguous CPU tensor, detach()/
                // contiguous() make new handles on the same storage, which the scope frees without touching t.
                using var scope = torch.NewDisposeScope();
                var cpu = t.detach().cpu().contiguous();
                ForEachByteSlice(cpu, span => fs.Write(span));
            }
        });
    }

    static byte[] BuildHeader(List<KeyValuePair<string, Tensor>> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, HeaderJsonOptions))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WritePropertyName(MetadataKey);
                w.WriteStartObject();
                foreach (var kv in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, t) in entries)
            {
                long bytes = t.numel() * t.element_size();
                w.WritePropertyName(name);
                w.WriteStartObject();
                w.WriteString("dtype", DtypeName(t.dtype));
                w.WritePropertyName("shape");
                w.WriteStartArray();
                foreach (var d in t.shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WritePropertyName("data_offsets");
                w.WriteStartArray();
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            w.WriteEndObject();
        }
        // Pad with spaces so the data section starts 8-byte aligned (what the reference writer does).
        int pad = (int)((8 - ms.Length % 8) % 8);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }
}

using System.Runtime.InteropServices;
using Parquet;
using Parquet.Schema;

namespace FastVideo.Data;

public sealed record ParquetWriteOptions
{
    /// <summary>Rows per row group; 0 = automatic: as many rows as fit in <see cref="TargetRowGroupBytes"/>
    /// (at least one). Small groups matter for shuffled reading: a reader decodes a whole group to get one row.</summary>
    public int RowsPerRowGroup { get; init; }
    public long TargetRowGroupBytes { get; init; } = 16L << 20;
    /// <summary>Snappy by default, like pyarrow.</summary>
    public CompressionMethod Compression { get; init; } = CompressionMethod.Snappy;
}

/// <summary>Writes FastVideo T2V parquet files (the layout of <see cref="ParquetSchema"/>), readable by upstream.</summary>
public static class ParquetVideoWriter
{
    /// <summary>Writes <paramref name="rows"/> to <paramref name="path"/> (streamed row group by row group). The file
    /// is written under a temporary name and renamed when complete, so a crash never leaves a half file behind.</summary>
    public static long Write(string path, IEnumerable<VideoRow> rows, ParquetWriteOptions? options = null)
    {
        options ??= new ParquetWriteOptions();
        path = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        string tmp = path + ".tmp";
        long count = 0;
        try
        {
            using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.ReadWrite, FileShare.None))
            {
                WriteAsync(stream, rows, options, n => count = n).GetAwaiter().GetResult();
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
        return count;
    }

    private static async Task WriteAsync(Stream stream, IEnumerable<VideoRow> rows, ParquetWriteOptions options, Action<long> done)
    {
        var schema = ParquetSchema.CreateWriteSchema();
        var fields = schema.Fields.ToDictionary(f => f.Name);
        await using var writer = await ParquetWriter.CreateAsync(schema, stream,
            new ParquetOptions { CompressionMethod = options.Compression }).ConfigureAwait(false);
        writer.CustomMetadata = new Dictionary<string, string> { ["writer"] = "FastVideoSharp" };

        var pending = new List<VideoRow>();
        long pendingBytes = 0, total = 0;
        foreach (var row in rows)
        {
            Validate(row);
            pending.Add(row);
            pendingBytes += row.Latent.Bytes.Length + row.Text.Bytes.Length;
            bool full = options.RowsPerRowGroup > 0
                ? pending.Count >= options.RowsPerRowGroup
                : pendingBytes >= options.TargetRowGroupBytes;
            if (full)
            {
                await WriteGroup(writer, fields, pending).ConfigureAwait(false);
                total += pending.Count;
                pending.Clear();
                pendingBytes = 0;
            }
        }
        if (pending.Count > 0 || total == 0)
        {
            await WriteGroup(writer, fields, pending).ConfigureAwait(false);
            total += pending.Count;
        }
        done(total);
    }

    private static void Validate(VideoRow row)
    {
        foreach (var (name, t) in new[] { ("vae_latent", row.Latent), ("text_embedding", row.Text) })
        {
            if (t.Shape.Length == 0) throw new ArgumentException($"row '{row.Id}': {name} has an empty shape");
            long need = t.ElementCount * t.DType.Size();
            if (t.Bytes.Length != need)
                throw new ArgumentException($"row '{row.Id}': {name} has {t.Bytes.Length} bytes, shape " +
                                            $"{TensorBytes.Format(t.Shape)} of {t.DType.Name()} needs {need}");
        }
    }

    private static async Task WriteGroup(ParquetWriter writer, Dictionary<string, Field> fields, List<VideoRow> rows)
    {
        using var rg = writer.CreateRowGroup();
        DataField D(string name) => (DataField)fields[name];

        await rg.WriteAsync(D(ParquetSchema.Id), rows.Select(r => r.Id).ToList()).ConfigureAwait(false);
        await rg.WriteAsync(D(ParquetSchema.LatentBytes), rows.Select(r => AsArray(r.Latent.Bytes)).ToList()).ConfigureAwait(false);
        await WriteShapes(rg, fields[ParquetSchema.LatentShape], rows.Select(r => r.Latent.Shape)).ConfigureAwait(false);
        await rg.WriteAsync(D(ParquetSchema.LatentDType), rows.Select(r => r.Latent.DType.Name()).ToList()).ConfigureAwait(false);
        await rg.WriteAsync(D(ParquetSchema.TextBytes), rows.Select(r => AsArray(r.Text.Bytes)).ToList()).ConfigureAwait(false);
        await WriteShapes(rg, fields[ParquetSchema.TextShape], rows.Select(r => r.Text.Shape)).ConfigureAwait(false);
        await rg.WriteAsync(D(ParquetSchema.TextDType), rows.Select(r => r.Text.DType.Name()).ToList()).ConfigureAwait(false);
        await rg.WriteAsync(D(ParquetSchema.FileName), rows.Select(r => r.FileName).ToList()).ConfigureAwait(false);
        await rg.WriteAsync(D(ParquetSchema.Caption), rows.Select(r => r.Caption).ToList()).ConfigureAwait(false);
        await rg.WriteAsync(D(ParquetSchema.MediaType), rows.Select(r => r.MediaType).ToList()).ConfigureAwait(false);
        await rg.WriteAsync<long>(D(ParquetSchema.Width), rows.Select(r => r.Width).ToArray().AsMemory()).ConfigureAwait(false);
        await rg.WriteAsync<long>(D(ParquetSchema.Height), rows.Select(r => r.Height).ToArray().AsMemory()).ConfigureAwait(false);
        await rg.WriteAsync<long>(D(ParquetSchema.NumFrames), rows.Select(r => r.NumFrames).ToArray().AsMemory()).ConfigureAwait(false);
        await rg.WriteAsync<double>(D(ParquetSchema.DurationSec), rows.Select(r => r.DurationSec).ToArray().AsMemory()).ConfigureAwait(false);
        await rg.WriteAsync<double>(D(ParquetSchema.Fps), rows.Select(r => r.Fps).ToArray().AsMemory()).ConfigureAwait(false);
        rg.CompleteValidate();
    }

    // A list column is written as its leaf values plus levels: repetition 0 starts a row, 1 continues it.
    private static Task WriteShapes(ParquetRowGroupWriter rg, Field listField, IEnumerable<long[]> shapes)
    {
        var leaf = (DataField)((ListField)listField).Item;
        var values = new List<long>();
        var reps = new List<int>();
        foreach (var s in shapes)
            for (int i = 0; i < s.Length; i++) { values.Add(s[i]); reps.Add(i == 0 ? 0 : 1); }
        var defs = Enumerable.Repeat(leaf.MaxDefinitionLevel, values.Count).ToArray();
        return rg.WriteAllPartsAsync<long>(leaf, values.ToArray(), defs, reps.ToArray(), CancellationToken.None);
    }

    private static byte[] AsArray(ReadOnlyMemory<byte> m) =>
        MemoryMarshal.TryGetArray(m, out var seg) && seg.Offset == 0 && seg.Count == seg.Array!.Length ? seg.Array : m.ToArray();
}

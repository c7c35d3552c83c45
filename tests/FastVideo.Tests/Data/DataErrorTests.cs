using FastVideo.Data;
using Parquet;
using Parquet.Schema;
using Xunit;

namespace FastVideo.Tests.Data;

/// <summary>Bad data -> one UserError naming the file and the row.</summary>
public class DataErrorTests
{
    // Writes a T2V-shaped file with Parquet.Net directly, so tests can put anything in it (or leave columns out).
    private static string WriteRaw(string path, int rows, Func<int, string> latentDtype, Func<int, byte[]> latentBytes,
        Func<int, long[]> latentShape, string? omitColumn = null)
    {
        var all = new Field[]
        {
            new DataField<string>("id", true), new DataField<byte[]>("vae_latent_bytes", true),
            new ListField("vae_latent_shape", new DataField<long>("element")), new DataField<string>("vae_latent_dtype", true),
            new DataField<byte[]>("text_embedding_bytes", true), new ListField("text_embedding_shape", new DataField<long>("element")),
            new DataField<string>("text_embedding_dtype", true), new DataField<string>("caption", true),
        };
        var schema = new Parquet.Schema.ParquetSchema(all.Where(f => f.Name != omitColumn).ToArray());
        Task.Run(async () =>
        {
            await using var fs = File.Create(path);
            await using var w = await ParquetWriter.CreateAsync(schema, fs);
            using var rg = w.CreateRowGroup();
            foreach (var f in schema.Fields)
            {
                switch (f.Name)
                {
                    case "id": await rg.WriteAsync((DataField)f, Enumerable.Range(0, rows).Select(i => $"clip{i}").ToList()); break;
                    case "caption": await rg.WriteAsync((DataField)f, Enumerable.Range(0, rows).Select(i => $"caption {i}").ToList()); break;
                    case "vae_latent_bytes": await rg.WriteAsync((DataField)f, Enumerable.Range(0, rows).Select(latentBytes).ToList()); break;
                    case "vae_latent_dtype": await rg.WriteAsync((DataField)f, Enumerable.Range(0, rows).Select(latentDtype).ToList()); break;
                    case "text_embedding_bytes": await rg.WriteAsync((DataField)f, Enumerable.Range(0, rows).Select(_ => new byte[2 * 4 * 4]).ToList()); break;
                    case "text_embedding_dtype": await rg.WriteAsync((DataField)f, Enumerable.Range(0, rows).Select(_ => "float32").ToList()); break;
                    case "vae_latent_shape": await WriteList(rg, (ListField)f, Enumerable.Range(0, rows).Select(latentShape)); break;
                    case "text_embedding_shape": await WriteList(rg, (ListField)f, Enumerable.Range(0, rows).Select(_ => new long[] { 2, 4 })); break;
                }
            }
        }).GetAwaiter().GetResult();
        return path;
    }

    private static Task WriteList(ParquetRowGroupWriter rg, ListField f, IEnumerable<long[]> lists)
    {
        var leaf = (DataField)f.Item;
        var vals = lists.SelectMany(x => x).ToArray();
        var reps = lists.SelectMany(x => x.Select((_, i) => i == 0 ? 0 : 1)).ToArray();
        return rg.WriteAllPartsAsync<long>(leaf, vals, Enumerable.Repeat(leaf.MaxDefinitionLevel, vals.Length).ToArray(), reps, CancellationToken.None);
    }

    private static readonly long[] Shape = [1, 2, 2, 2];
    private static byte[] Good(int _) => new byte[8 * 4];

    [Fact]
    public void MissingColumn_NamesFileAndColumn()
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir.Combine("m.parquet"), 2, _ => "float32", Good, _ => Shape, omitColumn: "vae_latent_dtype");
        var e = Assert.Throws<UserError>(() => ParquetVideoDataset.Open(dir.Path));
        Assert.Contains(path, e.Message);
        Assert.Contains("missing column 'vae_latent_dtype'", e.Message);
    }

    [Fact]
    public void UnknownDtype_NamesFileAndRow()
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir.Combine("d.parquet"), 3, i => i == 1 ? "float8_e4m3" : "float32", Good, _ => Shape);
        using var ds = ParquetVideoDataset.Open(dir.Path);
        ds.ReadRow(0);
        var e = Assert.Throws<UserError>(() => ds.ReadRow(1));
        Assert.Contains($"{path}: row 1 (id 'clip1')", e.Message);
        Assert.Contains("unknown dtype 'float8_e4m3'", e.Message);
    }

    [Fact]
    public void BytesDisagreeingWithShape_NamesFileAndRow()
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir.Combine("b.parquet"), 3, _ => "float16", i => i == 2 ? new byte[15] : new byte[16], _ => Shape);
        using var ds = ParquetVideoDataset.Open(dir.Path);
        var e = Assert.Throws<UserError>(() => ds.ReadBatch([0, 2], new BatchCollator(4)));
        Assert.Contains($"{path}: row 2", e.Message);
        Assert.Contains("holds 15 bytes but shape [1, 2, 2, 2] of float16 needs 16", e.Message);
    }

    [Fact]
    public void WrongRankShape_NamesFileAndRow()
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir.Combine("r.parquet"), 2, _ => "float32", Good, i => i == 0 ? [8] : Shape);
        using var ds = ParquetVideoDataset.Open(dir.Path);
        var e = Assert.Throws<UserError>(() => ds.ReadRow(0));
        Assert.Contains($"{path}: row 0", e.Message);
        Assert.Contains("not a 4-D shape", e.Message);
    }

    [Fact]
    public void DifferentLatentShapesInOneBatch_NameBothRows()
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir.Combine("s.parquet"), 2, _ => "float32", Good, i => i == 0 ? [1, 2, 2, 2] : [1, 1, 2, 4]);
        using var ds = ParquetVideoDataset.Open(dir.Path);
        var e = Assert.Throws<UserError>(() => ds.ReadBatch([0, 1], new BatchCollator(4)));
        Assert.Contains($"{path}: row 0", e.Message);
        Assert.Contains($"{path}: row 1", e.Message);
        Assert.Contains("latent shapes differ", e.Message);
        using var single = ds.ReadBatch([1], new BatchCollator(4)); // alone, each row is fine
    }

    [Fact]
    public void EmptyOrMissingFolder_IsClear()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.Combine("sub"));
        File.WriteAllText(dir.Combine("sub", "notes.txt"), "no parquet here");
        var e = Assert.Throws<UserError>(() => ParquetVideoDataset.Open(dir.Path));
        Assert.Contains("no *.parquet files", e.Message);
        Assert.Contains(dir.Path, e.Message);
        var missing = dir.Combine("nope");
        e = Assert.Throws<UserError>(() => ParquetVideoDataset.Open(missing));
        Assert.Contains("does not exist", e.Message);
    }

    [Fact]
    public void CorruptFile_NamesFile()
    {
        using var dir = new TempDir();
        var good = DataTestUtil.WriteRows(dir.Combine("a.parquet"), 0, 3);
        var bad = dir.Combine("b.parquet");
        File.WriteAllBytes(bad, new byte[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 });
        var e = Assert.Throws<UserError>(() => ParquetVideoDataset.Open(dir.Path));
        Assert.Contains(bad, e.Message);
        Assert.Contains("not a readable parquet file", e.Message);

        // A file whose footer is intact but whose data pages are damaged fails when its row group is read.
        var bytes = File.ReadAllBytes(good);
        for (int i = 8; i < bytes.Length / 2; i++) bytes[i] ^= 0x5A;
        File.WriteAllBytes(bad, bytes);
        using var ds = ParquetVideoDataset.Open(bad);
        e = Assert.Throws<UserError>(() => ds.ReadRow(0));
        Assert.Contains(bad, e.Message);
        Assert.Contains("rows 0..2", e.Message);
    }

    [Fact]
    public void ErrorInPrefetchThread_SurfacesAsUserErrorInNext()
    {
        using var dir = new TempDir();
        var path = WriteRaw(dir.Combine("d.parquet"), 4, _ => "int8", Good, _ => Shape);
        using var loader = new DataLoader(ParquetVideoDataset.Open(dir.Path),
            new DataLoaderOptions { BatchSize = 2, PrefetchBatches = 2, TextLen = 4 }, ownsDataset: true);
        var e = Assert.Throws<UserError>(() => loader.Next());
        Assert.Contains(path, e.Message);
        Assert.Throws<UserError>(() => loader.Next()); // stays failed, nothing half-read
    }
}

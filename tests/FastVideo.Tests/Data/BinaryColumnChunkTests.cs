using FastVideo.Data;
using Parquet;
using Parquet.Data;
using Parquet.Schema;
using Xunit;

namespace FastVideo.Tests.Data;

/// <summary>The fast tensor-column decoder must take the files we meet (ours, Arrow's) and agree with Parquet.Net.</summary>
public class BinaryColumnChunkTests
{
    private static void AssertFastPathMatchesParquetNet(string path, bool expectDictionary = false)
    {
        bool sawDictionary = false;
        Task.Run(async () =>
        {
            await using var reader = await ParquetReader.CreateAsync(path);
            using var handle = File.OpenHandle(path);
            foreach (var field in reader.Schema.DataFields.Where(f => f.Name.EndsWith("_bytes")))
                for (int g = 0; g < reader.RowGroupCount; g++)
                {
                    var rg = reader.OpenRowGroupReader(g);
                    var meta = rg.GetMetadata(field)!.MetaData!;
                    sawDictionary |= meta.DictionaryPageOffset is > 0;
                    var rented = new List<byte[]>();
                    Assert.True(BinaryColumnChunk.TryRead(handle, meta, field.MaxDefinitionLevel, (int)rg.RowCount, rented, out var values, out var present),
                        $"{path} {field.Name} group {g}: fast path refused codec {meta.Codec}, encodings {string.Join(",", meta.Encodings)}");
                    using var raw = (RawColumnData<ReadOnlyMemory<byte>>)await rg.ReadRawColumnDataBaseAsync(field);
                    // Parquet.Net packs the non-null values first; its definition levels say which rows have one.
                    var expectedPresent = field.MaxDefinitionLevel == 0
                        ? Enumerable.Repeat(true, values.Length).ToArray()
                        : raw.DefinitionLevels.ToArray().Select(d => d == field.MaxDefinitionLevel).ToArray();
                    Assert.Equal(expectedPresent, present);
                    var expected = raw.Values.ToArray();
                    int k = 0;
                    for (int i = 0; i < values.Length; i++)
                        if (present[i]) Assert.Equal(expected[k++].ToArray(), values[i].ToArray());
                    foreach (var a in rented) System.Buffers.ArrayPool<byte>.Shared.Return(a);
                }
        }).GetAwaiter().GetResult();
        if (expectDictionary) Assert.True(sawDictionary, "expected a dictionary-encoded chunk");
    }

    [Fact]
    public void ArrowWrittenFixture_DecodesLikeParquetNet() =>
        AssertFastPathMatchesParquetNet(Path.Combine(DataTestUtil.FixtureDir, "fastvideo_t2v_fixture.parquet"), expectDictionary: true);

    [Theory]
    [InlineData(CompressionMethod.Snappy)]
    [InlineData(CompressionMethod.None)]
    [InlineData(CompressionMethod.Gzip)]
    public void OurWriterFiles_DecodeLikeParquetNet(CompressionMethod codec)
    {
        using var dir = new TempDir();
        var path = dir.Combine("x.parquet");
        ParquetVideoWriter.Write(path, Enumerable.Range(0, 7).Select(i => DataTestUtil.MakeRow(i, textRows: i % 3)),
            new ParquetWriteOptions { RowsPerRowGroup = 3, Compression = codec });
        AssertFastPathMatchesParquetNet(path);
    }

    [Fact]
    public async Task NullValues_AreReportedAbsent()
    {
        using var dir = new TempDir();
        var path = dir.Combine("n.parquet");
        var field = new DataField<byte[]>("vae_latent_bytes", true);
        await using (var fs = File.Create(path))
        {
            await using var w = await ParquetWriter.CreateAsync(new Parquet.Schema.ParquetSchema(field), fs);
            using var rg = w.CreateRowGroup();
            await rg.WriteAsync(field, new byte[]?[] { [1, 2, 3], null, [], [9] }!);
        }
        AssertFastPathMatchesParquetNet(path);
    }

    [Fact]
    public void Hybrid_DecodesRleAndBitPackedRuns()
    {
        // RLE run of 3 x value 5 (bit width 3), then one bit-packed group of 8 values 0..7.
        byte[] src = [3 << 1, 5, (1 << 1) | 1, 0b10_001_000, 0b1_100_011_0, 0b111_110_10];
        var dst = new int[11];
        Assert.True(BinaryColumnChunk.Hybrid.TryDecode(src, 3, dst));
        Assert.Equal(new[] { 5, 5, 5, 0, 1, 2, 3, 4, 5, 6, 7 }, dst);
        Assert.False(BinaryColumnChunk.Hybrid.TryDecode(src[..4], 3, new int[11])); // truncated
    }

    [Fact]
    public void Dataset_GivesSameBatchesWithEitherDecoder()
    {
        using var dir = new TempDir();
        DataTestUtil.WriteRows(dir.Combine("a.parquet"), 0, 5, rowsPerGroup: 2);
        var paths = new[] { dir.Path, DataTestUtil.FixtureDir };
        foreach (var path in paths)
        {
            using var fast = ParquetVideoDataset.Open(path);
            using var slow = ParquetVideoDataset.Open(path, new DatasetOptions { FastTensorDecoding = false });
            var collator = new BatchCollator(6);
            var idx = Enumerable.Range(0, (int)fast.Count).Select(i => (long)i).Reverse().ToArray();
            using var a = fast.ReadBatch(idx, collator);
            using var b = slow.ReadBatch(idx, collator);
            Assert.Equal(a.VaeLatent.data<float>().ToArray(), b.VaeLatent.data<float>().ToArray());
            Assert.Equal(a.TextEmbedding().data<float>().ToArray(), b.TextEmbedding().data<float>().ToArray());
            Assert.Equal(a.TextAttentionMask().data<float>().ToArray(), b.TextAttentionMask().data<float>().ToArray());
        }
    }
}

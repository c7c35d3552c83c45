using System.Text.Json;
using FastVideo.Data;
using Xunit;

namespace FastVideo.Tests.Data;

/// <summary>Reads a file written by an independent writer (scripts/make_parquet_fixture.mjs: Arrow's Rust parquet
/// writer via parquet-wasm) and compares every value with what that script recorded.</summary>
public class ParquetFixtureTests
{
    private static string FixtureFile => Path.Combine(DataTestUtil.FixtureDir, "fastvideo_t2v_fixture.parquet");

    [Fact]
    public void IndependentlyWrittenFixture_ReadsBackExactly()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(DataTestUtil.FixtureDir, "fastvideo_t2v_fixture.expected.json")));
        var expected = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();

        using var ds = ParquetVideoDataset.Open(DataTestUtil.FixtureDir);
        Assert.Single(ds.Files);
        Assert.Equal(2, ds.Files[0].RowGroupRowCounts.Count); // the fixture has two row groups of two rows
        Assert.Equal(expected.Count, ds.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            var e = expected[i];
            var row = ds.ReadRow(i);
            Assert.Equal(e.GetProperty("id").GetString(), row.Id);
            Assert.Equal(e.GetProperty("caption").GetString(), row.Caption);
            Assert.Equal(e.GetProperty("file_name").GetString(), row.FileName);
            Assert.Equal(e.GetProperty("media_type").GetString(), row.MediaType);
            Assert.Equal(e.GetProperty("width").GetInt64(), row.Width);
            Assert.Equal(e.GetProperty("height").GetInt64(), row.Height);
            Assert.Equal(e.GetProperty("num_frames").GetInt64(), row.NumFrames);
            Assert.Equal(e.GetProperty("duration_sec").GetDouble(), row.DurationSec);
            Assert.Equal(e.GetProperty("fps").GetDouble(), row.Fps);

            Assert.Equal(Longs(e.GetProperty("vae_latent_shape")), row.Latent.Shape);
            Assert.Equal(e.GetProperty("vae_latent_dtype").GetString(), row.Latent.DType.Name());
            Assert.Equal(Floats(e.GetProperty("vae_latent")), row.Latent.ToFloatArray());
            Assert.Equal(Longs(e.GetProperty("text_embedding_shape")), row.Text.Shape);
            Assert.Equal(e.GetProperty("text_embedding_dtype").GetString(), row.Text.DType.Name());
            Assert.Equal(Floats(e.GetProperty("text_embedding")), row.Text.ToFloatArray());

            // info_list carries every metadata column plus the prompt
            var info = row.ToInfo();
            Assert.Equal(row.Caption, info["prompt"]);
            foreach (var col in new[] { "id", "file_name", "caption", "media_type", "width", "height", "num_frames", "duration_sec", "fps" })
                Assert.True(info.ContainsKey(col), col);
        }
    }

    [Fact]
    public void IndependentlyWrittenFixture_CollatesWithDtypesHonoured()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(DataTestUtil.FixtureDir, "fastvideo_t2v_fixture.expected.json")));
        var expected = doc.RootElement.GetProperty("rows").EnumerateArray().ToList();
        using var ds = ParquetVideoDataset.Open(FixtureFile);
        var collator = new BatchCollator(textLen: 4);
        using var batch = ds.ReadBatch([0, 1, 2, 3], collator);
        Assert.Equal(new long[] { 4, 2, 2, 3, 4 }, batch.VaeLatent.shape);
        Assert.Equal(new long[] { 4, 4, 8 }, batch.TextEmbedding().shape);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(Floats(expected[i].GetProperty("vae_latent")), batch.VaeLatent[i].flatten().data<float>().ToArray());
            var text = Floats(expected[i].GetProperty("text_embedding"));
            int l = (int)Longs(expected[i].GetProperty("text_embedding_shape"))[0];
            var got = batch.TextEmbedding()[i].flatten().data<float>().ToArray();
            int keep = Math.Min(l, 4);
            Assert.Equal(text.Take(keep * 8), got.Take(keep * 8));     // cut to text_len 4 (row 1 has 5 rows)
            Assert.All(got.Skip(keep * 8), v => Assert.Equal(0f, v));   // zero padding
            var mask = batch.TextAttentionMask()[i].data<float>().ToArray();
            Assert.Equal(Enumerable.Range(0, 4).Select(k => k < keep ? 1f : 0f), mask);
        }
        Assert.Equal(new long[] { 0, 1, 2, 3 }, batch.SampleIndices);
        Assert.Equal("a red square moving left", batch.InfoList[0]["prompt"]);
    }

    private static long[] Longs(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt64()).ToArray();
    private static float[] Floats(JsonElement e) => e.EnumerateArray().Select(x => (float)x.GetDouble()).ToArray();
}

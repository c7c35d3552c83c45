using FastVideo.Configs;
using FastVideo.Data;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Data;

public class LoaderTests
{
    // 11 rows over two files in nested folders, row groups of 3 rows.
    private static TempDir MakeDataset(int rows = 11)
    {
        var dir = new TempDir();
        int first = rows / 2;
        DataTestUtil.WriteRows(dir.Combine("b", "part-1.parquet"), first, rows - first);
        DataTestUtil.WriteRows(dir.Combine("a", "nested", "part-0.parquet"), 0, first);
        return dir;
    }

    private static DataLoader Loader(string path, int batch = 3, long seed = 7, int prefetch = 2, bool dropLast = true,
        double cfg = 0, Tensor? uncond = null) =>
        new(ParquetVideoDataset.Open(path), new DataLoaderOptions
        {
            BatchSize = batch, Seed = seed, PrefetchBatches = prefetch, DropLast = dropLast, TextLen = 4, CfgRate = cfg,
            UnconditionalText = uncond,
        }, ownsDataset: true);

    private sealed record Seen(long[] Indices, float[] Latent, float[] Text, float[] Mask, bool[] Dropped);

    private static Seen Take(DataLoader loader)
    {
        using var b = loader.Next();
        return new Seen(b.SampleIndices.ToArray(), b.VaeLatent.flatten().data<float>().ToArray(),
            b.TextEmbedding().flatten().data<float>().ToArray(), b.TextAttentionMask().flatten().data<float>().ToArray(),
            b.TextDropped.ToArray());
    }

    private static void AssertSame(Seen a, Seen b)
    {
        Assert.Equal(a.Indices, b.Indices);
        Assert.Equal(a.Latent, b.Latent);
        Assert.Equal(a.Text, b.Text);
        Assert.Equal(a.Mask, b.Mask);
        Assert.Equal(a.Dropped, b.Dropped);
    }

    [Fact]
    public void Writer_RoundTripsEveryDtype_AndFilesAreFoundRecursivelyInPathOrder()
    {
        using var dir = new TempDir();
        var rows = new[]
        {
            DataTestUtil.MakeRow(1, dtype: TensorDType.Float32),
            DataTestUtil.MakeRow(2, dtype: TensorDType.Float16),
            DataTestUtil.MakeRow(3, dtype: TensorDType.BFloat16),
            DataTestUtil.MakeRow(4, textRows: 0),
        };
        ParquetVideoWriter.Write(dir.Combine("z", "late.parquet"), rows[2..], new ParquetWriteOptions { RowsPerRowGroup = 1 });
        ParquetVideoWriter.Write(dir.Combine("early.parquet"), rows[..2]);
        Assert.False(File.Exists(dir.Combine("early.parquet.tmp")));

        using var ds = ParquetVideoDataset.Open(dir.Path);
        Assert.Equal(new[] { dir.Combine("early.parquet"), dir.Combine("z", "late.parquet") }, ds.Files.Select(f => f.Path));
        Assert.Equal(4, ds.Count);
        for (int i = 0; i < rows.Length; i++)
        {
            var got = ds.ReadRow(i);
            Assert.Equal(rows[i].Latent.DType, got.Latent.DType);
            Assert.Equal(rows[i].Latent.Shape, got.Latent.Shape);
            Assert.Equal(rows[i].Latent.ToFloatArray(), got.Latent.ToFloatArray());
            Assert.Equal(rows[i].Text.Shape, got.Text.Shape);
            Assert.Equal(rows[i].Text.ToFloatArray(), got.Text.ToFloatArray());
            Assert.Equal(rows[i].Caption, got.Caption);
            Assert.Equal(rows[i].Width, got.Width);
            Assert.Equal(rows[i].Fps, got.Fps);
        }
    }

    [Fact]
    public void SameSeed_GivesSameBatches_OtherSeedDiffers_EveryEpochReshuffles()
    {
        using var dir = MakeDataset(12);
        using var a = Loader(dir.Path, batch: 3, seed: 7);
        using var b = Loader(dir.Path, batch: 3, seed: 7, prefetch: 0);
        using var c = Loader(dir.Path, batch: 3, seed: 8);
        var epochs = new List<long[]>();
        var otherSeed = new List<long>();
        for (int e = 0; e < 3; e++)
        {
            var epoch = new List<long>();
            for (int k = 0; k < a.BatchesPerEpoch; k++)
            {
                var x = Take(a);
                AssertSame(x, Take(b));
                epoch.AddRange(x.Indices);
                otherSeed.AddRange(Take(c).Indices);
            }
            Assert.Equal(Enumerable.Range(0, 12).Select(i => (long)i), epoch.Order()); // a permutation of all samples
            epochs.Add(epoch.ToArray());
        }
        Assert.NotEqual(epochs[0], epochs[1]);
        Assert.NotEqual(epochs[1], epochs[2]);
        Assert.NotEqual(epochs.SelectMany(x => x), otherSeed);
        Assert.Equal(DataLoader.EpochOrder(7, 1, 12).Select(i => (long)i), epochs[1]);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(0)]
    public void RestoredLoader_YieldsRestOfEpochAndNextEpoch(int prefetch)
    {
        using var dir = MakeDataset(11);
        using var original = Loader(dir.Path, batch: 2, seed: 3, prefetch: prefetch, cfg: 0.4);
        Assert.Equal(5, original.BatchesPerEpoch); // 11 rows, drop_last
        for (int i = 0; i < 3; i++) original.Next().Dispose();
        var state = original.GetState();
        Assert.Equal(new LoaderState(0, 3, 3), state);
        var expected = Enumerable.Range(0, 2 + 5 + 1).Select(_ => Take(original)).ToList(); // rest of epoch 0, epoch 1, one more

        using var resumed = Loader(dir.Path, batch: 2, seed: 3, prefetch: prefetch, cfg: 0.4);
        resumed.Restore(state);
        foreach (var e in expected) AssertSame(e, Take(resumed));
        Assert.Equal(new LoaderState(2, 1, 3), resumed.GetState());

        // Restoring a loader that has already prefetched ahead rewinds it too.
        original.Restore(state);
        foreach (var e in expected) AssertSame(e, Take(original));
    }

    [Fact]
    public void Restore_RejectsStateOfAnotherSeedOrDataset()
    {
        using var dir = MakeDataset(6);
        using var loader = Loader(dir.Path, batch: 2, seed: 1);
        Assert.Throws<UserError>(() => loader.Restore(new LoaderState(0, 1, Seed: 2)));
        Assert.Throws<UserError>(() => loader.Restore(new LoaderState(0, 9, Seed: 1)));
        loader.Restore(new LoaderState(4, 3, 1)); // end of epoch 4 = start of epoch 5
        Assert.Equal(new LoaderState(5, 0, 1), loader.GetState());
    }

    [Fact]
    public void NoDropLast_PadsLastBatchCyclically()
    {
        using var dir = MakeDataset(10);
        using var loader = Loader(dir.Path, batch: 4, seed: 5, dropLast: false);
        Assert.Equal(3, loader.BatchesPerEpoch);
        var order = DataLoader.EpochOrder(5, 0, 10).Select(i => (long)i).ToArray();
        var seen = Enumerable.Range(0, 3).SelectMany(_ => Take(loader).Indices).ToArray();
        Assert.Equal(order.Concat(order.Take(2)), seen);
    }

    [Fact]
    public void CfgDropout_IsDeterministicPerSeedAndSample_AndUsesUnconditionalText()
    {
        var collator = new BatchCollator(textLen: 4, cfgRate: 0.3, seed: 11);
        var drops = Enumerable.Range(0, 4000).Select(i => collator.IsDropped(i)).ToArray();
        Assert.InRange(drops.Count(d => d) / 4000.0, 0.27, 0.33);
        Assert.Equal(drops, Enumerable.Range(0, 4000).Select(i => new BatchCollator(4, 0.3, 11).IsDropped(i)));
        Assert.NotEqual(drops, Enumerable.Range(0, 4000).Select(i => new BatchCollator(4, 0.3, 12).IsDropped(i)));
        Assert.DoesNotContain(true, Enumerable.Range(0, 100).Select(i => new BatchCollator(4, 0.0, 11).IsDropped(i)));

        long droppedIndex = Enumerable.Range(0, 100).First(i => drops[i]);
        long keptIndex = Enumerable.Range(0, 100).First(i => !drops[i]);
        var rows = new[] { DataTestUtil.MakeRow(1, textRows: 2), DataTestUtil.MakeRow(2, textRows: 2) };

        // Without an empty-caption embedding: zeros [text_len, D] with every position attended.
        using (var b = collator.Collate(rows, [droppedIndex, keptIndex]))
        {
            Assert.Equal(new[] { true, false }, b.TextDropped);
            Assert.All(b.TextEmbedding()[0].flatten().data<float>().ToArray(), v => Assert.Equal(0f, v));
            Assert.Equal(new[] { 1f, 1f, 1f, 1f }, b.TextAttentionMask()[0].data<float>().ToArray());
            Assert.Equal(rows[1].Text.ToFloatArray(), b.TextEmbedding()[1][..2].flatten().data<float>().ToArray());
            Assert.Equal(new[] { 1f, 1f, 0f, 0f }, b.TextAttentionMask()[1].data<float>().ToArray());
            Assert.Equal("caption 1", b.Captions[0]); // the caption itself is kept
        }

        // With the dataset's empty-caption embedding [1, 1, D].
        using var uncond = tensor(new float[] { 9, 8, 7, 6 }, [1, 1, 4]);
        var withNeg = new BatchCollator(textLen: 4, cfgRate: 0.3, seed: 11, unconditionalText: uncond);
        using (var b = withNeg.Collate(rows, [droppedIndex, keptIndex]))
        {
            Assert.Equal(new float[] { 9, 8, 7, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, b.TextEmbedding()[0].flatten().data<float>().ToArray());
            Assert.Equal(new[] { 1f, 0f, 0f, 0f }, b.TextAttentionMask()[0].data<float>().ToArray());
        }
    }

    [Fact]
    public void WeightedSources_RepeatEachFolder()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        DataTestUtil.WriteRows(a.Combine("x.parquet"), 0, 3);
        DataTestUtil.WriteRows(b.Combine("y.parquet"), 100, 2);
        using var ds = ParquetVideoDataset.Open([new DataSource(a.Path, 2), new DataSource(b.Path, 1)]);
        Assert.Equal(2 * 3 + 2, ds.Count);
        var ids = Enumerable.Range(0, 8).Select(i => ds.ReadRow(i).Id).ToArray();
        Assert.Equal(new[] { "row0", "row1", "row2", "row0", "row1", "row2", "row100", "row101" }, ids);
        Assert.Throws<UserError>(() => ParquetVideoDataset.Open([new DataSource(a.Path, 0)]));
    }

    [Fact]
    public void FromConfig_UsesDataSection_AndReportsWaitTime()
    {
        using var dir = MakeDataset(8);
        var data = new DataConfig
        {
            DataPath = [new DataSource(dir.Path, 1)], TrainBatchSize = 4, Seed = 9, PrefetchBatches = 1, DropLast = true,
        };
        using var loader = DataLoader.FromConfig(data, textLen: 6);
        using var batch = loader.Next();
        Assert.Equal(new long[] { 4, 2, 2, 3, 3 }, batch.VaeLatent.shape);
        Assert.Equal(new long[] { 4, 6, 4 }, batch.TextEmbedding().shape);
        Assert.True(loader.LastWaitSeconds >= 0);
        Assert.Equal(loader.LastWaitSeconds, loader.TotalWaitSeconds);
        Assert.Equal(1, loader.BatchesServed);
    }

    [Fact]
    public void Batches_OutliveTheCallersDisposeScope()
    {
        using var dir = MakeDataset(4);
        using var loader = Loader(dir.Path, batch: 2, prefetch: 0);
        RawBatch batch;
        using (NewDisposeScope()) batch = loader.Next();
        using (batch)
        {
            Assert.False(batch.VaeLatent.IsInvalid);
            Assert.Equal(2, batch.VaeLatent.shape[0]);
        }
        Assert.True(batch.VaeLatent.IsInvalid);
    }
}

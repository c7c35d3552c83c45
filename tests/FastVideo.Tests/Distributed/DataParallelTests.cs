using System.Collections;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Distributed;
using FastVideo.Tests.Configs;
using FastVideo.Tests.Data;
using FastVideo.Train.Methods;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Distributed;

/// <summary>The data-parallel pieces that need no MPI: launch detection, dealing draws and data to ranks, the
/// recipe's distributed keys, the weight checksum, the bucketed gradient average and agreeing on failures.</summary>
public class DataParallelTests
{
    [Fact]
    public void Launch_IsReadFromTheLaunchersVariables()
    {
        Assert.Equal(new Launch(Launcher.Mpich, 1, 4), Launch.From(new Hashtable { ["PMI_RANK"] = "1", ["PMI_SIZE"] = "4" }));
        Assert.Equal(new Launch(Launcher.OpenMpi, 0, 2), Launch.From(new Hashtable { ["OMPI_COMM_WORLD_RANK"] = "0", ["OMPI_COMM_WORLD_SIZE"] = "2" }));
        Assert.Equal(Launch.Alone, Launch.From(new Hashtable { ["PMI_RANK"] = "0" }));
        Assert.False(Launch.From(new Hashtable { ["PMI_RANK"] = "0", ["PMI_SIZE"] = "1" }).IsMultiProcess);
        Assert.False(Launch.FromEnvironment().IsMultiProcess);   // the tests run alone
    }

    [Fact]
    public void OpenMpiIsRefusedByName_AndOneProcessLoadsNoMpi()
    {
        var e = Assert.Throws<UserError>(() => World.Join(new Launch(Launcher.OpenMpi, 0, 2)));
        Assert.Contains("Open MPI", e.Message);
        Assert.Contains("apt-get install mpich", e.Message);
        Assert.Same(ProcessGroup.Single, World.Join(new Launch(Launcher.Mpich, 0, 1)));
        Assert.Same(ProcessGroup.Single, World.Current);
    }

    [Fact]
    public void PerSampleDraws_TwoRanksOfBatchOneHoldTheRowsOfOneProcessOfBatchTwo()
    {
        using var g1 = new Generator(5, CPU);
        using var oneProcess = randn([2, 3, 4], generator: g1);   // batch 2 in one process
        for (int rank = 0; rank < 2; rank++)
        {
            var group = new FakeProcessGroup(rank, 2);
            using var g = new Generator(5, CPU);                   // every rank's generator: the recipe seed
            using var mine = DataParallelDraws.Local(randn(DataParallelDraws.Global([1, 3, 4], group), generator: g), group);
            Assert.Equal([1L, 3, 4], mine.shape);
            Assert.True(mine.allclose(oneProcess.narrow(0, rank, 1), 0, 0), $"rank {rank}");
        }
        // Batch 2 on each of 2 ranks: rank r holds samples r and r + 2 of the global batch, as the loader deals them.
        using var global = arange(8).reshape(4, 2);
        using var r1 = DataParallelDraws.Local(global, new FakeProcessGroup(1, 2));
        Assert.Equal(new long[] { 2, 3, 6, 7 }, r1.flatten().data<long>().ToArray());
        Assert.Same(global, DataParallelDraws.Local(global, ProcessGroup.Single));
        Assert.Equal(3, DataParallelDraws.Global(3, ProcessGroup.Single));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void LoaderShards_TogetherAreOneProcessesBatches_InTheSameGlobalOrder(bool dropLast)
    {
        using var dir = new TempDir();
        DataTestUtil.WriteRows(dir.Combine("part.parquet"), 0, 11);
        DataLoader Loader(int batch, int rank, int ranks) => new(ParquetVideoDataset.Open(dir.Path), new DataLoaderOptions
            { BatchSize = batch, Seed = 3, DropLast = dropLast, PrefetchBatches = 0, TextLen = 4, Rank = rank, Ranks = ranks }, ownsDataset: true);
        using var one = Loader(4, 0, 1);
        using var r0 = Loader(2, 0, 2);
        using var r1 = Loader(2, 1, 2);
        Assert.Equal(dropLast ? 2 : 3, one.BatchesPerEpoch);
        Assert.Equal(one.BatchesPerEpoch, r0.BatchesPerEpoch);
        Assert.Equal(4, r1.GlobalBatchSize);
        for (long epoch = 0; epoch < 3; epoch++)
            for (long k = 0; k < one.BatchesPerEpoch; k++)
            {
                var all = one.BatchIndices(epoch, k);
                Assert.Equal(new[] { all[0], all[2] }, r0.BatchIndices(epoch, k));
                Assert.Equal(new[] { all[1], all[3] }, r1.BatchIndices(epoch, k));
            }
        // The batches themselves, read through the loaders: rank 1's first batch holds the one-process batch's rows 1 and 3.
        using var b1 = r1.Next();
        using var ball = one.Next();
        Assert.True(b1.VaeLatent!.allclose(ball.VaeLatent!.index_select(0, tensor(new long[] { 1, 3 })), 0, 0));
    }

    [Theory]
    [InlineData("training.distributed.tp_size=2", "training.distributed.tp_size: tensor parallelism (tp_size 2) is not implemented")]
    [InlineData("training.distributed.num_gpus=8", "training.distributed.sp_size: is not set, so it defaults to num_gpus (8) as upstream: sequence parallelism is not implemented")]
    [InlineData("training.distributed.sp_size=2", "training.distributed.sp_size: 2: sequence parallelism is not implemented")]
    [InlineData("training.distributed.hsdp_shard_dim=2", "training.distributed.hsdp_shard_dim: hsdp_replicate_dim x hsdp_shard_dim = 1 x 2 must equal num_gpus (1)")]
    public void DistributedKeysThatAskForWhatDoesNotExist_LoadButTrainingRefusesThem(string set, string expected)
    {
        var config = RecipeTestSupport.Load(RecipeTestSupport.Minimal, set);   // config show still shows the recipe
        var e = Assert.Throws<RecipeError>(config.RequireImplemented);
        Assert.Contains(expected, e.Message);
        Assert.Contains("training refuses this recipe", e.Message);
    }

    [Fact]
    public void ADistributedValueNoLayoutCouldMeanIsAnError()
    {
        Assert.Contains("training.distributed.weight_check_steps: must be >= 0",
            RecipeTestSupport.Fail(RecipeTestSupport.Minimal, "training.distributed.weight_check_steps=-1").Message);
        Assert.Contains("training.distributed.num_gpus: must be >= 1",
            RecipeTestSupport.Fail(RecipeTestSupport.Minimal, "training.distributed.num_gpus=0").Message);
    }

    [Fact]
    public void UpstreamsDataParallelLayoutIsAccepted()
    {
        // As upstream's released recipes: 8 GPUs, no sequence parallelism, FSDP over all 8 (here: full replicas).
        var d = RecipeTestSupport.Load(RecipeTestSupport.Minimal, "training.distributed.num_gpus=8", "training.distributed.sp_size=1",
            "training.distributed.hsdp_shard_dim=8").Training.Distributed;
        Assert.Equal(1, d.ResolvedSpSize);
        Assert.Equal(8, d.ResolvedHsdpShardDim);
        Assert.Equal(4, RecipeTestSupport.Load(RecipeTestSupport.Minimal, "training.distributed.num_gpus=8", "training.distributed.sp_size=1",
            "training.distributed.hsdp_replicate_dim=2").Training.Distributed.ResolvedHsdpShardDim);
        Assert.Equal(100, d.WeightCheckSteps);
        Assert.Empty(d.Unsupported());
    }

    [Fact]
    public void WeightChecksum_SeesEveryBitAndTheOrder()
    {
        using var a = randn(1000);
        using var b = randn(37).to(ScalarType.BFloat16);
        using var c = arange(13).to(ScalarType.Byte);   // 13 bytes: not a whole number of 64-bit words
        ulong h = WeightChecksum.Of([a, b, c]);
        Assert.Equal(h, WeightChecksum.Of([a.clone(), b.clone(), c.clone()]));
        Assert.NotEqual(h, WeightChecksum.Of([b, a, c]));
        foreach (var (t, i) in new[] { (a, 999L), (b, 5L), (c, 12L) })
        {
            using var flipped = t.clone();
            flipped.bytes[(int)(i * flipped.element_size())] ^= 1;   // one bit of one value
            var changed = new[] { a, b, c }.Select(x => ReferenceEquals(x, t) ? flipped : x).ToArray();
            Assert.NotEqual(h, WeightChecksum.Of(changed));
        }
    }

    [Fact]
    public void GradientAverage_InPlaceAndPacked_EveryTensorGetsTheMeanOfTheRanks()
    {
        // The other rank holds g + 1 for every value g here, so the mean is g + 0.5 (exact for these values).
        var group = new FakeProcessGroup(0, 2) { Peer = v => v + 1 };
        using var averager = new GradientAverager(group, bucketBytes: 4096);
        using var g = new Generator(1, CPU);
        Tensor Ints(long[] shape, ScalarType dtype) => randint(-8, 8, shape, generator: g).to(dtype);
        var grads = new[]
        {
            Ints([300, 4], ScalarType.Float32),        // 4.8 KB: summed on its own memory, in two pieces
            Ints([10], ScalarType.Float32),            // small: packed
            Ints([7, 3], ScalarType.BFloat16),         // bf16: packed as float32
            Ints([600, 2], ScalarType.BFloat16),       // bf16 bigger than the bucket: through a copy of its own
            Ints([900], ScalarType.Float32),           // 3.6 KB: in place
            Ints([200], ScalarType.Float32),           // packed; flushes the bucket
            Ints([3, 4], ScalarType.Float32).t(),      // not contiguous: packed
        };
        var expected = grads.Select(t => (t.to(ScalarType.Float32) + 0.5).to(t.dtype)).ToList();
        averager.Average(grads);
        for (int i = 0; i < grads.Length; i++) Assert.True(grads[i].to(ScalarType.Float32).allclose(expected[i].to(ScalarType.Float32), 0, 0), $"gradient {i}");
        Assert.True(group.Calls < grads.Length + 2, $"{group.Calls} calls for {grads.Length} tensors");
        Assert.Equal(4 * grads.Sum(t => t.numel()), averager.LastBytes);

        // One process: nothing happens.
        using var alone = new GradientAverager(ProcessGroup.Single);
        using var x = ones(3);
        alone.Average([x]);
        Assert.True(x.allclose(ones(3), 0, 0));
    }

    [Fact]
    public void Agree_EveryRankLearnsOfAFailure()
    {
        var fine = new FakeProcessGroup(0, 3);
        Assert.Equal([[7L], [7L], [7L]], fine.Agree(null, 7));

        var local = new StorageError("disk full");
        var thrown = Assert.Throws<StorageError>(() => fine.Agree(local));
        Assert.Same(local, thrown);
        Assert.True(Agreement.IsAgreed(thrown));   // the others learnt of it: no MPI_Abort needed

        // Rank 2 failed with exit code 3: rank 0 stops quietly with that code, naming rank 2.
        var peerFailed = new FakeProcessGroup(0, 3) { Gathered = (r, mine) => r == 2 ? BitConverter.GetBytes(3L) : mine };
        var e = Assert.Throws<PeerFailedError>(() => peerFailed.Agree(null));
        Assert.Equal(3, e.ExitCode);
        Assert.Equal(2, e.Failed.Rank);
        Assert.True(Agreement.IsAgreed(e));

        var single = Assert.Throws<StorageError>(() => ProcessGroup.Single.Agree(local));
        Assert.Same(local, single);
    }

    [Fact]
    public void SeveralProcessesNeedAMethodAndFamiliesThatDealTheirDraws()
    {
        var config = RecipeTestSupport.Load(RecipeTestSupport.Minimal);
        var families = FastVideo.Train.Models.ModelFamilyRegistry.Default;
        var two = new FakeProcessGroup(0, 2);
        TrainingBuilder.CheckDataParallel(config, families, FastVideo.Train.Methods.FineTuning.FineTuneMethod.Descriptor, two);
        var undeclared = FastVideo.Train.Methods.FineTuning.FineTuneMethod.Descriptor with { Name = "mine", DataParallelDraws = false };
        var e = Assert.Throws<UserError>(() => TrainingBuilder.CheckDataParallel(config, families, undeclared, two));
        Assert.StartsWith("recipe.method: method 'mine' does not deal its random draws", e.Message);
        TrainingBuilder.CheckDataParallel(config, families, undeclared, ProcessGroup.Single);   // one process: anything goes
    }
}

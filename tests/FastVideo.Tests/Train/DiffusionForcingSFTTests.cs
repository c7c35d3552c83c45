using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.FineTuning;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>dfsft and tfsft (spec 6.5; tfsft.py): draws, loss and gradients against a hand computation, options, resume.</summary>
public class DiffusionForcingSFTTests
{
    private static Dictionary<string, object?> Options(long chunk = 2, string weighting = "none", double min = 0.0, double max = 1.0) => new()
    {
        ["chunk_size"] = chunk, ["loss_weighting"] = weighting, ["min_timestep_ratio"] = min, ["max_timestep_ratio"] = max,
    };

    private static DiffusionForcingSFTMethod Build(string method = "dfsft", long chunk = 2, string weighting = "none", bool precondition = false,
        double min = 0.0, double max = 1.0)
    {
        var cfg = CausalMethodFixture.Config(TestPaths.TempDir(method), method, Options(chunk, weighting, min, max), framesPerBlock: (int)chunk);
        cfg = cfg with { Training = cfg.Training with { Model = cfg.Training.Model with { PreconditionOutputs = precondition } } };
        var m = (DiffusionForcingSFTMethod)TrainingBuilder.Build(cfg);
        m.OnTrainStart();
        return m;
    }

    /// <summary>Two clips of 5 latent frames, cut to the recipe's 4 (the last chunk is short for chunk size 3).</summary>
    private static RawBatch Batch() => WanModelTests.Batch(2, 5);

    [Theory]
    [InlineData("dfsft", 2, "none", false)]
    [InlineData("dfsft", 1, "none", true)]
    [InlineData("dfsft", 3, "gaussian", false)]
    [InlineData("tfsft", 2, "none", false)]
    [InlineData("tfsft", 1, "gaussian", true)]
    public void LossAndGradientsMatchAHandComputation(string method, int chunk, string weighting, bool precondition)
    {
        using var scope = NewDisposeScope();
        using var m = Build(method, chunk, weighting, precondition);
        using var batch = Batch();
        using var start = m.Generator.get_state();
        var r = m.SingleTrainStep(batch, 1);
        m.Backward(r, 2);   // as one of two accumulation rounds: gradients of loss / 2
        var grads = CausalMethodFixture.Grads(m.Student.Transformer);
        CausalMethodFixture.ZeroGrads(m.Student.Transformer);

        // By hand: the same draws (prepare_batch's noise and timestep density, then one grid index per chunk), then
        // x_t = (1 - sigma) x0 + sigma eps per frame and the flow-matching loss of spec 6.5.
        m.Generator.set_state(start);
        var student = (WanCausalModel)m.Student;
        using var tb = student.PrepareBatch(batch, m.Generator);
        var x0 = tb.Latents;                                          // [2,T,C,H,W]
        long frames = x0.shape[1];
        Assert.Equal(4, frames);                                      // cropped to num_latent_t
        var chunks = randint(0, 1000, [2, (frames + chunk - 1) / chunk], dtype: ScalarType.Int64, generator: m.Generator);
        var idx = chunks.repeat_interleave(chunk, 1).narrow(1, 0, frames);
        var grid = student.NoiseScheduler;
        var t = tensor(idx.data<long>().ToArray().Select(i => grid.TrainTimesteps[i]).ToArray()).reshape(2, frames);
        var sigma = tensor(idx.data<long>().ToArray().Select(i => grid.TrainSigmas[i]).ToArray()).reshape(2, frames, 1, 1, 1);
        var eps = tb.Noise.permute(0, 2, 1, 3, 4);
        var xt = (1 - sigma) * x0 + sigma * eps;
        var text = tb.Conditional[Conditioning.Text].Values;
        var v = method == "dfsft"
            ? student.CausalTransformer.Forward(xt.permute(0, 2, 1, 3, 4), t, text).permute(0, 2, 1, 3, 4)
            : student.CausalTransformer.ForwardTeacherForcing(xt.permute(0, 2, 1, 3, 4), t, text, x0.permute(0, 2, 1, 3, 4)).permute(0, 2, 1, 3, 4);
        var err = precondition ? (xt - v * sigma - x0).pow(2) : (v - (eps - x0)).pow(2);
        Tensor loss;
        if (weighting == "none") loss = err.mean();
        else
        {
            // w(i) = exp(-2((i - 500)/1000)^2) - its min over the grid, scaled so that the 1000 weights sum to 1000.
            var raw = Enumerable.Range(0, 1000).Select(i => Math.Exp(-2 * Math.Pow((i - 500) / 1000.0, 2))).ToArray();
            double min = raw.Min(), sum = raw.Sum(x => x - min);
            var w = tensor(idx.data<long>().ToArray().Select(i => (float)((raw[i] - min) * 1000 / sum)).ToArray()).reshape(2, frames);
            loss = (err.mean([2, 3, 4]) * w).mean();
        }
        Assert.Equal(loss.item<float>(), r.Losses["total_loss"].item<float>(), 1e-5 * loss.item<float>());
        Assert.Equal(r.Losses["total_loss"].item<float>(), r.Losses["dfsft_loss"].item<float>());
        (loss / 2).backward();
        CausalMethodFixture.AssertGradsClose(CausalMethodFixture.Grads(student.Transformer), grads);
        // What makes it bite: the frames of a chunk share a timestep, different chunks (here) do not.
        Assert.True(t.select(1, 0).eq(t.select(1, chunk - 1)).all().item<bool>());
        Assert.False(t.eq(t.select(1, 0).unsqueeze(1)).all().item<bool>(), "every frame drew the same timestep");
    }

    [Fact]
    public void TeacherForcingSeesCleanContextWhereDiffusionForcingSeesNoisyFrames()
    {
        using var scope = NewDisposeScope();
        using var df = Build("dfsft");
        using var tf = Build("tfsft");
        using var batch = Batch();
        float Loss(DiffusionForcingSFTMethod m) { using var _ = no_grad(); return m.SingleTrainStep(batch, 1).Losses["total_loss"].item<float>(); }
        // Same seed, same draws: only the context differs.
        Assert.NotEqual(Loss(df), Loss(tf), 3);
    }

    [Fact]
    public void IndexRangeFollowsUpstream()
    {
        var o = new DiffusionForcingSFTOptions();
        Assert.Equal((0, 1000), DiffusionForcingSFTMethod.IndexRange(o, 1000));
        Assert.Equal((200, 801), DiffusionForcingSFTMethod.IndexRange(o with { MinTimestepRatio = 0.2, MaxTimestepRatio = 0.8 }, 1000));
        Assert.Equal((500, 502), DiffusionForcingSFTMethod.IndexRange(o with { MinTimestepRatio = 0.5, MaxTimestepRatio = 0.5 }, 1000));
        Assert.Equal((999, 1000), DiffusionForcingSFTMethod.IndexRange(o with { MinTimestepRatio = 1.0, MaxTimestepRatio = 1.0 }, 1000));
        using var m = Build(min: 0.2, max: 0.3);
        using var idx = m.SampleIndices(64, 6);
        Assert.True(idx.min().item<long>() >= 200 && idx.max().item<long>() <= 300);
    }

    [Fact]
    public void BadOptionsAndMismatchedBlocksAreRefused()
    {
        var dir = TestPaths.TempDir("dfsft-bad");
        Assert.Contains("method.chunk_size: must be > 0", Assert.Throws<RecipeError>(() =>
            CausalMethodFixture.Config(dir, "dfsft", Options(chunk: 0))).Message);
        Assert.Contains("method.max_timestep_ratio", Assert.Throws<RecipeError>(() =>
            CausalMethodFixture.Config(dir, "dfsft", Options(min: 0.6, max: 0.5))).Message);
        Assert.Contains("method.min_timestep_ratio: must be in [0, 1]", Assert.Throws<RecipeError>(() =>
            CausalMethodFixture.Config(dir, "dfsft", Options(min: -0.1))).Message);
        var mismatch = CausalMethodFixture.Config(dir, "dfsft", Options(chunk: 3), framesPerBlock: 1);
        Assert.Contains("method.chunk_size: (3) must equal the student's num_frames_per_block (1)",
            Assert.Throws<UserError>(() => TrainingBuilder.Build(mismatch)).Message);
        var bidirectional = CausalMethodFixture.Config(dir, "dfsft", Options());
        bidirectional = bidirectional with { Roles = new Dictionary<string, RoleConfig> { ["student"] = new RoleConfig { InitFrom = CausalMethodFixture.Model, Family = "wan" } } };
        Assert.Contains("roles.student: dfsft trains a causal student", Assert.Throws<UserError>(() => TrainingBuilder.Build(bidirectional)).Message);
        // Teacher forcing has no windowed variant.
        var local = CausalMethodFixture.Config(dir, "tfsft", Options(chunk: 1), framesPerBlock: 1, localAttnSize: 2);
        using var tf = TrainingBuilder.Build(local);
        tf.OnTrainStart();
        using var batch = Batch();
        Assert.Contains("local_attn_size: -1", Assert.Throws<UserError>(() => tf.SingleTrainStep(batch, 1)).Message);
    }

    [Theory]
    [InlineData("dfsft")]
    [InlineData("tfsft")]
    public void ResumesBitForBitWithAccumulation(string method)
    {
        var straight = CausalMethodFixture.AssertResumesBitForBit(
            dir => CausalMethodFixture.Config(dir, method, Options(weighting: "gaussian"), maxSteps: 4, accum: 2, saveSteps: 2),
            ["total_loss", "dfsft_loss", "grad_norm/student"], () => new RandomBatchSource(frames: 4));
        Assert.NotEqual(straight[2]["total_loss"], straight[3]["total_loss"]);
    }
}

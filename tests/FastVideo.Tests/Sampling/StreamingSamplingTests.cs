using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Sampling;
using FastVideo.Tests.Train;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using FastVideo.Weights;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Sampling;

/// <summary>
/// Streaming generation (<see cref="StreamingSampling"/>, <see cref="CausalStream"/>) with the wan_causal family on the
/// tiny Wan checkpoint, fp32: each block against the block-causal training forward over the frames before it, the
/// cached stream against recomputation without cache, bounded and growing caches, guidance and the hooks a training
/// rollout uses. Tolerance 1e-4 max abs.
/// </summary>
public class StreamingSamplingTests
{
    private const double Tol = 1e-4;
    private static readonly string ModelDir = TestPaths.Fixture("wan_tiny");
    private static readonly double[] FourSteps = [1000, 750, 500, 250];

    private static double MaxAbs(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    private static string NegativeFile()
    {
        var path = Path.Combine(TestPaths.TempDir("stream-neg"), "neg.safetensors");
        using var g = new Generator(5, device("cpu"));
        SafeTensors.Save(path, [new("negative_prompt_embeds", randn([1, 5, 24], generator: g))]);
        return path;
    }

    internal static WanCausalModel Build(int framesPerBlock, int local = -1, int sink = 0, int slidingWindow = 21, int? textLen = null)
    {
        var role = new WanCausalRoleConfig
        {
            InitFrom = ModelDir, Trainable = false, NegativePromptEmbeds = NegativeFile(),
            NumFramesPerBlock = framesPerBlock, LocalAttnSize = local, SinkSize = sink, SlidingWindowNumFrames = slidingWindow,
        };
        var run = WanModelTests.Run(role, new PipelineConfig { TextLen = textLen }) with { Recipe = new RecipeSection { Family = "wan_causal", Method = "finetune" } };
        return (WanCausalModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
    }

    /// <summary>Conditioning of <paramref name="b"/> prompts for clips of <paramref name="t"/> latent frames 8x8.</summary>
    private static TrainingBatch Conditioning(ModelBase model, long b = 2, long t = 6)
    {
        using var g = new Generator(9, device("cpu"));
        using var text = randn([b, 7, 24], generator: g);
        return model.PrepareInference(FastVideo.Data.Conditioning.FromText(text, ones(b, 7)), [4, t, 8, 8]);
    }

    private static Tensor Noise(long b = 2, long t = 6, ulong seed = 21)
    {
        using var g = new Generator(seed, device("cpu"));
        return randn([b, t, 4, 8, 8], generator: g);
    }

    /// <summary>The clip streamed with <paramref name="options"/>; re-noising draws from a generator seeded 3.</summary>
    private static Tensor Stream(WanCausalModel model, TrainingBatch batch, Tensor noise, IReadOnlyList<double> steps,
        CausalStreamOptions? options = null, BlockDone? onBlock = null, StreamingSchedule? schedule = null)
    {
        using var g = new Generator(3, device("cpu"));
        using var stream = new CausalStream(model, batch, options);
        return StreamingSampling.Generate(stream, noise, schedule ?? new StreamingSchedule(steps), FewStepSampler.StandardNoise(g), onBlock);
    }

    /// <summary>
    /// The oracle of a one-step stream, on the transformer alone: block b is x - sigma(1000) v, v from one block-causal
    /// training forward over the clip's generated frames before the block (timestep 0) and the block's noise (timestep
    /// 1000), guided with the negative prompt.
    /// </summary>
    internal static Tensor OneStepOracle(WanCausalModel model, TrainingBatch batch, Tensor noise, Tensor clip, double guidance)
    {
        int k = model.NumFramesPerBlock;
        long b = noise.shape[0], frames = noise.shape[1];
        var blocks = new List<Tensor>();
        for (long s = 0; s < frames; s += k)
        {
            long n = Math.Min(k, frames - s);
            var x = cat([clip.narrow(1, 0, s), noise.narrow(1, s, n)], 1).permute(0, 2, 1, 3, 4);   // BTCHW -> BCTHW
            var t = cat([zeros(b, s), full([b, n], 1000f)], 1);
            Tensor V(Conditioning text) => model.CausalTransformer.Forward(x, t, text[FastVideo.Data.Conditioning.Text].Values)
                .permute(0, 2, 1, 3, 4).narrow(1, s, n);
            var v = V(batch.Conditional);
            if (guidance != 1) { var vu = V(batch.Unconditional!); v = vu + guidance * (v - vu); }
            blocks.Add(noise.narrow(1, s, n) - v);   // sigma(1000) = 1
        }
        return cat(blocks, 1);
    }

    [Theory]
    [InlineData(1, -1, 0, 1.0)]
    [InlineData(2, -1, 0, 1.0)]
    [InlineData(3, -1, 0, 1.0)]
    [InlineData(1, 2, 0, 1.0)]
    [InlineData(2, 3, 0, 1.0)]
    [InlineData(1, 3, 1, 1.0)]
    [InlineData(2, 3, 1, 1.0)]
    [InlineData(3, 4, 1, 1.0)]
    [InlineData(2, -1, 0, 3.0)]
    [InlineData(1, 3, 1, 3.0)]
    public void EachBlockIsTheTrainingForwardOverTheFramesBeforeIt(int k, int local, int sink, double guidance)
    {
        // One step (t = 1000: x0 = x - v), so that each block's input is its noise and the oracle needs no draws;
        // 7 frames: the last block is shorter when k > 1.
        using var scope = NewDisposeScope();
        using var model = Build(k, local, sink);
        using var batch = Conditioning(model, t: 7);
        using var _ = no_grad();
        var noise = Noise(t: 7);
        var clip = Stream(model, batch, noise, [1000], new CausalStreamOptions { GuidanceScale = guidance });
        Assert.Equal(noise.shape, clip.shape);
        double err = MaxAbs(clip, OneStepOracle(model, batch, noise, clip, guidance));
        Assert.True(err <= Tol, $"k {k}, local {local}, sink {sink}, guidance {guidance}: max abs {err:E2}");
    }

    [Theory]
    [InlineData(1, -1, 0, 1.0)]
    [InlineData(2, -1, 0, 1.0)]
    [InlineData(3, -1, 0, 1.0)]
    [InlineData(2, 3, 0, 1.0)]
    [InlineData(1, 3, 1, 1.0)]
    [InlineData(3, 4, 1, 1.0)]
    [InlineData(2, -1, 0, 3.0)]
    [InlineData(1, 3, 1, 3.0)]
    public void TheCachedStreamAgreesWithRecomputationWithoutCache(int k, int local, int sink, double guidance)
    {
        using var scope = NewDisposeScope();
        using var model = Build(k, local, sink);
        using var batch = Conditioning(model, t: 7);
        using var _ = no_grad();
        var noise = Noise(t: 7);
        var cached = Stream(model, batch, noise, FourSteps, new CausalStreamOptions { GuidanceScale = guidance });
        var recomputed = Stream(model, batch, noise, FourSteps, new CausalStreamOptions { GuidanceScale = guidance, UseKvCache = false });
        double err = MaxAbs(cached, recomputed);
        Assert.True(err <= Tol, $"k {k}, local {local}, sink {sink}, guidance {guidance}: max abs {err:E2}");
        // The re-noising draws matter: another seed gives another clip.
        using var g = new Generator(4, device("cpu"));
        using var stream = new CausalStream(model, batch, new CausalStreamOptions { GuidanceScale = guidance });
        var other = StreamingSampling.Generate(stream, noise, new StreamingSchedule(FourSteps), FewStepSampler.StandardNoise(g));
        Assert.True(MaxAbs(other, cached) > 1e-3);
    }

    [Fact]
    public void GuidanceUsesTheNegativePromptAndKeepsTheBranchesApart()
    {
        using var scope = NewDisposeScope();
        using var model = Build(1);
        using var batch = Conditioning(model, t: 3);
        using var _ = no_grad();
        var noise = Noise(t: 3);
        var cond = Stream(model, batch, noise, FourSteps);
        var guided = Stream(model, batch, noise, FourSteps, new CausalStreamOptions { GuidanceScale = 4 });
        Assert.True(MaxAbs(cond, guided) > 1e-3, "guidance changes nothing");
        // Guidance 1 runs the conditional branch only and keeps no unconditional cache.
        using var stream = new CausalStream(model, batch);
        using var g = new Generator(3, device("cpu"));
        StreamingSampling.Generate(stream, noise, new StreamingSchedule(FourSteps), FewStepSampler.StandardNoise(g));
        Assert.Equal(0, model.CacheFrames("pos.uncond"));
        Assert.True(model.CacheFrames("pos") > 0);
    }

    [Fact]
    public void ALocalWindowKeepsTheCacheBoundedOverALongClip()
    {
        // 16 frames, far past the 3-frame window (and the model's 21-frame sliding window is not involved): every
        // block's cache stays at the window, and the clip agrees with recomputation over all earlier frames.
        using var scope = NewDisposeScope();
        using var model = Build(1, local: 3, sink: 1);
        using var batch = Conditioning(model, b: 1, t: 16);
        using var _ = no_grad();
        var noise = Noise(b: 1, t: 16);
        var cacheFrames = new List<long>();
        using var g = new Generator(3, device("cpu"));
        using var stream = new CausalStream(model, batch, new CausalStreamOptions { CacheTag = "long" });
        var cached = StreamingSampling.Generate(stream, noise, new StreamingSchedule([1000, 500]), FewStepSampler.StandardNoise(g),
            (block, x0, sec) => cacheFrames.Add(stream.CacheFrames));
        Assert.Equal(16, cacheFrames.Count);
        Assert.All(cacheFrames, f => Assert.Equal(3, f));
        var recomputed = Stream(model, batch, noise, [1000, 500], new CausalStreamOptions { UseKvCache = false });
        Assert.True(MaxAbs(cached, recomputed) <= Tol);
    }

    [Fact]
    public void GlobalAttentionGrowsTheCachePastTheSlidingWindowInsteadOfTruncating()
    {
        // Upstream's cache holds sliding_window_num_frames (here 2) and would overflow; this one grows to the clip.
        using var scope = NewDisposeScope();
        using var model = Build(2, slidingWindow: 2);
        using var batch = Conditioning(model, b: 1, t: 9);
        using var _ = no_grad();
        var noise = Noise(b: 1, t: 9);
        var cacheFrames = new List<long>();
        using var g = new Generator(3, device("cpu"));
        using var stream = new CausalStream(model, batch);
        var cached = StreamingSampling.Generate(stream, noise, new StreamingSchedule([1000]), FewStepSampler.StandardNoise(g),
            (block, x0, sec) => cacheFrames.Add(stream.CacheFrames));
        Assert.Equal(2, cacheFrames[0]);
        Assert.True(cacheFrames[^1] >= 9, $"cache of {cacheFrames[^1]} frames after 9");
        Assert.True(MaxAbs(cached, OneStepOracle(model, batch, noise, cached, 1.0)) <= Tol);
    }

    [Fact]
    public void BlocksAreHandedOverAsSoonAsTheyExist()
    {
        using var scope = NewDisposeScope();
        using var model = Build(3);
        using var batch = Conditioning(model, t: 7);
        using var _ = no_grad();
        var noise = Noise(t: 7);
        var seen = new List<(StreamBlock Block, Tensor X0, long FramesCommitted)>();
        using var g = new Generator(3, device("cpu"));
        using var stream = new CausalStream(model, batch);
        var clip = StreamingSampling.Generate(stream, noise, new StreamingSchedule(FourSteps), FewStepSampler.StandardNoise(g),
            (block, x0, sec) => seen.Add((block, x0.clone(), stream.Frames)));
        Assert.Equal([new StreamBlock(0, 0, 3), new StreamBlock(1, 3, 3), new StreamBlock(2, 6, 1)], seen.Select(s => s.Block));
        // Each block is committed when it is handed over, and is the clip's frames.
        Assert.Equal([3L, 6L, 7L], seen.Select(s => s.FramesCommitted));
        Assert.Equal(0, MaxAbs(cat(seen.Select(s => s.X0).ToArray(), 1), clip));
    }

    [Fact]
    public void AnExitStepStopsABlockThereAndGradFlowsOnlyThroughIt()
    {
        using var scope = NewDisposeScope();
        using var model = Build(2);
        using var batch = Conditioning(model, b: 1, t: 4);
        var noise = Noise(b: 1, t: 4);
        Tensor truncated;
        using (no_grad()) truncated = Stream(model, batch, noise, [1000, 750]);
        // Exit at step 1 of 4: the same draws (one per step before the exit) and the same predictions.
        var schedule = new StreamingSchedule(FourSteps) { ExitStep = _ => 1, GradOnExit = true };
        foreach (var p in model.Transformer.parameters()) p.requires_grad = true;
        var exited = Stream(model, batch, noise, FourSteps, schedule: schedule);
        Assert.True(exited.requires_grad);
        Assert.True(MaxAbs(exited.detach(), truncated) <= 1e-6);
        exited.square().mean().backward();
        Assert.Contains(model.Transformer.parameters(), p => p.grad is not null && p.grad.abs().sum().item<float>() > 0);
        // Without a cache the exit step runs the same way.
        var recomputed = Stream(model, batch, noise, FourSteps, new CausalStreamOptions { UseKvCache = false }, schedule: schedule);
        Assert.True(MaxAbs(recomputed.detach(), truncated) <= Tol);
    }

    [Fact]
    public void ANoisyContextIsCommittedWithAFreshDraw()
    {
        using var scope = NewDisposeScope();
        using var model = Build(1);
        using var batch = Conditioning(model, t: 3);
        using var _ = no_grad();
        var noise = Noise(t: 3);
        var clean = Stream(model, batch, noise, [1000]);
        var schedule = new StreamingSchedule([1000]) { ContextTimestep = 300 };
        var noisy = Stream(model, batch, noise, [1000], schedule: schedule);
        var noisyRecomputed = Stream(model, batch, noise, [1000], new CausalStreamOptions { UseKvCache = false }, schedule: schedule);
        Assert.Equal(0, MaxAbs(noisy.narrow(1, 0, 1), clean.narrow(1, 0, 1)));   // the first block sees no context
        Assert.True(MaxAbs(noisy, clean) > 1e-3, "the context noise changes nothing");
        Assert.True(MaxAbs(noisy, noisyRecomputed) <= Tol);
    }

    [Fact]
    public void BadUseIsRefusedClearly()
    {
        using var scope = NewDisposeScope();
        using var model = Build(2);
        using var batch = Conditioning(model, t: 4);
        using var _ = no_grad();
        var noise = Noise(t: 4);
        // Recomputation uses the training forward's blocks: a block that straddles them is refused.
        var e = Assert.Throws<ArgumentException>(() => Stream(model, batch, noise, [1000], new CausalStreamOptions { UseKvCache = false },
            schedule: new StreamingSchedule([1000]) { Blocks = [new(0, 0, 1), new(1, 1, 2), new(2, 3, 1)] }));
        Assert.Contains("blocks are 2 frames from frame 0; a block of 2 frames at frame 1", e.Message);
        e = Assert.Throws<ArgumentException>(() => Stream(model, batch, noise, [1000],
            schedule: new StreamingSchedule([1000]) { Blocks = [new(0, 0, 2), new(1, 3, 1)] }));
        Assert.Contains("blocks must tile the clip in order", e.Message);
        Assert.Throws<UserError>(() => Stream(model, batch, noise, [750, 1000]));
        // A bidirectional model has no streaming forward.
        using var wan = WanModelTests.Build();
        using var wanBatch = wan.PrepareInference(FastVideo.Data.Conditioning.FromText(randn([2, 7, 24]), ones(2, 7)), [4, 4, 8, 8]);
        var u = Assert.Throws<UserError>(() => new CausalStream(wan, wanBatch));
        Assert.Contains("the wan family has no streaming (causal) forward", u.Message);
    }
}

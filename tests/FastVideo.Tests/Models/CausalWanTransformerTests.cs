using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using FastVideo.Weights;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Models;

/// <summary>
/// The causal Wan transformer: its training forward against an independent PyTorch computation
/// (scripts/make_causal_wan_fixtures.py, tests/fixtures/wan_causal_tiny; the weights are wan_tiny's bidirectional
/// checkpoint), and its streaming forward against its training forward. Tolerance: 1e-4 max abs, fp32.
/// </summary>
public class CausalWanTransformerTests(Xunit.Abstractions.ITestOutputHelper log)
{
    private const double Tol = 1e-4;
    private static readonly string ModelDir = TestPaths.Fixture("wan_tiny");
    private static readonly string Inputs = TestPaths.Fixture("wan_causal_tiny", "inputs.safetensors");
    private static readonly string Expected = TestPaths.Fixture("wan_causal_tiny", "expected.safetensors");

    private static double MaxAbs(Tensor a, Tensor b) => (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).abs().max().item<double>();

    private static CausalWanTransformer3DModel Load(int framesPerBlock, int local = -1, int sink = 0, int slidingWindow = 21) =>
        CausalWanTransformer3DModel.FromPretrained(ModelDir, new CausalAttentionConfig
        {
            NumFramesPerBlock = framesPerBlock, LocalAttnSize = local, SinkSize = sink, SlidingWindowNumFrames = slidingWindow,
        });

    [Theory]
    [InlineData(1, -1, 0)]
    [InlineData(2, -1, 0)]
    [InlineData(3, -1, 0)]
    [InlineData(2, 3, 0)]
    [InlineData(1, 3, 1)]
    [InlineData(3, 4, 1)]
    public void TrainingForwardMatchesReference(int framesPerBlock, int local, int sink)
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        var expected = SafeTensors.Load(Expected)[$"forward_nfb{framesPerBlock}_local{local}_sink{sink}"];
        using var model = Load(framesPerBlock, local, sink);
        using var _ = no_grad();
        var output = model.Forward(inp["latents"], inp["timesteps"], inp["prompt_embeds"]);
        double err = MaxAbs(output, expected);
        log.WriteLine($"nfb {framesPerBlock}, local {local}, sink {sink}: max abs error {err:E3}");
        Assert.True(err < Tol, $"max abs error {err:E3}");
    }

    [Fact]
    public void TrainingForwardGradientsMatchReference()
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        var exp = SafeTensors.Load(Expected);
        using var model = Load(2, 3);
        foreach (var p in model.parameters()) p.requires_grad = true;
        (model.Forward(inp["latents"], inp["timesteps"], inp["prompt_embeds"]) * exp["loss_weight"]).sum().backward();
        var names = model.named_parameters().ToList();
        Assert.Equal(exp.Keys.Count(k => k.StartsWith("grad.")), names.Count);
        foreach (var (name, p) in names)
        {
            var reference = exp["grad." + name];
            double rel = MaxAbs(p.grad!, reference) / Math.Max(1e-3, reference.abs().max().item<float>());
            Assert.True(rel < 1e-4, $"grad of {name}: max abs error {rel:E2} relative to its largest value");
        }
    }

    [Fact]
    public void TimestepMayBeAScalarOneValuePerSampleOrOnePerFrame()
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        using var model = Load(2);
        using var _ = no_grad();
        var x = inp["latents"];
        var text = inp["prompt_embeds"];
        var perFrame = model.Forward(x, full([2, 5], 500f), text);
        Assert.True(MaxAbs(model.Forward(x, tensor(500f), text), perFrame) == 0);
        Assert.True(MaxAbs(model.Forward(x, full([2], 500f), text), perFrame) == 0);
        var perSample = model.Forward(x, tensor(new[] { 300f, 700f }), text);
        Assert.True(MaxAbs(perSample, model.Forward(x, tensor(new[] { 300f, 300, 300, 300, 300, 700, 700, 700, 700, 700 }).reshape(2, 5), text)) == 0);
        var e = Assert.Throws<ArgumentException>(() => model.Forward(x, full([3], 500f), text));
        Assert.Contains("timestep must be a scalar, [B=2] or [B=2, T=5]", e.Message);
    }

    [Fact]
    public void TextLongerThanTextLenIsRefused()
    {
        using var scope = NewDisposeScope();
        using var model = CausalWanTransformer3DModel.FromPretrained(ModelDir, new CausalAttentionConfig { TextLen = 4 });
        var e = Assert.Throws<ArgumentException>(() => model.Forward(zeros([1, 4, 3, 4, 4]), tensor(1f), zeros([1, 7, 24])));
        Assert.Contains("more than text_len 4", e.Message);
    }

    public static TheoryData<int, int, int, int> StreamingCases()
    {
        var data = new TheoryData<int, int, int, int>();
        foreach (int nfb in new[] { 1, 2, 3 })
        {
            data.Add(nfb, -1, 0, 21);           // global attention, the cache never fills
            data.Add(nfb, -1, 0, 1);            // global attention, the cache grows from one frame
            data.Add(nfb, nfb + 1, 0, 21);      // local window: the cache rolls
            data.Add(nfb, nfb + 2, 1, 21);      // local window with a sink frame
        }
        return data;
    }

    /// <summary>Latents, per-frame timesteps and text of a 7-frame clip (7 is no multiple of 2 or 3: a last, shorter block).</summary>
    private static (Tensor X, Tensor T, Tensor Text) Clip(int batch = 2, int frames = 7, long seed = 5)
    {
        var g = new Generator((ulong)seed);
        return (randn([batch, 4, frames, 4, 6], generator: g), rand([batch, frames], generator: g) * 1000, randn([batch, 5, 24], generator: g));
    }

    /// <summary>The clip through the streaming forward, one block of <paramref name="framesPerBlock"/> frames per call.</summary>
    private static Tensor Stream(CausalWanTransformer3DModel model, CausalWanCache cache, Tensor x, Tensor t, Tensor text, int framesPerBlock,
        Action<long, long>? beforeEach = null)
    {
        var chunks = new List<Tensor>();
        long frames = x.shape[2];
        for (long s = 0; s < frames; s += framesPerBlock)
        {
            long n = Math.Min(framesPerBlock, frames - s);
            beforeEach?.Invoke(s, n);
            chunks.Add(model.ForwardStreaming(x.narrow(2, s, n), t.narrow(1, s, n), text, cache, s));
        }
        return cat(chunks, 2);
    }

    [Theory]
    [MemberData(nameof(StreamingCases))]
    public void StreamingBlockByBlockEqualsTheTrainingForward(int framesPerBlock, int local, int sink, int slidingWindow)
    {
        using var scope = NewDisposeScope();
        using var model = Load(framesPerBlock, local, sink, slidingWindow);
        var (x, t, text) = Clip();
        using var _ = no_grad();
        var whole = model.Forward(x, t, text);
        using var cache = model.NewCache(4, 6);
        var streamed = Stream(model, cache, x, t, text, framesPerBlock);
        double err = MaxAbs(streamed, whole);
        long capacity = ((KvCache)cache.SelfAttention[0]).Capacity;
        log.WriteLine($"nfb {framesPerBlock}, local {local}, sink {sink}: max abs {err:E3}, cache capacity {capacity} tokens ({capacity / cache.FrameTokens} frames)");
        Assert.True(err < Tol, $"streaming vs training forward: max abs error {err:E3}");
        Assert.Equal(7, cache.Frames);
        if (local == -1 && slidingWindow == 1) Assert.True(capacity >= 7 * cache.FrameTokens, "a global cache grows to the whole clip");
        if (local != -1) Assert.Equal(local * cache.FrameTokens, capacity);   // a local cache rolls within its window
    }

    [Theory]
    [InlineData(2, -1, 0)]
    [InlineData(1, 3, 1)]
    public void RunningABlockAgainReplacesItsKeysAndValues(int framesPerBlock, int local, int sink)
    {
        // Self-Forcing's pattern: each block is first run on other inputs (noisier steps), then on the final ones.
        using var scope = NewDisposeScope();
        using var model = Load(framesPerBlock, local, sink);
        var (x, t, text) = Clip();
        using var _ = no_grad();
        var whole = model.Forward(x, t, text);
        using var cache = model.NewCache(4, 6);
        var streamed = Stream(model, cache, x, t, text, framesPerBlock, (s, n) =>
            model.ForwardStreaming(randn([2, 4, n, 4, 6]), full([2, n], 900f), text, cache, s));
        Assert.True(MaxAbs(streamed, whole) < Tol);
    }

    [Fact]
    public void CrossAttentionCacheFollowsTheText()
    {
        using var scope = NewDisposeScope();
        using var model = Load(2);
        var (x, t, text) = Clip();
        var other = randn_like(text);
        using var _ = no_grad();
        using var cache = model.NewCache(4, 6);
        model.ForwardStreaming(x.narrow(2, 0, 2), t.narrow(1, 0, 2), text, cache, 0);
        var withOther = model.ForwardStreaming(x.narrow(2, 2, 2), t.narrow(1, 2, 2), other, cache, 2);
        using var fresh = model.NewCache(4, 6);
        model.ForwardStreaming(x.narrow(2, 0, 2), t.narrow(1, 0, 2), text, fresh, 0);
        var expected = model.ForwardStreaming(x.narrow(2, 2, 2), t.narrow(1, 2, 2), other, fresh, 2);
        Assert.True(MaxAbs(withOther, expected) == 0);
    }

    [Fact]
    public void StreamingRefusesAChunkLargerThanTheWindowAndAnotherFrameSize()
    {
        using var scope = NewDisposeScope();
        using var model = Load(1, 3, 1);
        var (x, t, text) = Clip();
        using var _ = no_grad();
        using var cache = model.NewCache(4, 6);
        var e = Assert.Throws<ArgumentException>(() => model.ForwardStreaming(x.narrow(2, 0, 3), t.narrow(1, 0, 3), text, cache, 0));
        Assert.Contains("stream at most 2 frames at a time", e.Message);
        using var small = model.NewCache(2, 2);
        e = Assert.Throws<ArgumentException>(() => model.ForwardStreaming(x.narrow(2, 0, 1), t.narrow(1, 0, 1), text, small, 0));
        Assert.Contains("make a cache for this frame size", e.Message);
    }

    [Theory]
    [InlineData(0, -1, 0, "pipeline.dit_config.num_frames_per_block: must be 1, 2 or 3")]
    [InlineData(4, -1, 0, "pipeline.dit_config.num_frames_per_block: must be 1, 2 or 3")]
    [InlineData(1, 0, 0, "local_attn_size: must be -1 (global) or >= 1")]
    [InlineData(2, 2, 1, "must be at least sink_size (1) + num_frames_per_block (2)")]
    [InlineData(1, -1, 1, "attention sinks need a local window")]
    public void InvalidAttentionSettingsAreRefused(int framesPerBlock, int local, int sink, string message)
    {
        var c = new CausalAttentionConfig { NumFramesPerBlock = framesPerBlock, LocalAttnSize = local, SinkSize = sink };
        Assert.Contains(message, Assert.Throws<UserError>(() => c.Validate("pipeline.dit_config")).Message);
    }

    /// <summary>Parameter gradients of sum(f(model) * w), by name.</summary>
    private static Dictionary<string, Tensor> Gradients(CausalWanTransformer3DModel model, Func<Tensor> forward, Tensor weight)
    {
        foreach (var p in model.parameters()) { p.requires_grad = true; p.grad?.zero_(); }
        (forward() * weight).sum().backward();
        ActivationCheckpoint.CompleteBackward();
        return model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
    }

    private static double WorstRelative(Dictionary<string, Tensor> a, Dictionary<string, Tensor> b) =>
        a.Keys.Max(k => MaxAbs(a[k], b[k]) / Math.Max(1e-6, b[k].abs().max().item<float>()));

    [Theory]
    [InlineData("full")]
    [InlineData("ops")]
    public void CheckpointedTrainingForwardHasThePlainGradients(string policy)
    {
        using var scope = NewDisposeScope();
        using var model = Load(2, 3);
        var (x, t, text) = Clip(frames: 5);
        var w = randn([2, 4, 5, 4, 6]);
        var plain = Gradients(model, () => model.Forward(x, t, text), w);
        model.GradientCheckpointing = CheckpointingPolicy.FromRecipe(policy);
        var checkpointed = Gradients(model, () => model.Forward(x, t, text), w);
        double worst = WorstRelative(checkpointed, plain);
        log.WriteLine($"{policy}: worst relative gradient difference {worst:E2}");
        Assert.True(worst < 1e-4, $"worst relative gradient difference {worst:E2}");
    }

    [Theory]
    [InlineData("full")]
    [InlineData("ops")]
    public void CheckpointedStreamingCallHasThePlainGradients(string policy)
    {
        // A grad-enabled chunk after two cached ones; more chunks are streamed before backward (as a rollout does),
        // so the recomputation must read the cache as it was, not as it is.
        using var scope = NewDisposeScope();
        using var model = Load(1);
        var (x, t, text) = Clip(frames: 5);
        var w = randn([2, 4, 1, 4, 6]);
        Dictionary<string, Tensor> Run()
        {
            using var cache = model.NewCache(4, 6);
            try { return Gradients(model, () =>
            {
                using (no_grad()) for (int f = 0; f < 2; f++) model.ForwardStreaming(x.narrow(2, f, 1), t.narrow(1, f, 1), text, cache, f);
                var y = model.ForwardStreaming(x.narrow(2, 2, 1), t.narrow(1, 2, 1), text, cache, 2);
                using (no_grad()) for (int f = 2; f < 5; f++) model.ForwardStreaming(x.narrow(2, f, 1), t.narrow(1, f, 1) * 0, text, cache, f);
                return y;
            }, w); }
            finally { cache.ReleaseSnapshots(); }
        }
        var plain = Run();
        model.GradientCheckpointing = CheckpointingPolicy.FromRecipe(policy);
        var checkpointed = Run();
        double worst = WorstRelative(checkpointed, plain);
        log.WriteLine($"{policy}: worst relative gradient difference {worst:E2}");
        Assert.True(worst < 1e-4, $"worst relative gradient difference {worst:E2}");
    }

    [Fact]
    public void RecomputingFromARolledCacheIsAnErrorNotAnotherAttentionPattern()
    {
        using var scope = NewDisposeScope();
        using var model = Load(1, 2);
        model.GradientCheckpointing = CheckpointingPolicy.Full;
        var (x, t, text) = Clip(frames: 5);
        foreach (var p in model.parameters()) p.requires_grad = true;
        using var cache = model.NewCache(4, 6);   // holds the 2-frame window only: later chunks roll it
        using (no_grad()) model.ForwardStreaming(x.narrow(2, 0, 1), t.narrow(1, 0, 1), text, cache, 0);
        var y = model.ForwardStreaming(x.narrow(2, 1, 1), t.narrow(1, 1, 1), text, cache, 1);
        using (no_grad()) for (int f = 2; f < 5; f++) model.ForwardStreaming(x.narrow(2, f, 1), t.narrow(1, f, 1), text, cache, f);
        y.sum().backward();
        var e = Assert.Throws<InvalidOperationException>(ActivationCheckpoint.CompleteBackward);
        Assert.Contains("size the cache for the whole sequence", e.Message);
        cache.ReleaseSnapshots();
    }
}

using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using FastVideo.Weights;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace FastVideo.Tests.Models;

/// <summary>
/// Activation checkpointing changes memory, never results: with each policy the loss, the parameter gradients and the
/// input gradients of a tiny random Wan transformer equal those without checkpointing (1e-5 relative, fp32), and the
/// policy is really applied (blocks are recomputed in backward) only where a graph is built.
/// </summary>
public class ActivationCheckpointTests(ITestOutputHelper log)
{
    internal static WanTransformerConfig TinyConfig => Tiny;
    private static readonly WanTransformerConfig Tiny = new()
    {
        NumAttentionHeads = 2, AttentionHeadDim = 12, InChannels = 4, OutChannels = 4, TextDim = 16, FfnDim = 40, NumLayers = 4,
    };

    /// <summary>Policy and how many of the 4 blocks it checkpoints (block_skip n: blocks 0, n, 2n, ... as upstream).</summary>
    public static TheoryData<string, int> Policies => new()
    {
        { "full", 4 }, { "ops", 4 }, { "ops/chunked", 4 }, { "block_skip", 4 }, { "block_skip/2", 2 }, { "block_skip/3", 2 },
    };

    internal static CheckpointingPolicy? Parse(string name) => name switch
    {
        "none" => null,
        "ops/chunked" => CheckpointingPolicy.Ops,
        _ when name.StartsWith("block_skip/") => CheckpointingPolicy.BlockSkip(int.Parse(name["block_skip/".Length..])),
        _ => CheckpointingPolicy.FromRecipe(name),
    };

    /// <summary>Largest |a − b| relative to the largest |b| (a tensor's own scale; 0/0 counts as equal).</summary>
    internal static double Relative(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        double diff = (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).abs().max().item<double>();
        double scale = b.to_type(ScalarType.Float64).abs().max().item<double>();
        return diff == 0 ? 0 : diff / scale;
    }

    private sealed record Result(double Loss, Dictionary<string, Tensor> Grads) : IDisposable
    {
        public void Dispose() { foreach (var g in Grads.Values) g.Dispose(); }
    }

    /// <summary>Loss = sum(out · w) + 0.1·sum(out²) of one forward; gradients of every parameter and of both inputs.</summary>
    private static Result Run(WanTransformer3DModel model, CheckpointingPolicy? policy, int rounds = 1, bool inputGrads = true)
    {
        using var scope = NewDisposeScope();
        model.GradientCheckpointing = policy;
        model.zero_grad();
        using var g = new Generator(5, device("cpu"));
        var latents = randn([2, 4, 2, 4, 6], generator: g).requires_grad_(inputGrads);
        var text = randn([2, 5, 16], generator: g).requires_grad_(inputGrads);
        var weight = randn([2, 4, 2, 4, 6], generator: g);
        double loss = 0;
        for (int r = 0; r < rounds; r++)
        {
            var t = tensor(new[] { 300f + 100 * r, 800f });
            var outp = model.Forward(latents, t, text);
            var l = (outp * weight).sum() + 0.1 * outp.square().sum();
            loss += l.item<float>();
            l.backward();
            ActivationCheckpoint.CompleteBackward();
        }
        var grads = model.named_parameters().Where(p => p.parameter.requires_grad)
            .ToDictionary(p => p.name, p => p.parameter.grad!.clone().DetachFromDisposeScope());
        if (inputGrads)
        {
            grads["input.latents"] = latents.grad!.clone().DetachFromDisposeScope();
            grads["input.text"] = text.grad!.clone().DetachFromDisposeScope();
        }
        model.GradientCheckpointing = null;
        return new Result(loss, grads);
    }

    [Theory]
    [MemberData(nameof(Policies))]
    public void EachPolicyGivesTheGradientsOfThePlainModel(string name, int checkpointedBlocks)
    {
        using var model = WanTransformer3DModel.CreateRandom(Tiny, 17);
        model.train();
        using var plain = Run(model, null, rounds: 2);
        // "ops/chunked": the kept-attention backward one (batch, head) pair at a time, as for long sequences.
        long chunkValues = ActivationCheckpoint.AttentionChunkValues;
        if (name == "ops/chunked") ActivationCheckpoint.AttentionChunkValues = 1;
        var (recomputedBefore, reusedBefore) = (ActivationCheckpoint.RecomputedOnThread, ActivationCheckpoint.ReusedOnThread);
        var policy = Parse(name)!;
        Result ckpt;
        try { ckpt = Run(model, policy, rounds: 2); }
        finally { ActivationCheckpoint.AttentionChunkValues = chunkValues; }
        using var _ = ckpt;
        int recomputed = ActivationCheckpoint.RecomputedOnThread - recomputedBefore;

        Assert.Equal(2 * checkpointedBlocks, recomputed);   // two rounds, one recomputation per checkpointed block
        // ops: per block 5 of the 10 linears (q, v of both attentions, the FFN up-projection) and both attention
        // outputs come from the forward instead of being recomputed.
        Assert.Equal(policy.Selective ? 2 * Tiny.NumLayers * 7 : 0, ActivationCheckpoint.ReusedOnThread - reusedBefore);
        Assert.Equal(plain.Loss, ckpt.Loss, 6);
        Assert.Equal(plain.Grads.Keys.Order(), ckpt.Grads.Keys.Order());
        double worst = 0;
        foreach (var (key, reference) in plain.Grads)
        {
            Assert.True(reference.abs().max().item<float>() > 0, $"{key}: zero gradient, the comparison would prove nothing");
            double rel = Relative(ckpt.Grads[key], reference);
            worst = Math.Max(worst, rel);
            Assert.True(rel <= 1e-5, $"{name}: gradient of {key} differs by {rel:E2} (relative to its largest value)");
        }
        log.WriteLine($"{name}: {recomputed} recomputations, worst relative gradient difference {worst:E2} over {plain.Grads.Count} tensors");
    }

    [Theory]
    [InlineData("full")]
    [InlineData("ops")]
    public void LoraAdaptersGetTheGradientsOfThePlainModel(string name)
    {
        // LoRA training: the base is frozen and the inputs need no gradient, so only the adapters (parameters of the
        // checkpointed blocks) put the checkpoint nodes into the graph. Adapters on attention and FFN linears, B != 0.
        using var model = WanTransformer3DModel.CreateRandom(Tiny, 23);
        using var g = new Generator(4, device("cpu"));
        var options = new FastVideo.Configs.LoraOptions { Enable = true, Rank = 3, Alpha = 6, TargetModules = ["to_q", "to_k", "to_v", "to_out", "ffn"] };
        var layers = LoraAdapters.Enable(model, options, g, "test.lora");
        Assert.Contains("blocks.0.ffn.net.0.proj", layers);
        using (no_grad())
            foreach (var (n, p) in model.named_parameters().Where(p => p.name.Contains("lora_B")))
                p.copy_(randn(p.shape, generator: g) * 0.1);
        model.train();
        using var plain = Run(model, null, rounds: 2, inputGrads: false);
        var (recomputedBefore, reusedBefore) = (ActivationCheckpoint.RecomputedOnThread, ActivationCheckpoint.ReusedOnThread);
        using var ckpt = Run(model, Parse(name), rounds: 2, inputGrads: false);
        Assert.Equal(2 * Tiny.NumLayers, ActivationCheckpoint.RecomputedOnThread - recomputedBefore);
        Assert.Equal(name == "ops" ? 2 * Tiny.NumLayers * 7 : 0, ActivationCheckpoint.ReusedOnThread - reusedBefore);
        Assert.Equal(Tiny.NumLayers * 10, layers.Count);     // every linear of every block
        Assert.Equal(2 * layers.Count, plain.Grads.Count);    // A and B of each: nothing else trains
        Assert.Equal(plain.Loss, ckpt.Loss, 6);
        foreach (var (key, reference) in plain.Grads)
        {
            Assert.True(reference.abs().max().item<float>() > 0, $"{key}: zero gradient");
            double rel = Relative(ckpt.Grads[key], reference);
            Assert.True(rel <= 1e-5, $"LoRA {name}: gradient of {key} differs by {rel:E2} relative");
        }
    }

    [Fact]
    public void BlockSkipCheckpointsEveryNthBlockFromTheFirst()
    {
        Assert.Equal([0, 2, 4], Enumerable.Range(0, 6).Where(CheckpointingPolicy.BlockSkip(2).Checkpoints));
        Assert.Equal([0, 3], Enumerable.Range(0, 6).Where(CheckpointingPolicy.BlockSkip(3).Checkpoints));
        Assert.Equal(Enumerable.Range(0, 6), Enumerable.Range(0, 6).Where(CheckpointingPolicy.FromRecipe("block_skip")!.Checkpoints));
        Assert.Equal(Enumerable.Range(0, 6), Enumerable.Range(0, 6).Where(CheckpointingPolicy.Full.Checkpoints));
        Assert.Null(CheckpointingPolicy.FromRecipe(null));
        Assert.Throws<UserError>(() => CheckpointingPolicy.FromRecipe("all"));
    }

    [Theory]
    [InlineData("full")]
    [InlineData("ops")]
    public void CheckpointedGradientsMatchThePyTorchReference(string name)
    {
        // The same check as WanTransformerParityTests' gradient test, against PyTorch autograd of the reference model.
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(TestPaths.Fixture("wan_tiny", "inputs.safetensors"));
        var exp = SafeTensors.Load(TestPaths.Fixture("wan_tiny", "expected_grads.safetensors"));
        using var model = WanTransformer3DModel.FromPretrained(TestPaths.Fixture("wan_tiny"));
        foreach (var p in model.parameters()) p.requires_grad = true;
        model.GradientCheckpointing = Parse(name);
        var outp = model.Forward(inp["latents"], full([2], 500.5f), inp["prompt_embeds"]);
        (outp * exp["loss_weight"]).sum().backward();
        ActivationCheckpoint.CompleteBackward();
        foreach (var (n, p) in model.named_parameters())
        {
            var reference = exp["grad." + n];
            double rel = (p.grad! - reference).abs().max().item<float>() / Math.Max(1e-3, reference.abs().max().item<float>());
            Assert.True(rel < 1e-4, $"{name}: grad of {n}: max abs error {rel:E2} relative to its largest value");
        }
    }

    [Theory]
    [InlineData("full")]
    [InlineData("ops")]   // the kept-attention backward computes in fp32, the plain one in bf16
    public void Bf16CheckpointedGradientsAreAsAccurateAsPlainBf16(string name)
    {
        // bf16 rounds differently when gradients accumulate in another order, so the measure is the distance to the
        // fp32 gradients: checkpointing may not add to bf16's own error.
        using var model = WanTransformer3DModel.CreateRandom(Tiny, 8);
        using var truth = Run(model, null);
        model.to(ScalarType.BFloat16);
        using var plain = Run(model, null);
        using var ckpt = Run(model, Parse(name));
        // Mean over tensors of each one's relative error (the worst is a near-zero gradient that bf16 gets wrong anyway).
        double plainErr = truth.Grads.Average(kv => Relative(plain.Grads[kv.Key], kv.Value));
        double ckptErr = truth.Grads.Average(kv => Relative(ckpt.Grads[kv.Key], kv.Value));
        log.WriteLine($"bf16 {name}: mean relative gradient error against fp32 {ckptErr:E2} (plain bf16 {plainErr:E2})");
        Assert.True(ckptErr <= 1.25 * plainErr, $"bf16 {name}: mean gradient error {ckptErr:E2} against fp32, plain bf16 {plainErr:E2}");
    }

    [Fact]
    public void NoGradAndFrozenForwardsRunPlainly()
    {
        using var model = WanTransformer3DModel.CreateRandom(Tiny, 3);
        model.GradientCheckpointing = CheckpointingPolicy.Full;
        using var g = new Generator(1, device("cpu"));
        using var x = randn([1, 4, 1, 4, 4], generator: g);
        using var text = randn([1, 3, 16], generator: g);
        using var t = tensor(new[] { 500f });
        int before = ActivationCheckpoint.CheckpointedOnThread;
        Tensor reference;
        using (no_grad()) reference = model.Forward(x, t, text);
        Assert.Equal(before, ActivationCheckpoint.CheckpointedOnThread);

        foreach (var p in model.parameters()) p.requires_grad = false;   // a frozen role, inputs without grad
        using (var y = model.Forward(x, t, text))
        {
            Assert.False(y.requires_grad);
            Assert.Equal(before, ActivationCheckpoint.CheckpointedOnThread);
            Assert.True(y.allclose(reference, 0, 0));
        }

        // Frozen parameters but an input that needs its gradient (a frozen model in a gradient path): checkpointed.
        using var xg = x.clone().requires_grad_();
        using (var y = model.Forward(xg, t, text))
        {
            Assert.Equal(before + Tiny.NumLayers, ActivationCheckpoint.CheckpointedOnThread);
            Assert.True(y.allclose(reference, 0, 0));
            y.sum().backward();
            ActivationCheckpoint.CompleteBackward();
        }
        Assert.True(xg.grad!.abs().sum().item<float>() > 0);
        Assert.All(model.parameters(), p => Assert.True(p.grad is null));
        reference.Dispose();
    }

    [Fact]
    public void AnErrorWhileRecomputingIsRethrownAfterBackward()
    {
        // An exception cannot cross the native autograd engine: it is kept and rethrown once backward has returned.
        using var scope = NewDisposeScope();
        var w = new TorchSharp.Modules.Parameter(randn([3, 3]));
        var x = randn([2, 3]);
        int calls = 0;
        var y = ActivationCheckpoint.Apply(a => ++calls == 2 ? throw new InvalidOperationException("boom") : a[0].matmul(w), [x], [w]);
        y.sum().backward();
        var e = Assert.Throws<InvalidOperationException>(ActivationCheckpoint.CompleteBackward);
        Assert.Contains("boom", e.Message);
        Assert.StartsWith("activation checkpointing: recomputing a checkpointed block failed in backward", e.Message);   // names the node
        Assert.True(w.grad is null);
        ActivationCheckpoint.CompleteBackward();   // reported once
    }
}

/// <summary>Reads the process-wide generator, so it runs alone: other tests draw from it on other threads.</summary>
[CollectionDefinition(nameof(GlobalRngCollection), DisableParallelization = true)]
public sealed class GlobalRngCollection;

[Collection(nameof(GlobalRngCollection))]
public class ActivationCheckpointRngTests
{
    private static WanTransformerConfig Tiny => ActivationCheckpointTests.TinyConfig;

    [Fact]
    public void TheBlocksDrawNoRandomNumbers()
    {
        // Recomputation replays the forward without restoring RNG state (as upstream, preserve_rng_state=False): a
        // block that drew random numbers (dropout p > 0) would recompute different activations.
        using var model = WanTransformer3DModel.CreateRandom(Tiny, 4);
        model.train();
        using var g = new Generator(2, device("cpu"));
        using var x = randn([1, 4, 1, 4, 4], generator: g);
        using var text = randn([1, 3, 16], generator: g);
        using var t = tensor(new[] { 500f });
        using var before = torch.random.get_rng_state();
        using (var y = model.Forward(x, t, text)) { }
        using var after = torch.random.get_rng_state();
        Assert.True(before.eq(after).all().item<bool>(), "a Wan forward in train mode drew from the global generator");
    }
}

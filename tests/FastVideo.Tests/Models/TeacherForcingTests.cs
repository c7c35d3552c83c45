using FastVideo.Models.Dits;
using FastVideo.Weights;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Models;

/// <summary>
/// The causal transformer's teacher-forcing forward ([clean | noisy] in one sequence) against an independent path:
/// streaming, block by block, where each noisy block is predicted after the clean blocks before it were written to the
/// cache as context. Its gradients against central differences of that streamed loss.
/// </summary>
public class TeacherForcingTests
{
    private static readonly string ModelDir = TestPaths.Fixture("wan_tiny");
    private static readonly string Inputs = TestPaths.Fixture("wan_causal_tiny", "inputs.safetensors");

    private static CausalWanTransformer3DModel Load(int framesPerBlock, int local = -1) =>
        CausalWanTransformer3DModel.FromPretrained(ModelDir, new CausalAttentionConfig { NumFramesPerBlock = framesPerBlock, LocalAttnSize = local });

    private static double MaxAbs(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    /// <summary>Each noisy block streamed after the clean blocks before it were stored at <paramref name="cleanT"/>.</summary>
    private static Tensor Streamed(CausalWanTransformer3DModel model, Tensor noisy, Tensor t, Tensor text, Tensor clean, Tensor cleanT)
    {
        long frames = noisy.shape[2];
        int block = model.Attention.NumFramesPerBlock;
        using var cache = model.NewCache(noisy.shape[3], noisy.shape[4], capacityFrames: (int)frames);
        var outputs = new List<Tensor>();
        for (long s = 0; s < frames; s += block)
        {
            long n = Math.Min(block, frames - s);
            outputs.Add(model.ForwardStreaming(noisy.narrow(2, s, n), t.narrow(1, s, n), text, cache, s));
            model.ForwardStreaming(clean.narrow(2, s, n), cleanT.narrow(1, s, n), text, cache, s);   // the block's clean context
        }
        return cat(outputs.ToArray(), 2);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void EachBlockSeesTheCleanEarlierBlocksAsStreamingDoes(int framesPerBlock)
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        using var model = Load(framesPerBlock);
        using var _ = no_grad();
        var noisy = inp["latents"];                 // [2,4,5,8,8]: 5 frames, so the last block is short for 2 and 3
        var text = inp["prompt_embeds"];
        using var g = new Generator(5, CPU);
        var clean = randn(noisy.shape, generator: g);
        var t = rand([2, 5], generator: g) * 1000;
        var tf = model.ForwardTeacherForcing(noisy, t, text, clean);
        Assert.True(MaxAbs(tf, Streamed(model, noisy, t, text, clean, zeros([2, 5]))) < 1e-4);
        // A clean timestep other than 0 is the context's timestep.
        var cleanT = full([2, 5], 37f);
        Assert.True(MaxAbs(model.ForwardTeacherForcing(noisy, t, text, clean, cleanT), Streamed(model, noisy, t, text, clean, cleanT)) < 1e-4);
        // What makes this bite: the first block sees no context, so it is the plain forward's; later blocks see clean
        // frames where the plain block-causal forward sees noisy ones.
        var plain = model.Forward(noisy, t, text);
        Assert.True(MaxAbs(tf.narrow(2, 0, framesPerBlock), plain.narrow(2, 0, framesPerBlock)) < 1e-4);
        Assert.True(MaxAbs(tf, plain) > 1e-2);
    }

    [Fact]
    public void GradientsMatchCentralDifferencesOfTheStreamedLoss()
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        using var model = Load(2);
        var noisy = inp["latents"];
        var text = inp["prompt_embeds"];
        using var g = new Generator(6, CPU);
        var clean = randn(noisy.shape, generator: g);
        var t = rand([2, 5], generator: g) * 1000;
        var weight = randn(noisy.shape, generator: g);
        var parameters = model.parameters().ToList();
        foreach (var p in parameters) p.requires_grad = true;
        (model.ForwardTeacherForcing(noisy, t, text, clean) * weight).sum().backward();

        // d/dh L(theta + h d) at h = 0, with L evaluated by streaming (no autograd), against <grad, d>.
        var direction = parameters.Select(p => randn(p.shape, generator: g) * (p.abs().mean() + 1e-3)).ToList();
        double analytic = parameters.Zip(direction).Sum(x => (x.First.grad! * x.Second).sum().item<float>());
        double Loss(double h)
        {
            using var _ = no_grad();
            foreach (var (p, d) in parameters.Zip(direction)) p.add_(d * h);
            double l = (Streamed(model, noisy, t, text, clean, zeros([2, 5])).to_type(ScalarType.Float64) * weight.to_type(ScalarType.Float64)).sum().item<double>();
            foreach (var (p, d) in parameters.Zip(direction)) p.sub_(d * h);
            return l;
        }
        const double h = 1e-3;
        double numeric = (Loss(h) - Loss(-h)) / (2 * h);
        Assert.True(Math.Abs(numeric - analytic) < 2e-2 * Math.Abs(analytic) + 1e-3, $"directional derivative {analytic} by autograd, {numeric} by differences");

    }

    [Fact]
    public void LocalAttentionIsRefused()
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        using var model = Load(1, local: 2);
        var e = Assert.Throws<UserError>(() => model.ForwardTeacherForcing(inp["latents"], full([2, 5], 500f), inp["prompt_embeds"], inp["latents"]));
        Assert.Contains("local_attn_size: -1", e.Message);
    }
}

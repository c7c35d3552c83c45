using FastVideo.Models.Schedulers;
using FastVideo.Models.Vae;
using FastVideo.Train.Utils;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Models;

/// <summary>Flow-matching math against values worked out by hand (formulas evaluated in double here).</summary>
public class SchedulerMathTests
{
    private static double Shifted(double u, double s) => s * u / (1 + (s - 1) * u);

    [Fact]
    public void TrainingGridWithoutShiftIsIntegerTimesteps()
    {
        var s = new FlowMatchEulerDiscreteScheduler(1.0);
        Assert.Equal(1000, s.TrainTimesteps.Length);
        Assert.Equal(1000f, s.TrainTimesteps[0]);
        Assert.Equal(1f, s.TrainSigmas[0]);
        Assert.Equal(501f, s.TrainTimesteps[499], 3);
        Assert.Equal(1f, s.TrainTimesteps[999], 4);
        Assert.Equal(0.001, s.SigmaMin, 6);
    }

    [Fact]
    public void TrainingGridIsShifted()
    {
        var s = new FlowMatchEulerDiscreteScheduler(3.0);
        // i = 500 -> u = 0.5 -> sigma = 3*0.5 / (1 + 2*0.5) = 0.75
        Assert.Equal(0.75, s.TrainSigmas[500], 6);
        Assert.Equal(750.0, s.TrainTimesteps[500], 3);
        Assert.Equal(Shifted(0.001, 3), s.SigmaMin, 6);
        for (int i = 1; i < 1000; i++) Assert.True(s.TrainSigmas[i] < s.TrainSigmas[i - 1]);
    }

    [Fact]
    public void SetTimestepsShiftsTheAlreadyShiftedEnds()
    {
        var s = new FlowMatchEulerDiscreteScheduler(3.0);
        s.SetTimesteps(4);
        double end = 1000 * Shifted(0.001, 3); // 2.994...
        var expected = Enumerable.Range(0, 4).Select(i => 1000 * Shifted((1000 + (end - 1000) * i / 3.0) / 1000, 3)).ToArray();
        Assert.Equal(4, s.Timesteps.Length);
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], s.Timesteps[i], 2);
        Assert.Equal(1000.0, s.Timesteps[0], 3);
        Assert.Equal(857.69, s.Timesteps[1], 1);
        Assert.Equal(602.15, s.Timesteps[2], 1);
        Assert.Equal(8.93, s.Timesteps[3], 1);
        Assert.Equal(5, s.Sigmas.Length);
        Assert.Equal(0f, s.Sigmas[4]);
    }

    [Fact]
    public void StepIsEulerOnSigmas()
    {
        var s = new FlowMatchEulerDiscreteScheduler(3.0);
        s.SetTimesteps(4);
        using var x = full([2, 3], 1.0f);
        using var v = full([2, 3], 2.0f);
        using var x1 = s.Step(v, s.Timesteps[0], x);
        Assert.Equal(1 + (s.Sigmas[1] - s.Sigmas[0]) * 2.0, x1.mean().item<float>(), 5);
        using var x2 = s.Step(v, s.Timesteps[1], x1);
        Assert.Equal(1 + (s.Sigmas[2] - s.Sigmas[0]) * 2.0, x2.mean().item<float>(), 5);
        Assert.Throws<ArgumentException>(() => new FlowMatchEulerDiscreteScheduler(3.0).Step(v, 123.456f, x));
    }

    [Fact]
    public void AddNoiseAcceptsEveryAllowedTimestepShape()
    {
        var s = new FlowMatchEulerDiscreteScheduler(3.0);
        using var scope = NewDisposeScope();
        var x0 = ones(4, 2, 3, 3);
        var eps = zeros(4, 2, 3, 3);
        // [1]: one sigma for all rows. t = 750 -> sigma 0.75 -> 0.25 * x0.
        var a = s.AddNoise(x0, eps, tensor(new[] { 750f }));
        Assert.Equal(0.25, a.mean().item<float>(), 4);
        // [M]: one per row, nearest lookup (751 -> 750).
        var b = s.AddNoise(x0, eps, tensor(new[] { 1000f, 751f, 750f, 0f }));
        Assert.Equal(0.0, b[0].mean().item<float>(), 4);
        Assert.Equal(0.249, b[1].mean().item<float>(), 3); // the grid point nearest 751 has sigma ~0.751
        Assert.True(b[3].mean().item<float>() > 0.99);
        // [B,T] flattened to M = 4.
        var c = s.AddNoise(x0, eps, tensor(new[] { 1000f, 751f, 750f, 0f }).reshape(2, 2));
        Assert.True(c.allclose(b));
        // Anything else is an error.
        Assert.Throws<ArgumentException>(() => s.AddNoise(x0, eps, tensor(new[] { 1f, 2f, 3f })));
        // Output dtype follows the noise.
        Assert.Equal(ScalarType.BFloat16, s.AddNoise(x0, eps.to_type(ScalarType.BFloat16), tensor(new[] { 500f })).dtype);
    }

    [Fact]
    public void DensitySchemesFollowTheirFormulas()
    {
        using var scope = NewDisposeScope();
        var g1 = new Generator(7, device("cpu"));
        var g2 = new Generator(7, device("cpu"));
        var u = TimestepSampling.Density(WeightingScheme.Uniform, 5, g1);
        var r = rand([5], generator: g2);
        Assert.True(u.allclose(r));

        var m = TimestepSampling.Density(WeightingScheme.Mode, 5, g1, modeScale: 1.29);
        var u0 = rand([5], generator: g2).data<float>().ToArray();
        var mv = m.data<float>().ToArray();
        for (int i = 0; i < 5; i++)
        {
            double c = Math.Cos(Math.PI * u0[i] / 2);
            Assert.Equal(1 - u0[i] - 1.29 * (c * c - 1 + u0[i]), mv[i], 5);
        }

        var ln = TimestepSampling.Density(WeightingScheme.LogitNormal, 4000, new Generator(3, device("cpu")), logitMean: 1.0, logitStd: 0.5);
        var sorted = ln.sort().Values.data<float>().ToArray();
        Assert.Equal(1 / (1 + Math.Exp(-1.0)), sorted[2000], 1); // median of sigmoid(N(1, .5)) = sigmoid(1)
        Assert.True(sorted[0] > 0 && sorted[^1] < 1);
    }

    [Fact]
    public void GridTimestepsIndexFromTheNoisyEndAndClamp()
    {
        var s = new FlowMatchEulerDiscreteScheduler(3.0);
        using var t = FlowMatch.GridTimesteps(s, tensor(new[] { 0f, 0.5f, 0.99999f, 1.0f }));
        var v = t.data<float>().ToArray();
        Assert.Equal(s.TrainTimesteps[0], v[0]);
        Assert.Equal(s.TrainTimesteps[500], v[1]);
        Assert.Equal(s.TrainTimesteps[999], v[2]);
        Assert.Equal(s.TrainTimesteps[999], v[3]); // u = 1 would index past the grid upstream
    }

    [Fact]
    public void GetSigmasNeedsExactGridMembership()
    {
        var s = new FlowMatchEulerDiscreteScheduler(3.0);
        using var sig = FlowMatch.GetSigmas(s, tensor(new[] { s.TrainTimesteps[0], s.TrainTimesteps[500] }), 5, ScalarType.Float32);
        Assert.Equal(new long[] { 2, 1, 1, 1, 1 }, sig.shape);
        Assert.Equal(0.75, sig[1].item<float>(), 6);
        Assert.Throws<ArgumentException>(() => FlowMatch.GetSigmas(s, tensor(new[] { 750.5f }), 5, ScalarType.Float32));
    }

    [Fact]
    public void ShiftTimestepMatchesFormula()
    {
        using var t = tensor(new[] { 0f, 250f, 500f, 1000f });
        var v = FlowMatch.ShiftTimestep(t, 3.0, 1000).data<float>().ToArray();
        Assert.Equal(0, v[0], 4);
        Assert.Equal(1000 * Shifted(0.25, 3), v[1], 2); // 500
        Assert.Equal(750, v[2], 2);
        Assert.Equal(1000, v[3], 2);
        Assert.True(FlowMatch.ShiftTimestep(t, 1.0, 1000).allclose(t));
    }

    [Fact]
    public void PredNoiseToPredVideoUsesNearestGridSigma()
    {
        var s = new FlowMatchEulerDiscreteScheduler(3.0);
        using var scope = NewDisposeScope();
        var xt = full([2, 1, 2, 2], 3.0f);
        var v = full([2, 1, 2, 2], 2.0f);
        var x0 = FlowMatch.PredNoiseToPredVideo(v, xt, tensor(new[] { 750.2f }), s);
        Assert.Equal(3 - 0.75 * 2, x0.mean().item<float>(), 5);
        var x0b = FlowMatch.PredNoiseToPredVideo(v, xt, tensor(new[] { 1000f, 750f }), s);
        Assert.Equal(1.0, x0b[0].mean().item<float>(), 5);
        Assert.Throws<ArgumentException>(() => FlowMatch.PredNoiseToPredVideo(v, xt, tensor(new[] { 1f, 2f, 3f }), s));
    }

    [Fact]
    public void NormalizeDitInputForWanAndHunyuan()
    {
        using var scope = NewDisposeScope();
        var vae = VaeConfig.Load(TestPaths.Fixture("wan_tiny", "vae", "config.json"));
        Assert.Equal(4, vae.LatentChannels);
        var z = arange(4, dtype: ScalarType.Float32).reshape(1, 4, 1, 1, 1).expand(2, 4, 2, 3, 3).contiguous();
        var n = vae.Normalize(z);
        for (int c = 0; c < 4; c++)
            Assert.Equal((c - vae.LatentsMean![c]) / vae.LatentsStd![c], n[0, c, 0, 0, 0].item<float>(), 5);
        Assert.True(vae.Denormalize(n).allclose(z, 1e-5, 1e-5));

        var h = VaeConfig.HunyuanDefault.Normalize(full([1, 16, 1, 1, 1], 2.0f));
        Assert.Equal(2 * 0.476986, h.mean().item<float>(), 5);
        Assert.Equal(16, VaeConfig.WanDefault.LatentsMean!.Count);
        Assert.Equal(-0.7571, VaeConfig.WanDefault.LatentsMean![0]);
        Assert.Equal(1.9160, VaeConfig.WanDefault.LatentsStd![15]);
    }
}

using FastVideo.Models.Schedulers;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Models;

/// <summary>The Self-Forcing flow-matching scheduler (spec 3.2) against values worked out by hand.</summary>
public class SelfForcingSchedulerTests
{
    private static double Shifted(double u, double s) => s * u / (1 + (s - 1) * u);

    [Fact]
    public void TrainingGridIsTheShiftedLinspaceWithoutItsEnd()
    {
        var sf = SelfForcingFlowMatchScheduler.ForTraining(5.0);
        Assert.Equal(1000, sf.TrainTimesteps.Length);
        Assert.Equal(1000f, sf.TrainTimesteps[0]);
        // base_i = 1 - i/1000 (the 1001st point, 0, is dropped), sigma = 5u / (1 + 4u).
        foreach (int i in new[] { 1, 250, 500, 999 })
        {
            Assert.Equal(Shifted(1 - i / 1000.0, 5), sf.TrainSigmas[i], 5);
            Assert.Equal(1000 * Shifted(1 - i / 1000.0, 5), sf.TrainTimesteps[i], 2);
        }
        Assert.Equal(833.333, sf.TrainTimesteps[500], 2);
        // The same grid as the Euler training grid of the same shift (up to float noise).
        var euler = new FlowMatchEulerDiscreteScheduler(5.0);
        for (int i = 0; i < 1000; i++) Assert.True(Math.Abs(euler.TrainTimesteps[i] - sf.TrainTimesteps[i]) < 1e-3, $"grid point {i}");
        // Without shift the timesteps are the integers 1000, 999, ..., 1.
        var plain = SelfForcingFlowMatchScheduler.ForTraining(1.0);
        Assert.Equal(1000f, plain.TrainTimesteps[0]);
        Assert.Equal(1f, plain.TrainTimesteps[999], 3);
    }

    [Fact]
    public void FortyEightStepTeacherGridHoldsTheUsualKdTimesteps()
    {
        // Spec 6.6: with 48 steps and shift 5 the integer grid contains 1000, 995, 937, 833, 625 (k = 0, 1, 12, 24, 36).
        var grid = SelfForcingFlowMatchScheduler.OdeGrid(48, 5.0);
        var ints = grid.TrainTimesteps.Select(t => (int)t).ToArray();
        Assert.Equal(48, ints.Length);
        Assert.Equal(new[] { 1000, 995, 937, 833, 625 }, new[] { ints[0], ints[1], ints[12], ints[24], ints[36] });
        Assert.Equal((int)(1000 * Shifted(1 - 47 / 48.0, 5)), ints[47]);
    }

    [Fact]
    public void OtherVariantsFlipReverseAndKeepTheEnd()
    {
        // No extra step: linspace(1, sigma_min, n) includes sigma_min; default sigma_min = 0.003/1.002.
        var s = new SelfForcingFlowMatchScheduler(numInferenceSteps: 4, shift: 1.0);
        double min = 0.003 / 1.002;
        Assert.Equal(new[] { 1.0, 1 - (1 - min) / 3, 1 - 2 * (1 - min) / 3, min }, s.TrainSigmas.Select(x => (double)x).ToArray(), new Tol(1e-6));
        var inv = new SelfForcingFlowMatchScheduler(numInferenceSteps: 4, shift: 1.0, inverseTimesteps: true);
        Assert.Equal(s.TrainSigmas.Reverse(), inv.TrainSigmas);
        var rev = new SelfForcingFlowMatchScheduler(numInferenceSteps: 4, shift: 1.0, reverseSigmas: true);
        Assert.Equal(s.TrainSigmas.Select(x => 1 - x), rev.TrainSigmas);
    }

    [Fact]
    public void AddNoiseStepAndWeightsUseTheNearestGridPoint()
    {
        var sf = SelfForcingFlowMatchScheduler.ForTraining(3.0, training: true);
        using var scope = NewDisposeScope();
        var x0 = full([2, 1, 2, 2], 2f);
        var eps = full([2, 1, 2, 2], -1f);
        // t = 750.2 is nearest to grid point 500 (u = 0.5, t = 750); t = 0.4 to the last one (u = 0.001, t = 2.994).
        var t = tensor(new[] { 750.2f, 0.4f });
        var noisy = sf.AddNoise(x0, eps, t);
        double s0 = Shifted(0.5, 3), s1 = sf.TrainSigmas[999];
        Assert.Equal((1 - s0) * 2 - s0, noisy[0, 0, 0, 0].item<float>(), 5);
        Assert.Equal((1 - s1) * 2 - s1, noisy[1, 0, 0, 0].item<float>(), 5);
        // Step: x + v (sigma_{k+1} - sigma_k); at the last grid point (or to_final) to 0.
        var v = ones([2, 1, 2, 2]);
        var stepped = sf.Step(v, tensor(new[] { 750f, 750f }), x0);
        Assert.Equal(2 + (Shifted(0.499, 3) - s0), stepped[0, 0, 0, 0].item<float>(), 5);
        var last = sf.Step(v, t, x0);   // row 1 is at the last grid point: both rows go to 0 (upstream's any())
        Assert.Equal(2 - s0, last[0, 0, 0, 0].item<float>(), 5);
        Assert.Equal(2 - s1, last[1, 0, 0, 0].item<float>(), 5);
        // Training weights: w(t) = exp(-2((t - 500)/1000)^2), minus its min, scaled to sum 1000; looked up by value.
        var w = sf.TrainingWeights!;
        double Raw(double tt) => Math.Exp(-2 * Math.Pow((tt - 500) / 1000, 2));
        double min = sf.TrainTimesteps.Min(x => Raw(x)), sum = sf.TrainTimesteps.Sum(x => Raw(x) - min);
        Assert.Equal((Raw(sf.TrainTimesteps[500]) - min) * 1000 / sum, sf.TrainingWeight(tensor(new[] { 750f }))[0].item<float>(), 4);
        Assert.Equal(1000, w.Sum(x => (double)x), 1);
        Assert.Throws<ArgumentException>(() => sf.AddNoise(zeros([3, 1]), zeros([3, 1]), zeros([2])));
    }

    private sealed class Tol(double tol) : IEqualityComparer<double>
    {
        public bool Equals(double a, double b) => Math.Abs(a - b) <= tol;
        public int GetHashCode(double x) => 0;
    }
}

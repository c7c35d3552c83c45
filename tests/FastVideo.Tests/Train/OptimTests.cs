using FastVideo.Train.Optim;
using FastVideo.Train.State;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using AdamW = FastVideo.Train.Optim.AdamW;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

public class LrScheduleTests
{
    private static double L(string name, long k, int w = 2, int m = 10, int cycles = 1, double power = 1, double minLr = 0.5,
        string? rules = null, double baseLr = 1e-3) =>
        LrSchedule.Create(name, baseLr, w, m, cycles, power, minLr, rules).Lambda(k);

    [Fact]
    public void ConstantAndWarmup()
    {
        Assert.Equal(1.0, L("constant", 0));
        Assert.Equal(1.0, L("constant", 1000));
        Assert.Equal(0.0, L("constant_with_warmup", 0));
        Assert.Equal(0.5, L("constant_with_warmup", 1));
        Assert.Equal(1.0, L("constant_with_warmup", 2));
        Assert.Equal(1.0, L("constant_with_warmup", 9));
    }

    [Fact]
    public void LinearDecaysToZeroAfterWarmup()
    {
        Assert.Equal(0.5, L("linear", 1));
        Assert.Equal(1.0, L("linear", 2));          // (10-2)/8
        Assert.Equal(0.5, L("linear", 6));          // (10-6)/8
        Assert.Equal(0.0, L("linear", 10));
        Assert.Equal(0.0, L("linear", 12));         // clamped at 0
    }

    [Fact]
    public void CosineFamilies()
    {
        Assert.Equal(0.5, L("cosine", 1));
        Assert.Equal(1.0, L("cosine", 2), 12);
        Assert.Equal(0.5 * (1 + Math.Cos(Math.PI / 4)), L("cosine", 4), 12);   // p = 0.25
        Assert.Equal(0.5, L("cosine", 6), 12);                                 // p = 0.5
        Assert.Equal(0.0, L("cosine", 10), 12);
        // Two restarts: p = 0.25 is halfway through the first cycle, p = 0.5 restarts at 1, p >= 1 is 0.
        Assert.Equal(0.5, L("cosine_with_restarts", 4, cycles: 2), 12);
        Assert.Equal(1.0, L("cosine_with_restarts", 6, cycles: 2), 12);
        Assert.Equal(0.0, L("cosine_with_restarts", 10, cycles: 2));
        // min-lr floor: at p = 7/8 the cosine is 0.038, floored at 0.3; at p = 0.5 it is 0.5.
        Assert.Equal(0.5, L("cosine_with_min_lr", 6, minLr: 0.3), 12);
        Assert.Equal(0.3, L("cosine_with_min_lr", 9, minLr: 0.3), 12);
        Assert.Equal(0.0, L("cosine_with_min_lr", 0, minLr: 0.3));             // warmup still starts at 0
    }

    [Fact]
    public void PolynomialDecaysToLrEnd()
    {
        // base 1e-3, end 1e-7, power 2: at half the decay ((1e-3 - 1e-7) * 0.25 + 1e-7) / 1e-3 = 0.250075.
        Assert.Equal(0.250075, L("polynomial", 6, power: 2), 12);
        Assert.Equal(1.0, L("polynomial", 2, power: 2), 12);
        Assert.Equal(1e-4, L("polynomial", 10, power: 2), 12);
        Assert.Equal(1e-4, L("polynomial", 11, power: 2), 12);
        Assert.Contains("learning_rate", Assert.Throws<UserError>(() => L("polynomial", 0, baseLr: 1e-8)).Message);
        Assert.Contains("max_train_steps", Assert.Throws<UserError>(() => L("polynomial", 0, w: 10, m: 10)).Message);
    }

    [Fact]
    public void PiecewiseConstantFollowsItsRules()
    {
        const string rules = "1:3,0.1:6,0.01";
        Assert.Equal(1.0, L("piecewise_constant", 0, rules: rules));
        Assert.Equal(1.0, L("piecewise_constant", 2, rules: rules));
        Assert.Equal(0.1, L("piecewise_constant", 3, rules: rules));
        Assert.Equal(0.1, L("piecewise_constant", 5, rules: rules));
        Assert.Equal(0.01, L("piecewise_constant", 6, rules: rules));
        Assert.Contains("method.lr_step_rules", Assert.Throws<UserError>(() => L("piecewise_constant", 0)).Message);
        Assert.Contains("'x:3'", Assert.Throws<UserError>(() => L("piecewise_constant", 0, rules: "x:3,0.1")).Message);
    }

    [Fact]
    public void UnknownScheduleNamesTheKey()
    {
        var e = Assert.Throws<UserError>(() => L("cosin", 0));
        Assert.Contains("training.optimizer.lr_scheduler", e.Message);
        Assert.Contains("cosine_with_min_lr", e.Message);
    }

    [Fact]
    public void SchedulerSetsLrFromStepCount()
    {
        var p = new Parameter(zeros(2));
        var adam = new AdamW([("p", p)], lr: 0.01);
        var s = new LambdaLrScheduler(adam, LrSchedule.Create("linear", 0.01, 2, 10));
        Assert.Equal(0.0, adam.Lr);       // k = 0 during the first optimizer step
        s.Step();
        Assert.Equal(0.005, adam.Lr, 15);
        s.Step(); s.Step();
        Assert.Equal(0.01 * 7 / 8, adam.Lr, 15);
        using var state = new TrainingState();
        s.SaveState(state.Root);
        var adam2 = new AdamW([("p", p)], lr: 0.01);
        var s2 = new LambdaLrScheduler(adam2, LrSchedule.Create("linear", 0.01, 2, 10));
        s2.LoadState(state.Root);
        Assert.Equal(3, s2.LastEpoch);
        Assert.Equal(adam.Lr, adam2.Lr);
    }
}

public class AdamWTests
{
    [Fact]
    public void TwoStepsMatchHandComputedValues()
    {
        // One scalar parameter, lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01, gradients 2 then -1.
        var p = new Parameter(tensor(new[] { 1.0 }, dtype: ScalarType.Float64));
        var adam = new AdamW([("w", p)], lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01);

        double w = 1, m = 0, v = 0;
        foreach (var (k, g) in new[] { (1, 2.0), (2, -1.0) })
        {
            p.grad = tensor(new[] { g }, dtype: ScalarType.Float64);
            adam.Step();
            w *= 1 - 0.1 * 0.01;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            w -= 0.1 / (1 - Math.Pow(0.9, k)) * m / (Math.Sqrt(v) / Math.Sqrt(1 - Math.Pow(0.999, k)) + 1e-8);
            Assert.Equal(w, p.item<double>(), 12);
        }
        // Step 1 by hand: 1*(1-0.001) - 0.1*1 = 0.899 (Adam's first step moves by lr·sign(g)).
        Assert.Equal(2, adam.StepOf("w"));
    }

    [Fact]
    public void MatchesTorchAdamWAndSkipsParamsWithoutGrad()
    {
        using var g = new Generator(3, device("cpu"));
        var init = randn([4, 3], generator: g);
        var a = new Parameter(init.clone());
        var b = new Parameter(init.clone());
        var idle = new Parameter(ones(2));
        var ours = new AdamW([("a", a), ("idle", idle)], lr: 0.01, weightDecay: 0.1);
        var theirs = torch.optim.AdamW([b], lr: 0.01, weight_decay: 0.1);
        for (int i = 0; i < 5; i++)
        {
            var grad = randn([4, 3], generator: g);
            a.grad = grad.clone(); b.grad = grad.clone();
            ours.Step(); theirs.step();
        }
        Assert.True(a.allclose(b, 1e-5, 1e-6));
        Assert.Equal(1f, idle[0].item<float>());
        Assert.Equal(0, ours.StepOf("idle"));
        ours.ZeroGrad();
        Assert.Null(a.grad);
    }

    [Fact]
    public void StateRoundTripsBitForBit()
    {
        using var g = new Generator(5, device("cpu"));
        var p1 = new Parameter(randn([3], generator: g));
        var p2 = new Parameter(p1.detach().clone());
        var o1 = new AdamW([("p", p1)], lr: 0.01);
        var grads = Enumerable.Range(0, 4).Select(_ => randn([3], generator: g)).ToArray();
        p1.grad = grads[0].clone(); o1.Step();
        p1.grad = grads[1].clone(); o1.Step();
        using var state = new TrainingState();
        o1.SaveState(state.Root.Scope("opt"));
        var o2 = new AdamW([("p", p2)], lr: 0.01);
        using (no_grad()) p2.copy_(p1);
        o2.LoadState(state.Root.Scope("opt"));
        for (int i = 2; i < 4; i++)
        {
            p1.grad = grads[i].clone(); o1.Step();
            p2.grad = grads[i].clone(); o2.Step();
        }
        Assert.True(p1.eq(p2).all().item<bool>());
    }

    [Fact]
    public void MomentsExistFromTheStartButOnlySteppedOnesAreSaved()
    {
        // Allocated with the optimizer (before the first activations), so the first steps do not fragment the heap;
        // a checkpoint still holds only the parameters that stepped, as torch's state does.
        var a = new Parameter(ones(3));
        var idle = new Parameter(ones(2));
        var adam = new AdamW([("a", a), ("idle", idle)], lr: 0.01);
        a.grad = ones(3);
        adam.Step();
        using var state = new TrainingState();
        adam.SaveState(state.Root.Scope("opt"));
        Assert.True(state.Root.Scope("opt").Scope("state").Scope("a").HasValue("step"));
        Assert.False(state.Root.Scope("opt").Scope("state").Scope("idle").HasValue("step"));
        // Restored, the idle parameter starts fresh and steps like in the uninterrupted optimizer.
        var adam2 = new AdamW([("a", a), ("idle", idle)], lr: 0.01);
        adam2.LoadState(state.Root.Scope("opt"));
        Assert.Equal((1L, 0L), (adam2.StepOf("a"), adam2.StepOf("idle")));
        idle.grad = ones(2);
        adam2.Step();
        Assert.Equal(1L, adam2.StepOf("idle"));
    }
}

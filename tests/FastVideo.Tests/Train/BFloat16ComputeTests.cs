using FastVideo.Configs;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>bf16 compute over fp32 master weights (training.compute_precision), as FastVideo's bf16 autocast.</summary>
public class BFloat16ComputeTests
{
    private static WanModel Build(string compute, string? checkpointing = null)
    {
        var run = WanModelTests.Run();
        run = run with
        {
            Training = run.Training with
            {
                ComputePrecision = compute,
                Model = run.Training.Model with { EnableGradientCheckpointingType = checkpointing },
            },
        };
        return (WanModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
    }

    /// <summary>Loss and every master gradient of one flow-matching step.</summary>
    private static (double Loss, Dictionary<string, Tensor> Grads, ScalarType OutputDtype) Step(WanModel model)
    {
        using var raw = WanModelTests.Batch();
        using var g = new Generator(3, device("cpu"));
        using var tb = model.PrepareBatch(raw, g);
        var v = model.PredictNoise(tb.NoisyModelInput.permute(0, 2, 1, 3, 4), tb.Timesteps, tb, conditional: true);
        var target = (tb.Noise - tb.Latents.permute(0, 2, 1, 3, 4)).permute(0, 2, 1, 3, 4);
        var loss = nn.functional.mse_loss(v, target);
        model.Backward(loss, null, 1);
        var grads = model.Transformer.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        return (loss.item<float>(), grads, v.dtype);
    }

    [Fact]
    public void Bf16ComputeKeepsFp32MastersAndStaysCloseToFp32()
    {
        using var fp32 = Build("fp32");
        using var bf16 = Build("bf16");
        Assert.Equal(ScalarType.Float32, fp32.ComputeDtype);
        Assert.Equal(ScalarType.BFloat16, bf16.ComputeDtype);
        Assert.All(bf16.Transformer.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));

        var (l32, g32, out32) = Step(fp32);
        var (l16, g16, out16) = Step(bf16);
        Assert.Equal(ScalarType.Float32, out32);
        Assert.Equal(ScalarType.Float32, out16);   // the output returns in the master dtype
        Assert.True(Math.Abs(l16 - l32) / l32 < 1e-2, $"loss {l16} vs {l32}");
        Assert.NotEqual(l32, l16);                 // it did compute in bf16
        foreach (var (name, a) in g32)
        {
            var b = g16[name];
            Assert.Equal(ScalarType.Float32, b.dtype);
            double rel = (a - b).norm().item<float>() / Math.Max(1e-12, a.norm().item<float>());
            Assert.True(rel < 5e-2, $"{name}: bf16 gradient differs by {rel:E2} relative");
        }
    }

    [Theory]
    [InlineData("full")]
    [InlineData("ops")]
    public void CheckpointingUnderBf16ComputeMatchesThePlainBf16Step(string policy)
    {
        using var plain = Build("bf16");
        using var ckpt = Build("bf16", policy);
        var (lp, gp, _) = Step(plain);
        var (lc, gc, _) = Step(ckpt);
        Assert.Equal(lp, lc, 6);
        foreach (var (name, a) in gp)
        {
            double rel = (a - gc[name]).norm().item<float>() / Math.Max(1e-12, a.norm().item<float>());
            Assert.True(rel < 1e-2, $"{policy}: {name} differs by {rel:E2}");   // bf16 sums in another order
        }
    }

    [Fact]
    public void AutoMeansBf16ExactlyWhereTheDeviceComputesItNatively()
    {
        bool native = File.Exists("/proc/cpuinfo") && File.ReadAllText("/proc/cpuinfo") is var info
                      && (info.Contains(" avx512_bf16") || info.Contains(" amx_bf16"));
        Assert.Equal(native, Precision.NativeBf16("cpu"));
        Assert.Equal(native ? ScalarType.BFloat16 : ScalarType.Float32, Precision.ResolveCompute("auto", ScalarType.Float32, "cpu"));
        Assert.Equal(ScalarType.BFloat16, Precision.ResolveCompute("auto", ScalarType.Float32, "cuda:0"));
        Assert.Equal(ScalarType.Float32, Precision.ResolveCompute("fp32", ScalarType.BFloat16, "cuda"));
    }

    [Fact]
    public void AnUnknownComputePrecisionIsRefusedWithItsLine()
    {
        var yaml = FastVideo.Tests.Configs.RecipeTestSupport.Minimal + "\ntraining:\n  compute_precision: bf8\n";
        var e = Assert.Throws<RecipeError>(() => FastVideo.Tests.Configs.RecipeTestSupport.Load(yaml));
        Assert.Equal("training.compute_precision", e.KeyPath);
        Assert.Contains("expected one of: auto, fp32, bf16, fp16", e.Message);
    }
}

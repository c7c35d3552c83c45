using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Models;

/// <summary>Comparisons with the fixtures of the PyTorch reference scripts (scripts/make_*_fixtures.py).</summary>
internal static class ReferenceParity
{
    /// <summary>Largest |a − b|, in float64.</summary>
    public static double MaxAbs(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).abs().max().item<double>();
    }

    /// <summary>
    /// Every parameter's gradient against the reference's <c>grad.&lt;name&gt;</c>, as max abs error relative to the
    /// reference's largest value (at least 1e-3), below <paramref name="tolerance"/>(name); the reference has exactly
    /// the model's parameters. Returns the worst relative error among the parameters <paramref name="counted"/> counts.
    /// </summary>
    public static double AssertGradients(nn.Module model, IReadOnlyDictionary<string, Tensor> expected, Func<string, double> tolerance,
        Func<string, bool>? counted = null)
    {
        var names = model.named_parameters().ToList();
        Assert.Equal(expected.Keys.Count(k => k.StartsWith("grad.")), names.Count);
        double worst = 0;
        foreach (var (name, p) in names)
        {
            var reference = expected["grad." + name];
            double scale = Math.Max(1e-3, reference.abs().max().item<float>());
            double rel = MaxAbs(p.grad!, reference) / scale;
            if (counted?.Invoke(name) ?? true) worst = Math.Max(worst, rel);
            Assert.True(rel < tolerance(name), $"grad of {name}: max abs error {rel:E2} relative to its largest value");
        }
        return worst;
    }
}

using System.ComponentModel;
using FastVideo.Configs;
using TorchSharp;
using FastVideo.Train.Methods;
using static TorchSharp.torch;

namespace FastVideo.Train.Callbacks;

/// <summary>The options of the <c>grad_clip</c> callback.</summary>
public sealed record GradClipOptions : ICheckedOptions
{
    [Description("clip each target's gradients to this global L2 norm; 0 = no clipping")]
    public double MaxGradNorm { get; init; } = 1.0;

    [Description("log each target's pre-clip norm as grad_norm/<target>")]
    public bool LogGradNorms { get; init; } = true;

    public IEnumerable<OptionProblem> Check()
    {
        if (!(MaxGradNorm >= 0)) yield return new("max_grad_norm", $"must be >= 0 (0 disables clipping), got {MaxGradNorm}");
    }
}

/// <summary>
/// Clips each grad-clip target's gradients to a global L2 norm (spec 7.1/7.4) before the optimizer step and logs
/// the pre-clip norm as <c>grad_norm/&lt;target&gt;</c>. The coefficient stays a tensor, so clipping does not sync.
/// </summary>
public sealed class GradNormClipCallback : TrainCallback
{
    public GradNormClipCallback(GradClipOptions options) => Options = options;

    public GradClipOptions Options { get; }
    public double MaxGradNorm => Options.MaxGradNorm;
    public bool LogGradNorms => Options.LogGradNorms;

    public override void OnBeforeOptimizerStep(TrainingMethod method, int iteration, StepLog log)
    {
        if (MaxGradNorm <= 0) return;
        foreach (var (name, module) in method.GetGradClipTargets(iteration))
        {
            var total = ClipGradNorm(module.parameters(), MaxGradNorm);
            if (total is not null && LogGradNorms) log.Add($"grad_norm/{name}", total);
        }
    }

    /// <summary>
    /// total = ‖(‖g_1‖, …, ‖g_n‖)‖₂ over existing grads; grads *= min(1, max / (total + 1e-6)). Returns the
    /// pre-clip total (a scalar tensor), or null when no parameter has a gradient.
    /// </summary>
    public static Tensor? ClipGradNorm(IEnumerable<TorchSharp.Modules.Parameter> parameters, double maxNorm)
    {
        using var noGrad = no_grad();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return null;
        var total = stack(grads.Select(g => g.to(ScalarType.Float32).norm()).ToArray()).norm();
        var coef = (maxNorm / (total + 1e-6)).clamp_max(1.0);
        foreach (var g in grads) g.mul_(coef.to(g.dtype));
        return total;
    }
}

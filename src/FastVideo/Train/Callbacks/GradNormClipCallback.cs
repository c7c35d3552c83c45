using TorchSharp;
using FastVideo.Train.Methods;
using static TorchSharp.torch;

namespace FastVideo.Train.Callbacks;

/// <summary>
/// Clips each grad-clip target's gradients to a global L2 norm (spec 7.1/7.4) before the optimizer step and logs
/// the pre-clip norm as <c>grad_norm/&lt;target&gt;</c>. The coefficient stays a tensor, so clipping does not sync.
/// </summary>
public sealed class GradNormClipCallback : TrainCallback
{
    public GradNormClipCallback(Options o)
    {
        MaxGradNorm = o.Double("max_grad_norm", 1.0);
        LogGradNorms = o.Bool("log_grad_norms", true);
        if (MaxGradNorm < 0) throw new UserError($"{o.Path}.max_grad_norm: must be >= 0 (0 disables clipping), got {MaxGradNorm}");
    }

    public double MaxGradNorm { get; }
    public bool LogGradNorms { get; }

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

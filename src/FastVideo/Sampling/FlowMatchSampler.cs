using System.Diagnostics;
using FastVideo.Models.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Sampling;

/// <summary>Predicts v = eps - x0 for latents at timestep [B]: the conditional branch, or the unconditional one of CFG.</summary>
public delegate Tensor VelocityModel(Tensor latents, Tensor timestep, bool conditional);

public sealed record SamplingOptions(int Steps, double GuidanceScale, double FlowShift)
{
    /// <summary>Explicit sigmas (descending, before shifting) instead of an evenly spaced schedule; null = even.</summary>
    public IReadOnlyList<double>? Sigmas { get; init; }
}

/// <summary>Per-step progress report: step (1-based), total steps, timestep, seconds spent in this step.</summary>
public delegate void SamplingProgress(int step, int total, float timestep, double seconds);

/// <summary>
/// Flow-matching Euler sampling with classifier-free guidance, as Diffusers' Wan pipeline does it: the schedule of
/// FlowMatchEulerDiscreteScheduler.set_timesteps(n) with the given shift; per step the model at t (expanded to the
/// batch); with guidance g != 1, v = v_uncond + g (v_cond - v_uncond); then x += (sigma_next - sigma) v.
/// Latents stay float32 between steps whatever dtype the model computes in.
/// </summary>
public static class FlowMatchSampler
{
    public static Tensor Sample(VelocityModel model, Tensor initialLatents, SamplingOptions options, SamplingProgress? progress = null)
    {
        var scheduler = new FlowMatchEulerDiscreteScheduler(options.FlowShift);
        if (options.Sigmas is { } s) scheduler.SetCustomSigmas(s); else scheduler.SetTimesteps(options.Steps);
        long b = initialLatents.shape[0];
        var x = initialLatents.to_type(ScalarType.Float32).clone();
        var total = scheduler.Timesteps.Length;
        for (int i = 0; i < total; i++)
        {
            var sw = Stopwatch.StartNew();
            float t = scheduler.Timesteps[i];
            using (var scope = NewDisposeScope())
            {
                var tb = full([b], t, dtype: ScalarType.Float32, device: x.device);
                var v = Guidance.Guide(options.GuidanceScale, c => model(x, tb, conditional: c).to_type(ScalarType.Float32));
                var next = scheduler.Step(v, t, x);
                x.Dispose();
                x = next.MoveToOuterDisposeScope();
            }
            progress?.Invoke(i + 1, total, t, sw.Elapsed.TotalSeconds);
        }
        return x;
    }
}

using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Sampling;

/// <summary>Predicts the clean sample x0 for BTCHW latents at timestep [B] (any text conditioning is bound in).</summary>
public delegate Tensor X0Model(Tensor latents, Tensor timestep);

/// <summary>Forward process on BTCHW tensors: x_t = (1 - sigma(t)) x0 + sigma(t) eps, timestep [1] or [B].</summary>
public delegate Tensor NoiseAdder(Tensor clean, Tensor noise, Tensor timestep);

/// <summary>
/// Few-step generation as upstream's DMD inference (DmdDenoisingStage): for timesteps t_0 &gt; t_1 &gt; ... start from
/// pure noise x; at each t_i predict x0 = f(x, t_i); unless it is the last step, re-noise to the next timestep with
/// fresh noise, x = (1 - sigma(t_{i+1})) x0 + sigma(t_{i+1}) eps_i; the result is the last x0. Every draw comes from
/// the given generator, in step order, so a seed fixes the sample.
/// </summary>
public static class FewStepSampler
{
    /// <summary>Checks a timestep list: non-empty, strictly descending, each in (0, <paramref name="maxTimestep"/>].</summary>
    public static void Validate(IReadOnlyList<double> timesteps, double maxTimestep = 1000, string what = "timesteps")
    {
        if (Problem(timesteps, maxTimestep) is { } p) throw new UserError($"{what}{p.Index}: {p.Detail}");
    }

    /// <summary>The first problem of <paramref name="timesteps"/>: <c>Index</c> is "" or "[i]" (the offending item).</summary>
    public static (string Index, string Detail)? Problem(IReadOnlyList<double> timesteps, double maxTimestep = 1000)
    {
        if (timesteps.Count == 0) return ("", "need at least one timestep");
        for (int i = 0; i < timesteps.Count; i++)
        {
            if (!(timesteps[i] > 0 && timesteps[i] <= maxTimestep))
                return ($"[{i}]", $"{timesteps[i]} is outside (0, {maxTimestep}]");
            if (i > 0 && !(timesteps[i] < timesteps[i - 1]))
                return ("", $"must be strictly descending, got [{string.Join(", ", timesteps)}]");
        }
        return null;
    }

    /// <param name="model">x0 prediction (conditional, or already guided).</param>
    /// <param name="addNoise">The model's forward process (its sigma lookup).</param>
    /// <param name="initialNoise">x at t_0, BTCHW; not modified.</param>
    /// <param name="timesteps">t_0 &gt; t_1 &gt; ..., on the training scale (e.g. 1000, 750, 500, 250).</param>
    /// <param name="drawNoise">The re-noising draw for a step (one per step but the last), e.g.
    /// <see cref="StandardNoise"/> of the caller's generator.</param>
    /// <param name="gradOnLastStep">Run every step but the last without autograd and the last with it, as a
    /// training rollout needs (DMD2's student); false leaves the caller's grad mode alone.</param>
    /// <param name="stepNoise">Instead of a fresh draw, the noise a step re-noises with, from its input, its x0 and its
    /// timestep (the deterministic ODE step: <see cref="CausalStream.ImpliedNoise"/>); null = <paramref name="drawNoise"/>.</param>
    public static Tensor Sample(X0Model model, NoiseAdder addNoise, Tensor initialNoise, IReadOnlyList<double> timesteps,
        NoiseDraw drawNoise, bool gradOnLastStep = false, SamplingProgress? progress = null, StepNoise? stepNoise = null)
    {
        Validate(timesteps);
        long b = initialNoise.shape[0];
        var x = initialNoise.alias();
        Tensor x0 = null!;
        for (int i = 0; i < timesteps.Count; i++)
        {
            var sw = Stopwatch.StartNew();
            bool last = i == timesteps.Count - 1;
            using (var scope = NewDisposeScope())
            using (gradOnLastStep ? (last ? enable_grad() : no_grad()) : null)
            {
                var t = full([b], timesteps[i], dtype: ScalarType.Float32, device: x.device);
                var pred = model(x, t);
                if (!last)
                {
                    var eps = stepNoise is null ? drawNoise(pred) : stepNoise(x, pred, t);
                    var next = full([b], timesteps[i + 1], dtype: ScalarType.Float32, device: x.device);
                    var noisy = addNoise(pred, eps, next);
                    x.Dispose();
                    x = noisy.MoveToOuterDisposeScope();
                }
                else
                {
                    x0 = pred.MoveToOuterDisposeScope();
                }
            }
            progress?.Invoke(i + 1, timesteps.Count, (float)timesteps[i], sw.Elapsed.TotalSeconds);
        }
        x.Dispose();
        return x0;
    }

    /// <summary>
    /// Standard-normal draws shaped like the prediction, made in float32 on the generator's device
    /// (<paramref name="noiseDevice"/>; CPU by default) and moved to the prediction's device and dtype: the same
    /// draws whatever device the model runs on.
    /// </summary>
    public static NoiseDraw StandardNoise(Generator generator, Device? noiseDevice = null) => like =>
        randn(like.shape, dtype: ScalarType.Float32, device: noiseDevice ?? CPU, generator: generator).to(like.device).to_type(like.dtype);
}

/// <summary>A fresh standard-normal tensor shaped like <paramref name="like"/> (on its device, in its dtype).</summary>
public delegate Tensor NoiseDraw(Tensor like);

/// <summary>The noise a few-step sampler re-noises x0 with after predicting it from <paramref name="x"/> at <paramref name="timestep"/>.</summary>
public delegate Tensor StepNoise(Tensor x, Tensor x0, Tensor timestep);

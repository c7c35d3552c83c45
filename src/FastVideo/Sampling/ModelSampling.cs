using FastVideo.Train.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Sampling;

/// <summary>
/// Runs the samplers through a training <see cref="ModelBase"/> (any family): text conditioning comes from a
/// <see cref="TrainingBatch"/> (its conditional and unconditional dicts, as the model's PrepareBatch built them),
/// latents are BTCHW in and out, and the model's own sigma lookup and negative conditioning are used.
/// Call under <c>no_grad</c> (and with the transformer in eval mode) for inference.
/// </summary>
public static class ModelSampling
{
    /// <summary>Standard-normal noise of <paramref name="shape"/> drawn in float32 on the generator's device
    /// (<paramref name="noiseDevice"/>, CPU by default), then moved to <paramref name="device"/> as <paramref name="dtype"/>.</summary>
    public static Tensor Noise(long[] shape, Generator generator, ScalarType dtype, Device device, Device? noiseDevice = null)
    {
        using var scope = NewDisposeScope();
        var eps = randn(shape, dtype: ScalarType.Float32, device: noiseDevice ?? CPU, generator: generator);
        return eps.to(device).to_type(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Few-step (DMD) sampling with <see cref="ModelBase.PredictX0"/> and <see cref="ModelBase.AddNoise"/>. With
    /// <paramref name="guidanceScale"/> g != 1: x0 = x0_u + g (x0_c - x0_u), which equals guiding v, since x0 is affine in v.
    /// </summary>
    public static Tensor FewStep(ModelBase model, TrainingBatch conditioning, Tensor initialNoise, IReadOnlyList<double> timesteps,
        Generator generator, double guidanceScale = 1.0, CfgUncondPolicy? cfgUncond = null, Device? noiseDevice = null,
        SamplingProgress? progress = null)
    {
        var dtype = conditioning.Latents.dtype;
        X0Model x0 = (x, t) =>
        {
            using var scope = NewDisposeScope();
            var xc = x.to(model.Device).to_type(dtype);
            var cond = model.PredictX0(xc, t, conditioning, conditional: true, cfgUncond);
            if (guidanceScale != 1.0)
            {
                var uncond = model.PredictX0(xc, t, conditioning, conditional: false, cfgUncond);
                cond = uncond + guidanceScale * (cond - uncond);
            }
            return cond.MoveToOuterDisposeScope();
        };
        return FewStepSampler.Sample(x0, model.AddNoise, initialNoise, timesteps, generator, noiseDevice ?? CPU, progress);
    }

    /// <summary>
    /// Euler flow-matching sampling (<see cref="FlowMatchSampler"/>) with <see cref="ModelBase.PredictNoise"/>:
    /// the sampler works on BCTHW, the model on BTCHW, so the delegate permutes both ways.
    /// </summary>
    public static Tensor Euler(ModelBase model, TrainingBatch conditioning, Tensor initialNoise, SamplingOptions options,
        CfgUncondPolicy? cfgUncond = null, SamplingProgress? progress = null)
    {
        var dtype = conditioning.Latents.dtype;
        // The sampler hands the delegate whichever text tensor it was given for the branch. The model resolves its
        // own unconditional text (negative prompt, keep or zero per cfgUncond), so the negative argument is only a
        // marker that identifies the unconditional call.
        using var uncondMarker = empty(0);
        VelocityModel velocity = (x, t, text) =>
        {
            using var scope = NewDisposeScope();
            bool conditional = !ReferenceEquals(text, uncondMarker);
            var xb = x.permute(0, 2, 1, 3, 4).to(model.Device).to_type(dtype); // BCTHW -> BTCHW
            var v = model.PredictNoise(xb, t, conditioning, conditional, cfgUncond);
            return v.permute(0, 2, 1, 3, 4).MoveToOuterDisposeScope();        // BTCHW -> BCTHW
        };
        using var x0 = initialNoise.permute(0, 2, 1, 3, 4);
        using var result = FlowMatchSampler.Sample(velocity, x0, conditioning.Latents, uncondMarker, options, progress);
        return result.permute(0, 2, 1, 3, 4).contiguous();
    }
}

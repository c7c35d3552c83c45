using FastVideo.Train.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Sampling;

/// <summary>
/// The one sampling core, run through a model plugin of any family: conditioning comes from a
/// <see cref="TrainingBatch"/> (its conditional and unconditional sides, as the model's PrepareBatch or
/// PrepareInference built them), latents are BTCHW in and out, and the model's own forward process, sigma lookup and
/// unconditional policy are used. <c>generate</c>, validation, the quickstart evaluation and DMD2's simulated rollout
/// all sample through it. Call under <c>no_grad</c> (and with the transformer in eval mode) for inference.
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
        NoiseDraw drawNoise, double guidanceScale = 1.0, CfgUncondPolicy? cfgUncond = null, bool gradOnLastStep = false,
        AttnKind attnKind = AttnKind.Dense, SamplingProgress? progress = null)
    {
        var dtype = conditioning.Latents.dtype;
        X0Model x0 = (x, t) =>
        {
            using var scope = NewDisposeScope();
            var xc = x.to(model.Device).to_type(dtype);
            var x0 = Guidance.Guide(guidanceScale, c => model.PredictX0(xc, t, conditioning, conditional: c, cfgUncond, attnKind));
            return x0.MoveToOuterDisposeScope();
        };
        return FewStepSampler.Sample(x0, model.AddNoise, initialNoise, timesteps, drawNoise, gradOnLastStep, progress);
    }

    /// <summary>Few-step sampling whose re-noising draws come from <paramref name="generator"/> (see
    /// <see cref="FewStepSampler.StandardNoise"/>).</summary>
    public static Tensor FewStep(ModelBase model, TrainingBatch conditioning, Tensor initialNoise, IReadOnlyList<double> timesteps,
        Generator generator, double guidanceScale = 1.0, CfgUncondPolicy? cfgUncond = null, Device? noiseDevice = null,
        SamplingProgress? progress = null) =>
        FewStep(model, conditioning, initialNoise, timesteps, FewStepSampler.StandardNoise(generator, noiseDevice), guidanceScale,
            cfgUncond, progress: progress);

    /// <summary>Euler flow-matching sampling (<see cref="FlowMatchSampler"/>) with <see cref="ModelBase.PredictNoise"/>;
    /// the unconditional branch is the model's, under <paramref name="cfgUncond"/>.</summary>
    public static Tensor Euler(ModelBase model, TrainingBatch conditioning, Tensor initialNoise, SamplingOptions options,
        CfgUncondPolicy? cfgUncond = null, SamplingProgress? progress = null)
    {
        var dtype = conditioning.Latents.dtype;
        VelocityModel velocity = (x, t, conditional) =>
        {
            using var scope = NewDisposeScope();
            var v = model.PredictNoise(x.to(model.Device).to_type(dtype), t, conditioning, conditional, cfgUncond);
            return v.MoveToOuterDisposeScope();
        };
        // The family's pipeline spacing (HunyuanVideo: linspace(1, 0, n + 1)[:-1]) unless the caller chose sigmas.
        if (options.Sigmas is null && model.SamplingSigmas(options.Steps) is { } sigmas) options = options with { Sigmas = sigmas };
        return FlowMatchSampler.Sample(velocity, initialNoise, options, progress);
    }
}

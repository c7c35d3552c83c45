using static TorchSharp.torch;

namespace FastVideo.Sampling;

/// <summary>
/// Classifier-free guidance, the one formula every sampler and method uses: with scale g != 1,
/// u + g (c - u) of the conditional prediction c and the unconditional one u (v, x0 or a score alike: each is affine
/// in the other); with g = 1 the conditional prediction alone, and the unconditional branch is not run.
/// </summary>
public static class Guidance
{
    /// <param name="scale">The guidance scale g.</param>
    /// <param name="predict">The prediction of one branch: true = conditional, false = unconditional. Called once
    /// (g = 1) or twice, conditional first; the tensors it returns belong to the caller's dispose scope.</param>
    public static Tensor Guide(double scale, Func<bool, Tensor> predict)
    {
        var cond = predict(true);
        if (scale == 1.0) return cond;
        var uncond = predict(false);
        return uncond + scale * (cond - uncond);
    }
}

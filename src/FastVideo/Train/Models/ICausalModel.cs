using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models;

/// <summary>
/// The streaming contract of a causal plugin: predictions over chunks of frames that read and write key/value caches.
/// Cache state lives inside the model instance, keyed by a cache tag, so a method can keep several rollouts apart. A
/// family built on <see cref="ModelBase"/> alone derives <see cref="CausalModelBase"/>; one that extends another
/// plugin (<c>wan_causal</c> extends <c>wan</c>, as upstream's WanCausalModel(WanModel, CausalModelBase)) implements
/// this interface. Methods ask for it with <c>model is ICausalModel</c>.
/// </summary>
public interface ICausalModel
{
    /// <summary>The model's noise scheduler (x0 conversion).</summary>
    FastVideo.Models.Schedulers.INoiseScheduler NoiseScheduler { get; }

    /// <summary>
    /// Frames the non-streaming (block-causal training) forward denoises together, in blocks from frame 0: streaming
    /// chunks of this size, aligned to them, reproduce it.
    /// </summary>
    int NumFramesPerBlock { get; }

    /// <summary>Latent frames of key/value slots each block's cache of <paramref name="cacheTag"/> holds (0: no such caches); for memory accounting.</summary>
    long CacheFrames(string cacheTag = "pos");

    /// <summary>Drops the caches of <paramref name="cacheTag"/> before a new rollout.</summary>
    void ClearCaches(string cacheTag = "pos");

    /// <summary>
    /// Streaming v-prediction for a chunk of frames [B,T,C,H,W] starting at latent frame <paramref name="curStartFrame"/>,
    /// timesteps as a scalar, [B] or [B,T]. With <paramref name="storeKv"/> the call only writes the chunk's keys and
    /// values into the cache (no grad) and returns null.
    /// </summary>
    Tensor? PredictNoiseStreaming(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
        string cacheTag = "pos", bool storeKv = false, int curStartFrame = 0, CfgUncondPolicy? cfgUncond = null,
        AttnKind attnKind = AttnKind.Dense);

    /// <summary>
    /// Teacher forcing (FastVideo's <c>predict_noise(..., clean_x=...)</c>): v-prediction for a whole clip of noisy
    /// frames [B,T,C,H,W] in which each block sees itself and the <em>clean</em> frames <paramref name="cleanLatents"/>
    /// of the earlier blocks (encoded at timestep <paramref name="cleanTimestep"/>, 0 when null) instead of its noisy
    /// predecessors. Timesteps as in <see cref="ModelBase.PredictNoise"/>.
    /// </summary>
    Tensor PredictNoiseTeacherForcing(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, Tensor cleanLatents,
        bool conditional, Tensor? cleanTimestep = null, CfgUncondPolicy? cfgUncond = null, AttnKind attnKind = AttnKind.Dense);

    /// <summary><see cref="PredictNoiseStreaming"/> converted to x0 with this model's scheduler grid.</summary>
    Tensor? PredictX0Streaming(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
        string cacheTag = "pos", bool storeKv = false, int curStartFrame = 0, CfgUncondPolicy? cfgUncond = null,
        AttnKind attnKind = AttnKind.Dense)
    {
        using var scope = NewDisposeScope();
        var v = PredictNoiseStreaming(noisyLatents, timestep, batch, conditional, cacheTag, storeKv, curStartFrame, cfgUncond, attnKind);
        if (v is null) return null;
        return ModelBase.NoiseToX0(v, noisyLatents, timestep, NoiseScheduler).MoveToOuterDisposeScope();
    }
}

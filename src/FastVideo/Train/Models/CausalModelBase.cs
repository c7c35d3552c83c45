using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models;

/// <summary>
/// Causal (streaming) plugins: predictions over chunks of frames that read and write key/value caches. Cache state
/// lives inside the model instance, keyed by a cache tag, so a method can keep several rollouts apart.
/// </summary>
public abstract class CausalModelBase : ModelBase
{
    protected CausalModelBase(ModelBuildContext context) : base(context) { }

    /// <summary>Drops the caches of <paramref name="cacheTag"/> before a new rollout.</summary>
    public abstract void ClearCaches(string cacheTag = "pos");

    /// <summary>
    /// Streaming v-prediction for a chunk of frames starting at <paramref name="curStartFrame"/>. With
    /// <paramref name="storeKv"/> the call only writes the chunk's keys/values into the cache and returns null.
    /// </summary>
    public abstract Tensor? PredictNoiseStreaming(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
        string cacheTag = "pos", bool storeKv = false, int curStartFrame = 0, CfgUncondPolicy? cfgUncond = null,
        AttnKind attnKind = AttnKind.Dense);

    public Tensor? PredictX0Streaming(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
        string cacheTag = "pos", bool storeKv = false, int curStartFrame = 0, CfgUncondPolicy? cfgUncond = null,
        AttnKind attnKind = AttnKind.Dense)
    {
        using var scope = NewDisposeScope();
        var v = PredictNoiseStreaming(noisyLatents, timestep, batch, conditional, cacheTag, storeKv, curStartFrame, cfgUncond, attnKind);
        if (v is null) return null;
        return NoiseToX0(v, noisyLatents, timestep, NoiseScheduler).MoveToOuterDisposeScope();
    }
}

using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Models;

/// <summary>
/// Base of a causal (streaming) plugin that extends no other plugin: <see cref="ModelBase"/> with the
/// <see cref="ICausalModel"/> contract to implement.
/// </summary>
public abstract class CausalModelBase : ModelBase, ICausalModel
{
    protected CausalModelBase(ModelBuildContext context) : base(context) { }

    /// <inheritdoc/>
    public abstract int NumFramesPerBlock { get; }

    /// <inheritdoc/>
    public abstract long CacheFrames(string cacheTag = "pos");

    /// <inheritdoc/>
    public abstract Tensor PredictNoiseTeacherForcing(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, Tensor cleanLatents,
        bool conditional, Tensor? cleanTimestep = null, CfgUncondPolicy? cfgUncond = null, AttnKind attnKind = AttnKind.Dense);

    /// <inheritdoc/>
    public abstract void ClearCaches(string cacheTag = "pos");

    /// <inheritdoc/>
    public abstract Tensor? PredictNoiseStreaming(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
        string cacheTag = "pos", bool storeKv = false, int curStartFrame = 0, CfgUncondPolicy? cfgUncond = null,
        AttnKind attnKind = AttnKind.Dense);
}

using FastVideo.Configs;
using FastVideo.Train.Methods;
using FastVideo.Train.State;

namespace FastVideo.Train.Callbacks;

/// <summary>
/// A training callback. The trainer calls every hook of every callback in recipe order (spec 7.3). Logged values go
/// into the step's <see cref="StepLog"/>; state returned by <see cref="SaveState"/> is checkpointed. A callback
/// disposes what it holds (tensors, validation inputs) in <see cref="Dispose"/>; whoever built it disposes it (the
/// trainer, for the callbacks it builds from the recipe).
/// </summary>
public abstract class TrainCallback : IDisposable
{
    /// <summary>The recipe key (<c>callbacks.&lt;Name&gt;</c>).</summary>
    public string Name { get; internal set; } = "";

    public virtual void OnTrainStart(TrainingMethod method, int iteration) { }
    /// <param name="log">The step's log (validation metrics go into it); null for the validation before the first step.</param>
    public virtual void OnValidationBegin(TrainingMethod method, int iteration, StepLog? log = null) { }
    public virtual void OnValidationEnd(TrainingMethod method, int iteration, StepLog? log = null) { }
    public virtual void OnBeforeOptimizerStep(TrainingMethod method, int iteration, StepLog log) { }
    public virtual void OnTrainingStepEnd(TrainingMethod method, int iteration, StepLog log) { }
    public virtual void OnTrainEnd(TrainingMethod method, int iteration) { }
    public virtual void SaveState(StateScope s) { }
    public virtual void LoadState(StateScope s) { }
    public virtual void Dispose() { }
}

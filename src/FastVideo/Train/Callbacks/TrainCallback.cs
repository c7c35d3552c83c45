using FastVideo.Configs;
using FastVideo.Train.Methods;
using FastVideo.Train.State;

namespace FastVideo.Train.Callbacks;

/// <summary>
/// A training callback. The trainer calls every hook of every callback in recipe order (spec 7.3). Logged values go
/// into the step's <see cref="StepLog"/>; state returned by <see cref="SaveState"/> is checkpointed.
/// </summary>
public abstract class TrainCallback
{
    /// <summary>The recipe key (<c>callbacks.&lt;Name&gt;</c>).</summary>
    public string Name { get; internal set; } = "";

    public virtual void OnTrainStart(TrainingMethod method, int iteration) { }
    public virtual void OnValidationBegin(TrainingMethod method, int iteration) { }
    public virtual void OnValidationEnd(TrainingMethod method, int iteration) { }
    public virtual void OnBeforeOptimizerStep(TrainingMethod method, int iteration, StepLog log) { }
    public virtual void OnTrainingStepEnd(TrainingMethod method, int iteration, StepLog log) { }
    public virtual void OnTrainEnd(TrainingMethod method, int iteration) { }
    public virtual void SaveState(StateScope s) { }
    public virtual void LoadState(StateScope s) { }
}

/// <summary>Callback name -> factory from its option map. Unknown names are user errors naming <c>callbacks.&lt;name&gt;</c>.</summary>
public sealed class CallbackRegistry
{
    private readonly Dictionary<string, Func<Options, TrainCallback>> _factories = new(StringComparer.Ordinal);

    public static CallbackRegistry Default { get; } = CreateBuiltIn();

    public static CallbackRegistry CreateBuiltIn()
    {
        var r = new CallbackRegistry();
        r.Register("grad_clip", o => new GradNormClipCallback(o));
        r.Register("ema", o => new EmaCallback(o));
        r.Register("validation", o => new ValidationCallback(o));
        return r;
    }

    public void Register(string name, Func<Options, TrainCallback> factory)
    {
        if (!_factories.TryAdd(name, factory)) throw new ArgumentException($"callback '{name}' is already registered");
    }

    public IReadOnlyCollection<string> Names => _factories.Keys.Order(StringComparer.Ordinal).ToArray();

    /// <summary>Builds the recipe's callbacks in recipe order (their dispatch order).</summary>
    public IReadOnlyList<TrainCallback> Build(RunConfig config)
    {
        var list = new List<TrainCallback>();
        foreach (var (name, map) in config.Callbacks)
        {
            if (!_factories.TryGetValue(name, out var factory))
                throw new UserError($"callbacks.{name}: unknown callback (known: {string.Join(", ", Names)})");
            var options = new Options(map, $"callbacks.{name}");
            var cb = factory(options);
            options.RejectUnknown();
            cb.Name = name;
            list.Add(cb);
        }
        ValidationCallback.Link(list);   // validation samples with the EMA callback's weights when asked
        return list;
    }
}

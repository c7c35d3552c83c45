using System.ComponentModel;
using FastVideo.Configs;
using FastVideo.Train.Methods;
using FastVideo.Train.State;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Callbacks;

/// <summary>The options of the <c>ema</c> callback.</summary>
public sealed record EmaOptions : ICheckedOptions
{
    [Description("shadow = decay * shadow + (1 - decay) * weight after each step, in [0, 1]")]
    public double Decay { get; init; } = 0.9999;

    [Description("the first step that updates the average (the shadows copy the weights then)")]
    public int StartIter { get; init; }

    public IEnumerable<OptionProblem> Check()
    {
        if (!(Decay is >= 0 and <= 1)) yield return new("decay", $"must be in [0, 1], got {Decay}");
        if (StartIter < 0) yield return new("start_iter", $"must be >= 0, got {StartIter}");
    }
}

/// <summary>
/// Exponential moving average of the student's trainable weights (spec 7.4): fp32 CPU shadows, updated at the end
/// of every step from <c>start_iter</c> on as shadow = d·shadow + (1−d)·param. <see cref="Swap"/> puts the shadows
/// into the live model for validation or export and restores the trained weights when disposed.
/// </summary>
public sealed class EmaCallback : TrainCallback
{
    private readonly Dictionary<string, Tensor> _shadow = new(StringComparer.Ordinal);
    private TrainingMethod? _method;

    public EmaCallback(EmaOptions options) => Options = options;

    public EmaOptions Options { get; }
    public double Decay => Options.Decay;
    public int StartIter => Options.StartIter;
    public bool Started { get; private set; }
    public IReadOnlyDictionary<string, Tensor> Shadow => _shadow;

    private IEnumerable<(string Name, TorchSharp.Modules.Parameter P)> Trainable(TrainingMethod m) =>
        m.Student.Transformer.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter));

    public override void OnTrainStart(TrainingMethod method, int iteration)
    {
        _method = method;
        CopyFromLive(method);
    }

    private void CopyFromLive(TrainingMethod method)
    {
        using var noGrad = no_grad();
        foreach (var (name, p) in Trainable(method))
        {
            using var scope = NewDisposeScope();   // frees the detach/to views; the shadow itself is detached
            if (_shadow.Remove(name, out var old)) old.Dispose();
            _shadow[name] = p.detach().to(ScalarType.Float32, CPU).clone().DetachFromDisposeScope();
        }
    }

    public override void OnTrainingStepEnd(TrainingMethod method, int iteration, StepLog log)
    {
        if (iteration < StartIter) return;
        if (!Started) { CopyFromLive(method); Started = true; }
        using var noGrad = no_grad();
        foreach (var (name, p) in Trainable(method))
        {
            using var scope = NewDisposeScope();
            _shadow[name].mul_(Decay).add_(p.detach().to(ScalarType.Float32, CPU), alpha: 1 - Decay);
        }
        log.Add("ema/decay", Decay);
    }

    /// <summary>Loads the EMA weights into the live student until disposed (a no-op before EMA has started).</summary>
    public IDisposable Swap()
    {
        if (!Started || _method is null) return new Restore([]);
        using var noGrad = no_grad();
        var saved = new List<(TorchSharp.Modules.Parameter, Tensor)>();
        foreach (var (name, p) in Trainable(_method))
        {
            using var scope = NewDisposeScope();
            saved.Add((p, p.detach().clone().DetachFromDisposeScope()));
            p.copy_(_shadow[name]);
        }
        return new Restore(saved);
    }

    private sealed class Restore(List<(TorchSharp.Modules.Parameter P, Tensor Value)> saved) : IDisposable
    {
        public void Dispose()
        {
            using var noGrad = no_grad();
            foreach (var (p, v) in saved) { p.copy_(v); v.Dispose(); }
            saved.Clear();
        }
    }

    public override void SaveState(StateScope s)
    {
        s.PutValue("started", Started);
        foreach (var (name, t) in _shadow) s.Scope("student_ema").PutTensor(name, t);
    }

    public override void LoadState(StateScope s)
    {
        Started = s.GetValue<bool>("started");
        using var scope = NewDisposeScope();
        foreach (var name in _shadow.Keys.ToList())
        {
            var t = s.Scope("student_ema").GetTensor(name, _shadow[name].shape);
            _shadow[name].copy_(t);
        }
    }

    /// <summary>Frees the shadows.</summary>
    public override void Dispose()
    {
        foreach (var t in _shadow.Values) t.Dispose();
        _shadow.Clear();
        Started = false;
        _method = null;
    }
}

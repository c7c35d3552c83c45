using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Train.Models;
using FastVideo.Train.Optim;
using FastVideo.Train.State;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods;

/// <summary>
/// What one micro-step produced. <see cref="Losses"/> holds scalar tensors and must contain <c>total_loss</c>;
/// <see cref="Outputs"/> carries what <see cref="TrainingMethod.Backward"/> needs (e.g. <c>_fv_backward</c>);
/// <see cref="Metrics"/> are extra scalar tensors to log (their keys must not collide with loss keys).
/// </summary>
public sealed record StepResult(
    IReadOnlyDictionary<string, Tensor> Losses,
    IReadOnlyDictionary<string, object?> Outputs,
    IReadOnlyDictionary<string, Tensor> Metrics);

/// <summary>
/// A training method (spec 6.1): owns the roles' losses, optimizers, LR schedulers and update cadence, and a seeded
/// generator from which every random draw of the method and its models is taken (checkpointed).
/// </summary>
public abstract class TrainingMethod : IDisposable
{
    public const string BackwardContextKey = "_fv_backward";

    /// <param name="options">The method's bound options (its own record type; the common ones are read here).</param>
    protected TrainingMethod(RunConfig config, MethodOptions options, IReadOnlyDictionary<string, ModelBase> roles)
    {
        Config = config;
        _roles = new Dictionary<string, ModelBase>(roles, StringComparer.Ordinal);
        Student = roles.TryGetValue("student", out var s) ? s : throw new UserError("roles.student: every method needs a 'student' role");
        _lrStepRules = options.LrStepRules;
    }

    private readonly string? _lrStepRules;

    public RunConfig Config { get; }
    public TrainingConfig Training => Config.Training;
    private readonly Dictionary<string, ModelBase> _roles;
    public IReadOnlyDictionary<string, ModelBase> Roles => _roles;

    /// <summary>Where the method reports long set-up work (the trainer points it at its console).</summary>
    public Action<string> Log { get; set; } = _ => { };

    /// <summary>
    /// The batches the trainer should train on, given the recipe's loader: the loader itself, or (KD) a source the
    /// method fills in <see cref="OnTrainStart"/>. The method owns a source it makes and disposes it.
    /// </summary>
    public virtual IBatchSource TrainingData(IBatchSource loader) => loader;

    /// <summary>Disposes a frozen role the method no longer needs (KD's teacher once its cache is built) and drops it from <see cref="Roles"/>.</summary>
    protected void ReleaseRole(string role)
    {
        if (!_roles.Remove(role, out var model)) return;
        if (model.Trainable) throw new InvalidOperationException($"role '{role}' trains; only a frozen role can be released");
        model.Dispose();
    }
    public ModelBase Student { get; }

    /// <summary>Seeded in <see cref="OnTrainStart"/> with <c>training.data.seed</c> on <c>training.device</c>.</summary>
    public Generator Generator { get; private set; } = null!;

    /// <summary>Every optimizer this method owns, by role.</summary>
    public abstract IReadOnlyDictionary<string, RoleOptimizer> Optimizers { get; }

    /// <summary>The optimizers stepped at <paramref name="iteration"/> (all by default; DMD2 alternates).</summary>
    public virtual IEnumerable<RoleOptimizer> GetOptimizers(int iteration) => Optimizers.Values;

    /// <summary>One micro-batch forward: losses (with <c>total_loss</c>), backward context and metrics.</summary>
    public abstract StepResult SingleTrainStep(RawBatch batch, int iteration);

    /// <summary>Default: the student's backward of total_loss / accum (methods with several roles route per role).</summary>
    public virtual void Backward(StepResult result, int gradAccumRounds) =>
        Student.Backward(result.Losses["total_loss"], result.Outputs.GetValueOrDefault(BackwardContextKey), gradAccumRounds);

    public virtual void OptimizersSchedulersStep(int iteration)
    {
        var active = GetOptimizers(iteration).ToList();
        foreach (var o in active) o.Optimizer.Step();
        foreach (var o in active) o.Scheduler.Step();
    }

    public void OptimizersZeroGrad(int iteration)
    {
        foreach (var o in GetOptimizers(iteration)) o.Optimizer.ZeroGrad();
    }

    /// <summary>Modules whose gradients the grad-clip callback clips separately, by name.</summary>
    public virtual IReadOnlyDictionary<string, nn.Module> GetGradClipTargets(int iteration) =>
        new Dictionary<string, nn.Module> { ["student"] = Student.Transformer };

    /// <summary>The role a loss key belongs to, for error messages (non-finite loss).</summary>
    public virtual string RoleOfLoss(string lossKey) => "student";

    /// <summary>Roles whose weights a checkpoint holds.</summary>
    public IEnumerable<ModelBase> TrainableRoles => Roles.Values.Where(m => m.Trainable);

    /// <summary>Seeds the global RNG and the method generator with training.data.seed, then the student's own start hook.</summary>
    public virtual void OnTrainStart()
    {
        long seed = Training.Data.Seed;
        torch.manual_seed(seed);
        Generator?.Dispose();
        Generator = new Generator((ulong)seed, torch.device(Training.Device));
        Student.OnTrainStart();
    }

    /// <summary>Optimizer, scheduler and generator state (role weights are saved by the checkpoint manager).</summary>
    public virtual void SaveState(StateScope s)
    {
        foreach (var (role, o) in Optimizers)
        {
            o.Optimizer.SaveState(s.Scope("optimizers").Scope(role));
            o.Scheduler.SaveState(s.Scope("schedulers").Scope(role));
        }
    }

    public virtual void LoadState(StateScope s)
    {
        foreach (var (role, o) in Optimizers)
        {
            o.Optimizer.LoadState(s.Scope("optimizers").Scope(role));
            o.Scheduler.LoadState(s.Scope("schedulers").Scope(role));
        }
    }

    /// <summary>
    /// Standard-normal noise of <paramref name="shape"/> ([B, ...]: one row per sample) from the method's generator,
    /// drawn as for the global batch of a data-parallel run, of which this rank keeps its rows
    /// (<see cref="FastVideo.Distributed.DataParallelDraws"/>); in one process simply <c>randn(shape)</c>.
    /// </summary>
    protected Tensor PerSampleNoise(long[] shape, ScalarType dtype, Device device) =>
        FastVideo.Distributed.DataParallelDraws.Local(randn(FastVideo.Distributed.DataParallelDraws.Global(shape), dtype: dtype, device: device, generator: Generator));

    /// <summary>Every generator the method owns, by name (restored last on resume).</summary>
    public virtual IReadOnlyDictionary<string, Generator> Generators => new Dictionary<string, Generator> { ["method"] = Generator };

    /// <summary>Per-role optimizer from <c>training.optimizer</c>; <c>method.lr_step_rules</c> feeds piecewise_constant.</summary>
    protected RoleOptimizer CreateOptimizer(ModelBase model, OptimizerConfig? cfg = null, string keyPath = "training.optimizer")
    {
        return RoleOptimizer.Create(model, cfg ?? Training.Optimizer, Training.Loop.MaxTrainSteps, _lrStepRules, keyPath);
    }

    /// <summary>Disposes what the method owns: its optimizers (their moments), its generator and its role models.</summary>
    public virtual void Dispose()
    {
        foreach (var o in Optimizers.Values) o.Dispose();
        Generator?.Dispose();
        foreach (var m in Roles.Values) m.Dispose();
    }
}

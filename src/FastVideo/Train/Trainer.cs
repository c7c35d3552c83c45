using System.Diagnostics;
using System.Globalization;
using System.Text;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using FastVideo.Train.Tracking;
using static TorchSharp.torch;

namespace FastVideo.Train;

/// <summary>
/// The training loop (spec 7.3): gradient accumulation, callback hooks in upstream order, one metric sync per step,
/// checkpoint before validation, per-phase timings (<c>time/*</c>) and a console progress line. Knows no family and
/// no method internals.
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly TrainingMethod _method;
    private readonly IBatchSource _data;
    private readonly TextWriter _console;
    private List<ITracker>? _trackers;
    private readonly bool _ownsTrackers;

    public Trainer(TrainingMethod method, IBatchSource data, IReadOnlyList<TrainCallback>? callbacks = null,
        IReadOnlyList<ITracker>? trackers = null, TextWriter? console = null)
    {
        _method = method;
        _data = data;
        _console = console ?? Console.Out;
        Callbacks = callbacks ?? CallbackRegistry.Default.Build(method.Config);
        _trackers = trackers?.ToList();
        _ownsTrackers = trackers is null;
        var ck = method.Training.Checkpoint;
        if (string.IsNullOrEmpty(ck.OutputDir))
            throw new UserError("training.checkpoint.output_dir: not set (the run writes its metrics and checkpoints there)");
        if (method.Training.Loop.MaxTrainSteps <= 0)
            throw new UserError($"training.loop.max_train_steps: must be > 0, got {method.Training.Loop.MaxTrainSteps}");
        if (ck.TrainingStateCheckpointingSteps < 0)
            throw new UserError($"training.checkpoint.training_state_checkpointing_steps: must be >= 0, got {ck.TrainingStateCheckpointingSteps}");
        Checkpoints = new CheckpointManager(ck.OutputDir, ck.TrainingStateCheckpointingSteps, ck.CheckpointsTotalLimit, method.Config);
    }

    public IReadOnlyList<TrainCallback> Callbacks { get; }
    public CheckpointManager Checkpoints { get; }

    /// <summary>
    /// Runs from the start (or the resumed step) to <c>loop.max_train_steps</c> and returns the last step run.
    /// <paramref name="stopAfterStep"/> ends the run early as a preemption would (no end hooks, no final save).
    /// </summary>
    public int Run(int? stopAfterStep = null)
    {
        var training = _method.Training;
        int accum = Math.Max(1, training.Loop.GradientAccumulationSteps);
        int maxSteps = training.Loop.MaxTrainSteps;

        if (!FastVideo.Native.ScalarGuard.IsActive)
            _console.WriteLine($"warning: TorchSharp Scalar guard off ({FastVideo.Native.ScalarGuard.InactiveReason}); " +
                               "long runs may stop on an intermittent 'toFloat' error (see build/scalar_guard.c)");
        _method.OnTrainStart();
        int start = 0;
        foreach (var cb in Callbacks) cb.OnTrainStart(_method, start);
        var resume = CheckpointManager.ResolveResume(training.Checkpoint.ResumeFromCheckpoint, training.Checkpoint.OutputDir);
        if (resume is not null)
        {
            start = Checkpoints.Load(resume, _method, Callbacks, _data);
            _console.WriteLine($"resumed from {resume} at step {start}");
        }
        _trackers ??= Trackers.Create(_method.Config, training.Checkpoint.OutputDir, start);

        foreach (var cb in Callbacks) cb.OnValidationBegin(_method, start);
        _method.OptimizersZeroGrad(start);

        var session = Stopwatch.StartNew();
        int end = Math.Min(maxSteps, stopAfterStep ?? maxSteps);
        for (int step = start + 1; step <= end; step++)
        {
            using var scope = NewDisposeScope();
            var log = new StepLog();
            var timer = new PhaseTimer();
            var sums = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            var lossKeys = new List<string>();

            for (int micro = 0; micro < accum; micro++)
            {
                timer.Start();
                var batch = _data.Next();
                timer.Stop("data");
                var result = _method.SingleTrainStep(batch, step);
                timer.Stop("forward");
                _method.Backward(result, accum);
                timer.Stop("backward");
                foreach (var (k, loss) in result.Losses)
                {
                    if (!lossKeys.Contains(k)) lossKeys.Add(k);
                    Accumulate(sums, k, loss);
                }
                foreach (var (k, metric) in result.Metrics)
                {
                    if (result.Losses.ContainsKey(k))
                        throw new InvalidOperationException($"method '{_method.GetType().Name}': metric '{k}' has the name of a loss");
                    Accumulate(sums, k, metric);
                }
                batch.Dispose();
            }

            timer.Start();
            foreach (var cb in Callbacks) cb.OnBeforeOptimizerStep(_method, step, log);
            timer.Stop("callbacks");
            foreach (var o in _method.GetOptimizers(step)) log.Add($"lr/{o.Role}", o.Optimizer.Lr);   // the lr this step used
            _method.OptimizersSchedulersStep(step);
            _method.OptimizersZeroGrad(step);
            timer.Stop("optimizer");

            foreach (var (k, sum) in sums) log.Add(k, sum / accum);
            log.Materialize();   // the step's only device sync
            CheckFinite(step, lossKeys, log);

            timer.Start();
            foreach (var cb in Callbacks) cb.OnTrainingStepEnd(_method, step, log);
            timer.Stop("callbacks");
            if (Checkpoints.ShouldSave(step)) Checkpoints.Save(step, _method, Callbacks, _data);
            timer.Stop("checkpoint");
            foreach (var cb in Callbacks) cb.OnValidationBegin(_method, step);
            foreach (var cb in Callbacks) cb.OnValidationEnd(_method, step);
            timer.Stop("validation");

            foreach (var (phase, sec) in timer.Seconds) log.Add($"time/{phase}", sec);
            log.Add("step_time_sec", timer.Total);
            foreach (var t in _trackers) t.Log(step, log.Values);
            _console.WriteLine(Progress(step, start, maxSteps, lossKeys, log, session.Elapsed.TotalSeconds));
        }

        if (end < maxSteps) return end;
        foreach (var cb in Callbacks) cb.OnTrainEnd(_method, maxSteps);
        if (Checkpoints.SaveSteps > 0 && Checkpoints.LastSavedStep != maxSteps)
            Checkpoints.Save(maxSteps, _method, Callbacks, _data);
        return maxSteps;
    }

    private static void Accumulate(Dictionary<string, Tensor> sums, string key, Tensor value)
    {
        var v = value.detach();
        sums[key] = sums.TryGetValue(key, out var s) ? s + v : v;
    }

    // A non-finite loss stops the run before this step's checkpoint, so the last checkpoint on disk stays good.
    private void CheckFinite(int step, IReadOnlyList<string> lossKeys, StepLog log)
    {
        var bad = lossKeys.Where(k => !double.IsFinite(log.Values[k])).ToList();
        if (bad.Count == 0) return;
        // Name the specific loss rather than the total when one is available.
        var key = bad.FirstOrDefault(k => k != "total_loss") ?? bad[0];
        throw new TrainingError(step, _method.RoleOfLoss(key), key, log.Values[key], Checkpoints.LastCheckpoint);
    }

    private static string Progress(int step, int start, int max, IReadOnlyList<string> lossKeys, StepLog log, double elapsed)
    {
        var sb = new StringBuilder($"step {step}/{max}");
        foreach (var k in lossKeys) sb.Append(CultureInfo.InvariantCulture, $" | {k} {log.Values[k]:0.000000}");
        double itPerSec = (step - start) / Math.Max(elapsed, 1e-9);
        var eta = TimeSpan.FromSeconds(Math.Round((max - step) / itPerSec));
        sb.Append(CultureInfo.InvariantCulture, $" | {itPerSec:0.00} it/s | ETA {eta:hh\\:mm\\:ss}");
        return sb.ToString();
    }

    public void Dispose()
    {
        if (_ownsTrackers && _trackers is not null) foreach (var t in _trackers) t.Dispose();
    }

    /// <summary>Wall-clock seconds per phase within one step (phases may repeat, e.g. per micro-batch).</summary>
    private sealed class PhaseTimer
    {
        private long _mark;
        private readonly long _begin = Stopwatch.GetTimestamp();
        public SortedDictionary<string, double> Seconds { get; } = new(StringComparer.Ordinal)
        {
            ["data"] = 0, ["forward"] = 0, ["backward"] = 0, ["optimizer"] = 0, ["callbacks"] = 0, ["checkpoint"] = 0, ["validation"] = 0,
        };
        public void Start() => _mark = Stopwatch.GetTimestamp();
        public void Stop(string phase)
        {
            long now = Stopwatch.GetTimestamp();
            Seconds[phase] += Stopwatch.GetElapsedTime(_mark, now).TotalSeconds;
            _mark = now;
        }
        public double Total => Stopwatch.GetElapsedTime(_begin).TotalSeconds;
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Text;
using FastVideo.Distributed;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using FastVideo.Train.RunFolders;
using FastVideo.Train.Tracking;
using static TorchSharp.torch;

namespace FastVideo.Train;

/// <summary>
/// The training loop (spec 7.3): gradient accumulation, callback hooks, one metric sync per step, per-phase timings
/// (<c>time/*</c>) and a console progress line. Knows no family and no method internals.
/// <para>Run folder: the output folder is held for the run (<see cref="RunFolder"/>): a second run on it is refused,
/// and an earlier run in it is continued only by a resume (or moved aside with <c>overwrite</c>).</para>
/// <para>Order at the end of a step: EMA and other step-end hooks, validation when due, the step's metrics line, then
/// its checkpoint. Upstream saves before validating and logs before both; here the line (with the validation
/// metrics) is written and synced before the checkpoint, so a checkpoint never exists without its step's line, and a
/// resume (which cuts the metrics back to its step) shows every step exactly once. The checkpoint's own duration is
/// therefore reported in the next step's line as <c>time/checkpoint</c>.</para>
/// <para>Several processes (<c>mpiexec -n N</c>, <see cref="World"/>): data parallel. Every rank trains on its shard
/// of the data; gradients are averaged before the callbacks' clipping and the optimizer step, and the step's losses
/// and metrics are averaged over the ranks (<see cref="DataParallelSync"/>). Rank 0 alone owns the run folder: it
/// takes the lock, applies the reuse rules, picks the checkpoint to resume (every rank loads that one), validates,
/// writes the metrics and checkpoints and prints. A failure on any rank stops every rank at the next collective.</para>
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly TrainingMethod _method;
    private readonly IBatchSource _data;
    private readonly TextWriter _console;
    private List<ITracker>? _trackers;
    private readonly bool _ownsTrackers;
    private readonly bool _ownsCallbacks;
    private readonly bool _overwrite;
    private RunFolder? _folder;
    private readonly ProcessGroup _group;
    private readonly DataParallelSync _sync;

    /// <param name="overwrite">The output folder may hold an earlier run that is not resumed: move it aside
    /// (to <c>&lt;folder&gt;.previous-&lt;time&gt;</c>) instead of refusing to start.</param>
    /// <param name="group">The run's processes; default <see cref="World.Current"/> (one process unless started by
    /// mpiexec). Only rank 0 prints and writes trackers.</param>
    public Trainer(TrainingMethod method, IBatchSource data, IReadOnlyList<TrainCallback>? callbacks = null,
        IReadOnlyList<ITracker>? trackers = null, TextWriter? console = null, bool overwrite = false, ProcessGroup? group = null)
    {
        _group = group ?? World.Current;
        _overwrite = overwrite;
        _method = method;
        _console = _group.IsMain ? console ?? Console.Out : TextWriter.Null;
        _data = method.TrainingData(data);
        method.Log = _console.WriteLine;
        Callbacks = callbacks ?? CallbackRegistry.Default.Build(method.Config);
        _ownsCallbacks = callbacks is null;
        _trackers = _group.IsMain ? trackers?.ToList() : [];
        _ownsTrackers = trackers is null;
        var ck = method.Training.Checkpoint;
        if (string.IsNullOrEmpty(ck.OutputDir))
            throw new UserError("training.checkpoint.output_dir: not set (the run writes its metrics and checkpoints there)");
        if (method.Training.Loop.MaxTrainSteps <= 0)
            throw new UserError($"training.loop.max_train_steps: must be > 0, got {method.Training.Loop.MaxTrainSteps}");
        if (ck.TrainingStateCheckpointingSteps < 0)
            throw new UserError($"training.checkpoint.training_state_checkpointing_steps: must be >= 0, got {ck.TrainingStateCheckpointingSteps}");
        Checkpoints = new CheckpointManager(ck.OutputDir, ck.TrainingStateCheckpointingSteps, ck.CheckpointsTotalLimit, method.Config)
        {
            Warn = _console.WriteLine,
        };
        _sync = new DataParallelSync(_group, method.Training.Distributed.WeightCheckSteps);
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
        var outputDir = training.Checkpoint.OutputDir;
        var resumeSpec = training.Checkpoint.ResumeFromCheckpoint;

        // The run folder is rank 0's: it takes the lock, applies the reuse rules and picks the checkpoint to resume;
        // the other ranks learn the outcome (a failure stops them too) and resume from that same checkpoint.
        string? resume = null;
        Exception? failure = null;
        if (_group.IsMain)
        {
            try
            {
                if (!FastVideo.Native.ScalarGuard.IsActive)
                    _console.WriteLine($"warning: TorchSharp Scalar guard off ({FastVideo.Native.ScalarGuard.InactiveReason}); " +
                                       "long runs may stop on an intermittent 'toFloat' error (see build/scalar_guard.c)");
                _folder ??= RunFolder.Open(outputDir, resuming: !string.IsNullOrEmpty(resumeSpec), _overwrite, _console);
                resume = CheckpointManager.ResolveResume(resumeSpec, outputDir, _console.WriteLine);
            }
            catch (Exception e) when (_group.IsDistributed) { failure = e; }
        }
        _group.Agree(failure);
        if (_group.IsDistributed)
        {
            resume = System.Text.Encoding.UTF8.GetString(_group.Broadcast(System.Text.Encoding.UTF8.GetBytes(resume ?? "")));
            if (resume.Length == 0) resume = null;
            _console.WriteLine(DescribeParallel());
        }

        int start = 0;
        // Setup and resume in one dispose scope: what the hooks and the checkpoint keep (EMA shadows, validation
        // inputs, optimizer moments) is detached by its owner; every intermediate tensor is freed here.
        using (NewDisposeScope())
        {
            try
            {
                _method.OnTrainStart();
                foreach (var cb in Callbacks) cb.OnTrainStart(_method, start);
                if (resume is not null) start = Checkpoints.Load(resume, _method, Callbacks, _data);
            }
            catch (Exception e) when (_group.IsDistributed) { failure = e; }
            _group.Agree(failure);
            if (_group.IsMain)
            {
                try
                {
                    if (resume is not null)
                    {
                        Checkpoints.SetAsideLaterThan(start);
                        _console.WriteLine($"resumed from {resume} at step {start}");
                    }
                    _trackers ??= Trackers.Create(_method.Config, outputDir, start);
                    foreach (var cb in Callbacks) cb.OnValidationBegin(_method, start);
                }
                catch (Exception e) when (_group.IsDistributed) { failure = e; }
            }
            _group.Agree(failure);
            _sync.AverageMetrics(_method, null, null, [], Checkpoints.LastCheckpoint);   // the same weights everywhere at the start
            _method.OptimizersZeroGrad(start);
        }

        var session = Stopwatch.StartNew();
        int end = Math.Min(maxSteps, stopAfterStep ?? maxSteps);
        var timer = new PhaseTimer(_group.IsDistributed);   // each line's timings cover the time since the previous line
        Exception? tailFailure = null;   // a rank's failure after the step's collectives (e.g. rank 0's checkpoint): agreed at the next one
        for (int step = start + 1; step <= end; step++)
        {
            using var scope = NewDisposeScope();
            var log = new StepLog();
            var sums = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            var lossKeys = new List<string>();

            failure = tailFailure;
            if (failure is null)
            {
                try
                {
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
                }
                catch (Exception e) when (_group.IsDistributed) { failure = e; }
            }

            timer.Start();
            var grads = _sync.AgreeOnGradients(_method, step, failure);
            if (_group.IsDistributed) timer.Stop("sync");
            _sync.AverageGradients(grads);
            if (_group.IsDistributed) timer.Stop("allreduce");
            foreach (var cb in Callbacks) cb.OnBeforeOptimizerStep(_method, step, log);
            timer.Stop("callbacks");
            foreach (var o in _method.GetOptimizers(step)) log.Add($"lr/{o.Role}", o.Optimizer.Lr);   // the lr this step used
            _method.OptimizersSchedulersStep(step);
            _method.OptimizersZeroGrad(step);
            timer.Stop("optimizer");

            foreach (var (k, sum) in sums) log.Add(k, sum / accum);
            log.Materialize();   // the step's only device sync
            timer.Start();
            _sync.AverageMetrics(_method, step, log, sums.Keys.ToList(), Checkpoints.LastCheckpoint);
            if (_group.IsDistributed) timer.Stop("sync");
            CheckFinite(step, lossKeys, log);

            try
            {
                timer.Start();
                foreach (var cb in Callbacks) cb.OnTrainingStepEnd(_method, step, log);
                timer.Stop("callbacks");
                if (_group.IsMain)
                {
                    foreach (var cb in Callbacks) cb.OnValidationBegin(_method, step, log);
                    foreach (var cb in Callbacks) cb.OnValidationEnd(_method, step, log);
                }
                timer.Stop("validation");

                foreach (var (phase, sec) in timer.Seconds) log.Add($"time/{phase}", sec);
                log.Add("step_time_sec", timer.Total);
                foreach (var t in _trackers!)
                {
                    t.Log(step, log.Values);
                    if (log.Images.Count > 0) t.LogImages(step, log.Images);
                }
                _console.WriteLine(Progress(step, start, maxSteps, lossKeys, log, session.Elapsed.TotalSeconds));

                timer = new PhaseTimer(_group.IsDistributed);
                if (Checkpoints.ShouldSave(step)) SaveCheckpoint(step);
                timer.Stop("checkpoint");
            }
            catch (Exception e) when (_group.IsDistributed) { tailFailure = e; }
        }
        _group.Agree(tailFailure);

        if (end < maxSteps) return end;
        using (NewDisposeScope())
        {
            try
            {
                foreach (var cb in Callbacks) cb.OnTrainEnd(_method, maxSteps);
                if (Checkpoints.SaveSteps > 0 && Checkpoints.LastSavedStep != maxSteps) SaveCheckpoint(maxSteps);
            }
            catch (Exception e) when (_group.IsDistributed) { failure = e; }
            _group.Agree(failure);
        }
        return maxSteps;
    }

    /// <summary>The start line of a multi-process run: the processes, and how the recipe's layout maps onto them.</summary>
    private string DescribeParallel()
    {
        var d = _method.Training.Distributed;
        int b = _method.Training.Data.TrainBatchSize;
        var line = new StringBuilder($"data parallel over {World.Describe()}: {string.Join(", ", _group.Ranks)}; " +
                                     $"train_batch_size {b} per process, global batch {b * _group.Size}");
        if (d.NumGpus != _group.Size)
            line.Append(CultureInfo.InvariantCulture, $". Note: training.distributed.num_gpus is {d.NumGpus}; the number of processes is mpiexec's, as torchrun's is upstream");
        if (d.ResolvedHsdpShardDim > 1)
            line.Append(CultureInfo.InvariantCulture, $". hsdp_shard_dim {d.ResolvedHsdpShardDim}: every process holds a full replica here (no sharding)");
        return line.ToString();
    }

    /// <summary>The metrics logged so far are made durable first: a checkpoint on disk implies its step's line. Rank 0
    /// writes it; the other ranks note it as their last checkpoint too.</summary>
    private void SaveCheckpoint(int step)
    {
        if (!_group.IsMain)
        {
            Checkpoints.NoteWrittenElsewhere(step);
            return;
        }
        foreach (var t in _trackers!) t.Sync();
        var sw = Stopwatch.StartNew();
        var path = Checkpoints.Save(step, _method, Callbacks, _data);
        _console.WriteLine($"saved {path} ({sw.Elapsed.TotalSeconds:0.0} s)");
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
        throw _sync.Everywhere(new TrainingError(step, _method.RoleOfLoss(key), key, log.Values[key], Checkpoints.LastCheckpoint));
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

    /// <summary>Closes what the trainer made itself: the trackers and callbacks it built (not ones passed in), then the run folder.</summary>
    public void Dispose()
    {
        if (_ownsTrackers && _trackers is not null) foreach (var t in _trackers) t.Dispose();
        if (_ownsCallbacks) foreach (var cb in Callbacks) cb.Dispose();
        _sync.Dispose();
        _folder?.Dispose();   // releases the run folder last, after every file of the run is closed
        _folder = null;
    }

    /// <summary>Wall-clock seconds per phase within one step (phases may repeat, e.g. per micro-batch).</summary>
    private sealed class PhaseTimer
    {
        private readonly long _begin;
        private long _mark;
        /// <param name="distributed">Also time the collectives of a multi-process run: <c>time/allreduce</c> (the
        /// gradient average) and <c>time/sync</c> (waiting for the other ranks, the metrics and weight checks).</param>
        public PhaseTimer(bool distributed = false)
        {
            _begin = _mark = Stopwatch.GetTimestamp();
            if (!distributed) return;
            Seconds["allreduce"] = 0;
            Seconds["sync"] = 0;
        }

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

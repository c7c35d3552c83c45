using System.ComponentModel;
using System.Globalization;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Schedulers;
using FastVideo.Train.Models;
using FastVideo.Train.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.KnowledgeDistillation;

/// <summary>The <c>method:</c> options of kd (spec 6.6).</summary>
public record KDOptions : MethodOptions, ICheckedOptions
{
    [CommaSeparated]
    [Description("the student's timesteps ending with 0, each of the others one of the teacher's integer ODE timesteps, e.g. [995, 937, 833, 625, 0]")]
    public required IReadOnlyList<int> TList { get; init; }

    [Description("the student's steps, len(t_list) - 1 (null = that)")]
    public int? StudentSampleSteps { get; init; }

    [Description("folder of the teacher-trajectory cache: built (resumably) on the first run with a teacher role, reused after")]
    public required string TeacherPathCache { get; init; }

    [Description("classifier-free guidance of the teacher's velocity in its ODE (1 = the conditional teacher alone; otherwise its negative prompt)")]
    public double TeacherGuidanceScale { get; init; } = 1.0;

    [Description("steps of the teacher's ODE (a SelfForcingFlowMatchScheduler grid with pipeline.flow_shift)")]
    public int TeacherInferenceSteps { get; init; } = 48;

    public virtual IEnumerable<OptionProblem> Check()
    {
        if (TList.Count < 2) yield return new("t_list", "needs at least one student timestep and the final 0, e.g. [995, 937, 833, 625, 0]");
        for (int i = 0; i < TList.Count; i++)
            if (TList[i] is < 0 or > 1000) yield return new($"t_list[{i}]", $"must be in 0..1000, got {TList[i]}");
        if (StudentSampleSteps is { } n && n != TList.Count - 1)
            yield return new("student_sample_steps", $"({n}) must equal len(t_list) - 1 = {TList.Count - 1}");
        if (string.IsNullOrWhiteSpace(TeacherPathCache)) yield return new("teacher_path_cache", "must name a folder");
        if (TeacherInferenceSteps < 1) yield return new("teacher_inference_steps", $"must be >= 1, got {TeacherInferenceSteps}");
        if (!(TeacherGuidanceScale > 0)) yield return new("teacher_guidance_scale", $"must be > 0, got {TeacherGuidanceScale.ToString(CultureInfo.InvariantCulture)}");
    }
}

/// <summary>
/// Knowledge distillation for ODE initialisation (spec 6.6): the student's one-step x0 at a timestep of
/// <c>t_list</c> is regressed onto the x0 a frozen teacher reached by its multi-step ODE from the same state. The
/// teacher's trajectories are computed once per data row into <see cref="TrajectoryCache"/> when training starts
/// (resumable, checked), the teacher is then released, and the trainer reads batches from the cache.
/// <para>Draws: the teacher ODE of row i starts from noise drawn from a generator seeded with (data.seed, i), so an
/// entry does not depend on which entries were built before it or in which run (upstream draws from its one
/// generator in build order). Training draws (the step index, the student's prepare_batch) come from the method's
/// generator.</para>
/// </summary>
public class KDMethod : TrainingMethod
{
    public static MethodDescriptor Descriptor { get; } = MethodDescriptor.Of<KDOptions>("kd",
        "knowledge distillation (ODE init): the student's one-step x0 regressed onto a frozen teacher's cached multi-step ODE result (roles: trainable student; frozen teacher while the cache is incomplete)",
        cfg => CheckRoles(cfg, "kd"), (cfg, options, roles) => new KDMethod(cfg, options, roles, "kd")) with
    {
        ClassPaths = ["fastvideo.train.methods.knowledge_distillation.kd.KDMethod",
            "fastvideo.train.methods.knowledge_distillation.KDMethod", "fastvideo.train.methods.KDMethod"],
    };

    private readonly RoleOptimizer _student;
    private readonly TrajectoryCacheBatchSource _source;
    private IRowSource? _rows;
    private Dictionary<int, int>? _trajectoryIndex;

    public static void CheckRoles(RunConfig config, string method)
    {
        MethodRegistry.RequireRole(config, method, "student", trainable: true);
        if (config.Roles.TryGetValue("teacher", out var teacher) && teacher.Trainable)
            throw new UserError($"roles.teacher.trainable: method '{method}' needs the teacher frozen (trainable: false)");
        if (!(config.Training.Optimizer.LearningRate > 0))
            throw new UserError($"training.optimizer.learning_rate: {method} needs a learning rate > 0, got {config.Training.Optimizer.LearningRate}");
    }

    protected KDMethod(RunConfig config, KDOptions options, IReadOnlyDictionary<string, ModelBase> roles, string name) : base(config, options, roles)
    {
        CheckRoles(config, name);
        Options = options;
        Teacher = roles.GetValueOrDefault("teacher");
        Student.InitPreprocessors();
        // Upstream builds this with pipeline.flow_shift or 0 (a degenerate all-zero grid); here the family default stands in.
        FlowShift = Config.Pipeline.FlowShift ?? Student.Context.Family.Defaults.FlowShift;
        Scheduler = SelfForcingFlowMatchScheduler.ForTraining(FlowShift, Student.NumTrainTimesteps);
        TeacherTimesteps = SelfForcingFlowMatchScheduler.OdeGrid(options.TeacherInferenceSteps, FlowShift, Student.NumTrainTimesteps)
            .TrainTimesteps.Select(t => (int)t).ToArray();   // truncated, as upstream
        // Upstream finds out after the cache is built; the teacher's grid is known now.
        for (int i = 0; i < options.TList.Count - 1; i++)
            if (!TeacherTimesteps.Contains(options.TList[i]))
                throw new UserError($"method.t_list[{i}]: {options.TList[i]} is not one of the teacher's integer timesteps " +
                                    $"({options.TeacherInferenceSteps} steps, shift {FlowShift.ToString(CultureInfo.InvariantCulture)}: {string.Join(", ", TeacherTimesteps)})");
        Cache = new TrajectoryCache(options.TeacherPathCache);
        var data = Training.Data;
        _source = new TrajectoryCacheBatchSource(data.TrainBatchSize, data.DropLast, data.Seed);
        _student = CreateOptimizer(Student);
    }

    public KDOptions Options { get; }
    /// <summary>The frozen teacher while the cache is being built; null once released (or when the recipe has none).</summary>
    public ModelBase? Teacher { get; private set; }
    public TrajectoryCache Cache { get; }
    public double FlowShift { get; }
    /// <summary>The sigma lookups of the KD loss and the teacher ODE (1000 points, pipeline.flow_shift).</summary>
    public SelfForcingFlowMatchScheduler Scheduler { get; }
    /// <summary>The teacher's ODE timesteps as integers (what the cache records).</summary>
    public int[] TeacherTimesteps { get; }
    /// <summary>Student steps K = len(t_list) - 1.</summary>
    public int Steps => Options.TList.Count - 1;

    /// <summary>Entries this method built (in order), for tests and the log.</summary>
    public List<long> BuiltEntries { get; } = [];
    /// <summary>Called after each entry is written (tests use it to stop a build part way, as a kill would).</summary>
    internal Action<long>? AfterEntry { get; set; }

    public override IReadOnlyDictionary<string, RoleOptimizer> Optimizers => new Dictionary<string, RoleOptimizer> { ["student"] = _student };

    /// <summary>The trainer trains on the cache; the recipe's loader is kept only to read rows for building it.</summary>
    public override IBatchSource TrainingData(IBatchSource loader)
    {
        _rows = loader as IRowSource;
        return _source;
    }

    /// <summary>Seeds, builds or checks the cache (then releases the teacher) and opens it for training.</summary>
    public override void OnTrainStart()
    {
        base.OnTrainStart();
        long total = BuildCache();
        if (Teacher is not null)
        {
            ReleaseRole("teacher");
            Teacher = null;
        }
        _source.Activate(Cache, total);
        // Every t of t_list (but the final 0) must be one of the cached timesteps (all entries share them).
        using var first = Cache.Read(0);
        var cached = first.TrajectoryTimesteps.data<long>().ToArray();
        _trajectoryIndex = [];
        for (int i = 0; i < Steps; i++)
        {
            int at = Array.IndexOf(cached, (long)Options.TList[i]);
            if (at < 0) throw new UserError($"method.t_list[{i}]: {Options.TList[i]} is not among the cached trajectory timesteps ({string.Join(", ", cached)}) of {Cache.Directory}");
            _trajectoryIndex[Options.TList[i]] = at;
        }
    }

    /// <summary>Makes every missing or corrupt entry (with the teacher) and returns the number of entries.</summary>
    private long BuildCache()
    {
        Cache.RemoveLeftovers();
        if (Teacher is null)
        {
            var stored = Cache.ReadInfo();
            if (stored is null || !Cache.IsComplete)
                throw new UserError($"method.teacher_path_cache: {Cache.Directory} is not a complete trajectory cache and the recipe has no teacher " +
                                    "role to build it; add a frozen 'teacher' role");
            if (_rows is not null && _rows.RowCount != stored.TotalSamples)
                throw new UserError($"method.teacher_path_cache: {Cache.Directory} holds {stored.TotalSamples} entries but the data ({_rows.Description}) has {_rows.RowCount} rows; " +
                                    "add the teacher role to rebuild it, or point teacher_path_cache elsewhere");
            var bad = Cache.FindMissing(stored.TotalSamples, Log);
            if (bad.Count > 0)
                throw new UserError($"method.teacher_path_cache: {bad.Count} entries of {Cache.Directory} are missing or corrupt (first: {Cache.EntryPath(bad[0])}); " +
                                    "add the frozen teacher role to rebuild them");
            return stored.TotalSamples;
        }

        var rows = _rows ?? throw new UserError("method.teacher_path_cache: building the trajectory cache needs the recipe's data rows (training.data.data_path)");
        var info = new TrajectoryCacheInfo(rows.RowCount, TeacherId(Teacher), Options.TeacherInferenceSteps, Options.TeacherGuidanceScale,
            FlowShift, rows.Description, Training.Data.Seed);
        Cache.CreateOrCheck(info);
        var missing = Cache.FindMissing(info.TotalSamples, Log);
        if (missing.Count > 0)
        {
            Cache.MarkIncomplete();
            Teacher.OnTrainStart();   // its negative prompt, for guidance
            Log($"trajectory cache {Cache.Directory}: building {missing.Count} of {info.TotalSamples} entries ({Options.TeacherInferenceSteps} teacher steps each)");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            foreach (var index in missing)
            {
                using (var entry = TeacherTrajectory(rows, index)) Cache.Write(index, entry);
                BuiltEntries.Add(index);
                AfterEntry?.Invoke(index);
            }
            Log($"trajectory cache {Cache.Directory}: {missing.Count} entries in {sw.Elapsed.TotalSeconds:0.0} s");
        }
        Cache.MarkComplete();
        return info.TotalSamples;
    }

    private static string TeacherId(ModelBase teacher)
    {
        var o = teacher.Context.Options;
        return string.IsNullOrEmpty(o.TransformerOverrideSafetensor) || o.DisableCustomInitWeights
            ? o.InitFrom : $"{o.InitFrom} + {o.TransformerOverrideSafetensor}";
    }

    /// <summary>The generator of row <paramref name="index"/>'s teacher ODE: seeded with (data.seed, index).</summary>
    public static ulong EntrySeed(long seed, long index) => SplitMix64.Keyed(seed, index).NextUInt64();

    /// <summary>
    /// The teacher's ODE for one row (spec 6.6, no grad): from pure noise at the grid's first timestep, at each integer
    /// timestep record the state, predict x0 (guided when teacher_guidance_scale != 1) and move deterministically to
    /// the next one (<see cref="FlowMatch.DeterministicStep"/>, sigmas by nearest lookup on the 1000-point grid).
    /// </summary>
    internal TrajectoryEntry TeacherTrajectory(IRowSource rows, long index)
    {
        var teacher = Teacher ?? throw new InvalidOperationException("no teacher");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var raw = rows.ReadRows([index]);
        using var generator = new Generator(EntrySeed(Training.Data.Seed, index), teacher.Device);
        using var tb = teacher.PrepareBatch(raw, generator, LatentsSource.Data);
        var latents = tb.Latents;                                   // [1,T,C,H,W]; only its shape is used (t_0 = 1000 is pure noise)
        var noise = randn(latents.shape, dtype: ScalarType.Float32, device: teacher.Device, generator: generator).to_type(latents.dtype);
        var ts = TeacherTimesteps;
        var x = ModelBase.AddNoise(latents, noise, tensor(new float[] { ts[0] }, device: teacher.Device), Scheduler);
        var states = new List<Tensor>();
        Tensor x0 = null!;
        for (int k = 0; k < ts.Length; k++)
        {
            states.Add(x[0].clone());
            var t = full([1], (float)ts[k], device: teacher.Device);
            var v = teacher.PredictNoise(x, t, tb, conditional: true);
            if (Options.TeacherGuidanceScale != 1.0)
            {
                var vu = teacher.PredictNoise(x, t, tb, conditional: false);
                v = vu + Options.TeacherGuidanceScale * (v - vu);
            }
            x0 = ModelBase.NoiseToX0(v, x, t, Scheduler);
            int next = k + 1 < ts.Length ? ts[k + 1] : 0;
            if (next > 0)
                x = FlowMatch.DeterministicStep(x, x0, Sigma(ts[k]), Sigma(next));
        }
        var text = raw.Conditioning[Conditioning.Text];
        var entry = new TrajectoryEntry(
            stack(states.ToArray()).to_type(ScalarType.Float32).MoveToOuterDisposeScope(),
            tensor(ts.Select(t => (long)t).ToArray()).MoveToOuterDisposeScope(),
            x0[0].to_type(ScalarType.Float32).MoveToOuterDisposeScope(),
            text.Values[0].to_type(ScalarType.Float32).cpu().MoveToOuterDisposeScope(),
            (text.Mask ?? ones(text.Values.shape[1]))[0].to_type(ScalarType.Float32).cpu().MoveToOuterDisposeScope());
        return entry;
    }

    /// <summary>The sigma of timestep <paramref name="t"/> on <see cref="Scheduler"/>'s grid (nearest point), as a scalar tensor.</summary>
    private Tensor Sigma(double t)
    {
        using var tt = tensor(new[] { (float)t });
        return Scheduler.SigmasForTimesteps(tt).to_type(ScalarType.Float32).reshape([]);
    }

    /// <summary>The trajectory index of student timestep <paramref name="t"/> (a t_list value).</summary>
    protected int TrajectoryIndex(int t) => (_trajectoryIndex ?? throw new InvalidOperationException("OnTrainStart has not run"))[t];

    public override StepResult SingleTrainStep(RawBatch batch, int iteration)
    {
        // One student step for the whole batch, drawn first (as upstream).
        int i;
        using (var r = randint(0, Steps, [1], dtype: ScalarType.Int64, device: Student.Device, generator: Generator)) i = (int)r.item<long>();
        int t = Options.TList[i];
        var trajectory = batch.Extras["trajectory_latents"];       // [B,S,T,C,H,W]
        var xt = trajectory.select(1, TrajectoryIndex(t));          // [B,T,C,H,W]
        long b = xt.shape[0];
        var timesteps = full([b], (float)t, device: Student.Device);
        var loss = StudentLoss(batch, xt, timesteps);
        return Result(loss, timesteps, new Dictionary<string, Tensor> { ["kd_step_idx"] = tensor((float)i) });
    }

    /// <summary>
    /// 0.5·MSE between the student's x0 (sigmas from <see cref="Scheduler"/>) at <paramref name="xt"/> and the cached
    /// teacher result; the student's prepare_batch runs on the batch (real as its latents) for the text, as upstream.
    /// </summary>
    protected Tensor StudentLoss(RawBatch batch, Tensor xt, Tensor timesteps)
    {
        using var tb = Student.PrepareBatch(batch, Generator, LatentsSource.Data);
        var dtype = tb.Latents.dtype;
        var x = xt.to(Student.Device).to_type(dtype);
        var real = batch.VaeLatent!.permute(0, 2, 1, 3, 4).to(Student.Device).to_type(dtype);   // BCTHW -> BTCHW
        var v = Student.PredictNoise(x, timesteps, tb, conditional: true, attnKind: AttnKind.Dense);
        var x0 = ModelBase.NoiseToX0(v, x, timesteps, Scheduler);
        return 0.5 * nn.functional.mse_loss(x0.to_type(ScalarType.Float32), real.to_type(ScalarType.Float32));
    }

    protected static StepResult Result(Tensor loss, Tensor timesteps, Dictionary<string, Tensor> metrics) => new(
        new Dictionary<string, Tensor> { ["total_loss"] = loss, ["kd_loss"] = loss },
        new Dictionary<string, object?> { [BackwardContextKey] = timesteps },
        metrics);

    public override void Dispose()
    {
        _source.Dispose();
        base.Dispose();
    }
}

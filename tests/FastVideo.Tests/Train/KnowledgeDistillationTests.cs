using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Schedulers;
using FastVideo.Train;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.KnowledgeDistillation;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>
/// kd and kd_causal (spec 6.6): the teacher trajectory against Euler integration by hand, the cache (killed build
/// resumed without recomputing, corrupt entries rebuilt or refused, metadata checks), the losses and gradients against
/// a hand computation, and resume bit for bit.
/// </summary>
public class KnowledgeDistillationTests
{
    private const int TeacherSteps = 8;

    /// <summary>The synthetic data (8 rows of 2 frames 8x8, text 6x16) and a tiny 3-channel Wan folder, made once.</summary>
    private static readonly Lazy<(string Data, string Model)> Fixture = new(() => TrainFixture.SyntheticDataAndModel(TestPaths.TempDir("kd-fixture")));

    /// <summary>The teacher's integer grid (8 steps, shift 1): t_list takes every other one and ends with 0.</summary>
    private static int[] Grid => SelfForcingFlowMatchScheduler.OdeGrid(TeacherSteps, 1.0).TrainTimesteps.Select(t => (int)t).ToArray();

    private static Dictionary<string, object?> Options(string cache, double guidance = 1.0, object? tList = null) => new()
    {
        ["t_list"] = tList ?? new List<object?> { (long)Grid[0], (long)Grid[2], (long)Grid[4], (long)Grid[6], 0L },
        ["teacher_path_cache"] = cache,
        ["teacher_inference_steps"] = (long)TeacherSteps,
        ["teacher_guidance_scale"] = guidance,
    };

    private static RunConfig Config(string dir, string method, Dictionary<string, object?> options, bool teacher = true, int maxSteps = 3,
        int accum = 1, int saveSteps = 0, string? negative = null)
    {
        var (data, model) = Fixture.Value;
        var cfg = CausalMethodFixture.Config(dir, method, options, maxSteps, accum, saveSteps, frames: 2, framesPerBlock: 1,
            otherRoles: teacher ? ["teacher"] : []);
        var roles = cfg.Roles.ToDictionary(kv => kv.Key, kv => kv.Value with { InitFrom = model, FlowShift = 1.0 });
        if (negative is not null) roles["teacher"] = roles["teacher"] with { NegativePromptEmbeds = negative };
        return cfg with
        {
            Roles = roles,
            Training = cfg.Training with { Data = cfg.Training.Data with { DataPath = [new DataSource(data, 1)], TrainBatchSize = 2, Seed = 5, PrefetchBatches = 0 } },
            Pipeline = cfg.Pipeline with { TextLen = 6, FlowShift = 1.0 },
        };
    }

    private static DataLoaderBatchSource Rows(RunConfig cfg) => DataLoaderBatchSource.FromConfig(cfg, ModelFamilyRegistry.Default);

    /// <summary>Builds the method and runs its start (the cache build) on the recipe's rows.</summary>
    private static KDMethod Start(RunConfig cfg, DataLoaderBatchSource rows, Action<long>? afterEntry = null)
    {
        var m = (KDMethod)TrainingBuilder.Build(cfg);
        m.AfterEntry = afterEntry;
        m.TrainingData(rows);
        try { m.OnTrainStart(); }
        catch { m.Dispose(); throw; }
        return m;
    }

    private sealed class SimulatedKill : Exception;

    private static Dictionary<string, Tensor> Entry(TrajectoryCache cache, long i) => FastVideo.Weights.SafeTensors.Load(cache.EntryPath(i));

    [Fact]
    public void TeacherTrajectoryIsEulerIntegrationOfItsVelocity()
    {
        foreach (var guidance in new[] { 1.0, 3.0 })
        {
            using var scope = NewDisposeScope();
            var cache = Path.Combine(TestPaths.TempDir("kd-traj"), "cache");
            var negative = Path.Combine(Fixture.Value.Data, ParquetVideoDataset.NegativePromptEmbedsFile);
            var cfg = Config(TestPaths.TempDir("kd-traj-run"), "kd", Options(cache, guidance), negative: negative);
            using var rows = Rows(cfg);
            // A second teacher to integrate by hand (the method releases its own after the build).
            var teacherRun = cfg with { Recipe = cfg.Recipe with { Family = "wan" } };
            using var teacher = (WanModel)ModelFamilyRegistry.Default.Create("teacher", cfg.Roles["teacher"], teacherRun);
            using (var m = Start(cfg, rows)) Assert.Equal(Enumerable.Range(0, 8).Select(i => (long)i), m.BuiltEntries);

            var entry = Entry(new TrajectoryCache(cache), 3);
            Assert.Equal(Grid.Select(t => (long)t), entry["trajectory_timesteps"].data<long>().ToArray());
            using var noGrad = no_grad();
            using var raw = rows.ReadRows([3]);
            using var g = new Generator(KDMethod.EntrySeed(5, 3), CPU);
            using var tb = teacher.PrepareBatch(raw, g);   // the same draws as the build: prepare_batch's, then the noise
            var x = randn(tb.Latents.shape, generator: g);
            Tensor x0 = null!;
            for (int k = 0; k < TeacherSteps; k++)
            {
                Assert.True((entry["trajectory_latents"][k] - x[0]).abs().max().item<float>() < 1e-5, $"guidance {guidance}, state {k}");
                var t = full([1], (float)Grid[k]);
                var v = teacher.PredictNoise(x, t, tb, conditional: true);
                if (guidance != 1.0) v = teacher.PredictNoise(x, t, tb, conditional: false) * (1 - guidance) + v * guidance;
                double sigma = Grid[k] / 1000.0, next = k + 1 < TeacherSteps ? Grid[k + 1] / 1000.0 : 0;   // shift 1: sigma = t/1000
                x0 = x - sigma * v;
                x = x + (next - sigma) * v;
            }
            Assert.True((entry["real"] - x0[0]).abs().max().item<float>() < 1e-5);
            Assert.True((entry["text_embedding"] - raw.Conditioning[Conditioning.Text].Values[0]).abs().max().item<float>() == 0);
        }
    }

    [Fact]
    public void KilledBuildResumesWithoutRecomputingAndCorruptEntriesAreRebuilt()
    {
        var root = TestPaths.TempDir("kd-cache");
        var cacheDir = Path.Combine(root, "cache");
        var cfg = Config(Path.Combine(root, "run"), "kd_causal", Options(cacheDir));
        using var rows = Rows(cfg);
        var cache = new TrajectoryCache(cacheDir);

        // Killed after its third entry, with a half-written temporary file left behind.
        Assert.Throws<SimulatedKill>(() => Start(cfg, rows, i => { if (i == 2) throw new SimulatedKill(); }));
        Assert.Equal(3, Directory.GetFiles(cache.SamplesDirectory, "*.safetensors").Length);
        Assert.False(cache.IsComplete);
        File.WriteAllText(Path.Combine(cache.SamplesDirectory, ".00000003.safetensors.0123.tmp"), "partial");
        var finished = Enumerable.Range(0, 3).ToDictionary(i => i, i => (File.ReadAllBytes(cache.EntryPath(i)), File.GetLastWriteTimeUtc(cache.EntryPath(i))));

        // The next run makes only the missing entries; the finished ones are not touched.
        using (var m = Start(cfg, rows)) Assert.Equal([3, 4, 5, 6, 7], m.BuiltEntries);
        Assert.True(cache.IsComplete);
        Assert.Empty(Directory.GetFiles(cache.SamplesDirectory, ".*.tmp"));
        foreach (var (i, (bytes, time)) in finished)
        {
            Assert.Equal(bytes, File.ReadAllBytes(cache.EntryPath(i)));
            Assert.Equal(time, File.GetLastWriteTimeUtc(cache.EntryPath(i)));
        }
        // And the result is the uninterrupted build's, entry for entry, to the bit.
        var otherDir = Path.Combine(root, "cache-straight");
        using (var m = Start(Config(Path.Combine(root, "run2"), "kd_causal", Options(otherDir)), rows)) Assert.Equal(8, m.BuiltEntries.Count);
        for (int i = 0; i < 8; i++)
            Assert.Equal(File.ReadAllBytes(new TrajectoryCache(otherDir).EntryPath(i)), File.ReadAllBytes(cache.EntryPath(i)));

        // A complete cache is reused as it is, with or without the teacher.
        using (var m = Start(cfg, rows)) Assert.Empty(m.BuiltEntries);
        using (var m = Start(Config(Path.Combine(root, "run3"), "kd_causal", Options(cacheDir), teacher: false), rows))
            Assert.Null(m.Teacher);

        // A flipped byte in entry 5's data and a truncated entry 6: detected and rebuilt (with the teacher) ...
        var original5 = File.ReadAllBytes(cache.EntryPath(5));
        var flipped = (byte[])original5.Clone();
        flipped[^9] ^= 0x40;
        File.WriteAllBytes(cache.EntryPath(5), flipped);
        File.WriteAllBytes(cache.EntryPath(6), File.ReadAllBytes(cache.EntryPath(6))[..100]);
        var warnings = new List<string>();
        using (var m = (KDMethod)TrainingBuilder.Build(cfg))
        {
            m.TrainingData(rows);
            m.Log = warnings.Add;
            m.OnTrainStart();
            Assert.Equal([5, 6], m.BuiltEntries);
        }
        Assert.Contains(warnings, w => w.Contains(cache.EntryPath(5)) && w.Contains("do not match their digest"));
        Assert.Contains(warnings, w => w.Contains(cache.EntryPath(6)) && w.Contains("corrupt"));
        Assert.Equal(original5, File.ReadAllBytes(cache.EntryPath(5)));
        // ... and refused, naming the file, without one.
        File.WriteAllBytes(cache.EntryPath(5), flipped);
        var e = Assert.Throws<UserError>(() => Start(Config(Path.Combine(root, "run4"), "kd_causal", Options(cacheDir), teacher: false), rows));
        Assert.Contains(cache.EntryPath(5), e.Message);
        Assert.Contains("add the frozen teacher role", e.Message);
    }

    [Fact]
    public void SigkilledCliBuildResumesWithoutRecomputingFinishedEntries()
    {
        // The built CLI beside the tests builds the cache of a kd_causal recipe (a 200-step teacher, so that an entry
        // takes a while) and is killed (SIGKILL) once an entry is on disk; the next run makes only the others and
        // leaves the finished ones as they were.
        var model = Fixture.Value.Model;
        var root = TestPaths.TempDir("kd-sigkill");
        // Three rows (the fixture's clips, fewer of them): killed after the first, the resumed build makes two.
        var data = Path.Combine(root, "data");
        FastVideo.Data.Synthetic.SyntheticVideoDataset.Write(new FastVideo.Data.Synthetic.SyntheticOptions
            { Colors = 1, Directions = 3, ClipsPerClass = 1, Frames = 2, Height = 8, Width = 8, ShapeSize = 3, TextLen = 6, EmbedDim = 16, Seed = 1 }, data);
        var cacheDir = Path.Combine(root, "cache");
        var recipe = Path.Combine(root, "kd.yaml");
        File.WriteAllText(recipe, $$"""
            recipe: {family: wan_causal, method: kd_causal}
            roles:
              student: {init_from: "{{model}}", num_frames_per_block: 1, flow_shift: 1.0}
              teacher: {family: wan, init_from: "{{model}}", trainable: false, flow_shift: 1.0}
            method: {t_list: [1000, 750, 500, 250, 0], teacher_path_cache: "{{cacheDir}}", teacher_inference_steps: 200}
            training:
              compute_precision: fp32
              data: {data_path: "{{data}}", train_batch_size: 2, seed: 5, num_latent_t: 2}
              optimizer: {learning_rate: 1.0e-3}
              loop: {max_train_steps: 1}
              checkpoint: {output_dir: "{{Path.Combine(root, "run")}}"}
            pipeline: {text_len: 6, flow_shift: 1.0}
            """);
        var cache = new TrajectoryCache(cacheDir);
        var psi = new System.Diagnostics.ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "FastVideo.Cli"), ["train", recipe])
            { RedirectStandardOutput = false, RedirectStandardError = true };
        using (var p = System.Diagnostics.Process.Start(psi)!)
        {
            var deadline = DateTime.UtcNow.AddMinutes(5);
            while (!p.HasExited && DateTime.UtcNow < deadline
                   && (!Directory.Exists(cache.SamplesDirectory) || Directory.GetFiles(cache.SamplesDirectory, "*.safetensors").Length < 1))
                Thread.Sleep(5);
            if (p.HasExited) Assert.Fail($"the build ended before it could be killed: {p.StandardError.ReadToEnd()}");
            p.Kill();
            p.WaitForExit();
        }
        Assert.False(cache.IsComplete);
        var finished = Directory.GetFiles(cache.SamplesDirectory, "*.safetensors").Order().ToDictionary(f => f, File.ReadAllBytes);
        Assert.InRange(finished.Count, 1, 2);

        var cfg = RecipeLoader.Load(recipe, [], ModelFamilyRegistry.Default);
        using var rows = Rows(cfg);
        using (var m = Start(cfg, rows))
            Assert.Equal(Enumerable.Range(finished.Count, 3 - finished.Count).Select(i => (long)i), m.BuiltEntries);
        foreach (var (file, bytes) in finished) Assert.Equal(bytes, File.ReadAllBytes(file));
        Assert.True(cache.IsComplete);
    }

    [Fact]
    public void CacheMetadataAndOptionsAreChecked()
    {
        var root = TestPaths.TempDir("kd-meta");
        var cacheDir = Path.Combine(root, "cache");
        var cfg = Config(Path.Combine(root, "run"), "kd", Options(cacheDir));
        using var rows = Rows(cfg);
        using (Start(cfg, rows)) { }
        // Another step count (with its own grid) is refused by the cache's metadata, naming the key.
        var otherSteps = Options(cacheDir);
        otherSteps["teacher_inference_steps"] = 4L;
        otherSteps["t_list"] = new List<object?> { 1000L, 0L };
        var e = Assert.Throws<UserError>(() => Start(Config(Path.Combine(root, "run2"), "kd", otherSteps), rows));
        Assert.Contains("teacher_inference_steps is 8 in the cache but 4 in this run", e.Message);
        Assert.Contains("teacher_guidance_scale is 1 in the cache but 2 in this run",
            Assert.Throws<UserError>(() => Start(Config(Path.Combine(root, "run3"), "kd", Options(cacheDir, guidance: 2.0)), rows)).Message);
        // A t_list value off the teacher's grid is refused before anything is built.
        var off = Options(Path.Combine(root, "other"), tList: new List<object?> { 999L, 0L });
        Assert.Contains($"method.t_list[0]: 999 is not one of the teacher's integer timesteps", Assert.Throws<UserError>(() => TrainingBuilder.Build(Config(root, "kd", off))).Message);
        var steps = Options(cacheDir);
        steps["student_sample_steps"] = 3L;
        Assert.Contains("method.student_sample_steps: (3) must equal len(t_list) - 1 = 4", Assert.Throws<RecipeError>(() => Config(root, "kd", steps)).Message);
        // No cache and no teacher.
        Assert.Contains("is not a complete trajectory cache and the recipe has no teacher",
            Assert.Throws<UserError>(() => Start(Config(Path.Combine(root, "run5"), "kd", Options(Path.Combine(root, "none")), teacher: false), rows)).Message);
        var trainableTeacher = Config(root, "kd", Options(cacheDir));
        trainableTeacher = trainableTeacher with { Roles = new Dictionary<string, RoleConfig>(trainableTeacher.Roles) { ["teacher"] = trainableTeacher.Roles["teacher"] with { Trainable = true } } };
        Assert.Contains("roles.teacher.trainable", Assert.Throws<UserError>(() => TrainingBuilder.Build(trainableTeacher)).Message);
    }

    [Theory]
    [InlineData("kd")]
    [InlineData("kd_causal")]
    public void LossAndGradientsMatchAHandComputation(string method)
    {
        using var scope = NewDisposeScope();
        var root = TestPaths.TempDir("kd-loss");
        var cfg = Config(Path.Combine(root, "run"), method, Options(Path.Combine(root, "cache")));
        using var rows = Rows(cfg);
        using var m = Start(cfg, rows);
        var source = m.TrainingData(rows);
        using var batch = source.Next();
        using var start = m.Generator.get_state();
        var r = m.SingleTrainStep(batch, 1);
        m.Backward(r, 2);
        var grads = CausalMethodFixture.Grads(m.Student.Transformer);
        CausalMethodFixture.ZeroGrads(m.Student.Transformer);

        // By hand (spec 6.6): the step index (one, or one per frame), prepare_batch's draws, the cached state at that
        // step, x0 = x_t - sigma v with sigma = t/1000 (shift 1), loss 0.5 mean((x0 - real)^2).
        m.Generator.set_state(start);
        var tList = new[] { Grid[0], Grid[2], Grid[4], Grid[6] };
        var traj = batch.Extras["trajectory_latents"];                         // [B,S,T,C,H,W]
        long b = traj.shape[0], frames = traj.shape[2];
        var idx = method == "kd"
            ? randint(0, 4, [1], dtype: ScalarType.Int64, generator: m.Generator).expand(b, frames)
            : randint(0, 4, [b, frames], dtype: ScalarType.Int64, generator: m.Generator);   // blocks of 1 frame
        using var tb = m.Student.PrepareBatch(batch, m.Generator);
        var xt = zeros(traj.select(1, 0).shape);
        var t = zeros(b, frames);
        for (int i = 0; i < b; i++)
            for (int f = 0; f < frames; f++)
            {
                int k = (int)idx[i, f].item<long>();
                xt[i, f] = traj[i, 2 * k, f];                                   // t_list[k] = Grid[2k] is trajectory state 2k
                t[i, f] = tList[k];
            }
        var v = m.Student.PredictNoise(xt, method == "kd" ? t.select(1, 0) : t, tb, conditional: true);
        var x0 = xt - t.reshape(b, frames, 1, 1, 1) / 1000 * v;
        var real = batch.VaeLatent!.permute(0, 2, 1, 3, 4);
        var loss = 0.5 * (x0 - real).pow(2).mean();
        Assert.Equal(loss.item<float>(), r.Losses["kd_loss"].item<float>(), 1e-5 * loss.item<float>());
        (loss / 2).backward();
        CausalMethodFixture.AssertGradsClose(CausalMethodFixture.Grads(m.Student.Transformer), grads);
        if (method == "kd_causal") Assert.Equal(idx.to_type(ScalarType.Float32).mean().item<float>(), r.Metrics["kd_mean_step_idx"].item<float>());
    }

    [Theory]
    [InlineData("kd", "kd_step_idx")]
    [InlineData("kd_causal", "kd_mean_step_idx")]
    public void ResumesBitForBitWithAccumulation(string method, string metric)
    {
        var cache = Path.Combine(TestPaths.TempDir("kd-resume"), "cache");
        RunConfig Make(string dir) => Config(dir, method, Options(cache), maxSteps: 4, accum: 2, saveSteps: 2);
        var straight = CausalMethodFixture.AssertResumesBitForBit(Make, ["total_loss", "kd_loss", metric, "grad_norm/student"],
            () => Rows(Make(TestPaths.TempDir("rows"))));
        Assert.NotEqual(straight[2]["kd_loss"], straight[3]["kd_loss"]);
        Assert.True(new TrajectoryCache(cache).IsComplete);
    }
}

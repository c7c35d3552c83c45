using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data.Synthetic;
using FastVideo.Models.Dits;
using FastVideo.Models.Vae;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using FastVideo.Train.Tracking;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Quickstart;

public sealed record QuickstartOptions
{
    public string OutDir { get; init; } = Path.Combine("runs", "quickstart");
    public int TeacherSteps { get; init; } = 4000;
    public int DistillSteps { get; init; } = 600;
    public int TeacherSamplingSteps { get; init; } = 40;
    /// <summary>CFG scale of the teacher's Euler samples in the comparison (the DMD2 stage takes its own from its recipe).</summary>
    public double GuidanceScale { get; init; } = 3.0;
    /// <summary>Noise seeds per prompt in the comparison: 24 x 8 prompts = 192 samples per generator.</summary>
    public IReadOnlyList<long> EvalSeeds { get; init; } = Enumerable.Range(1001, 24).Select(i => (long)i).ToList();
    /// <summary>Reuse a finished teacher in the run folder instead of training it again.</summary>
    public bool ReuseTeacher { get; init; }
    /// <summary>An earlier quickstart in the folder is moved to <c>&lt;out&gt;.previous-&lt;time&gt;</c> (kept) instead of
    /// being re-run into and replaced.</summary>
    public bool Overwrite { get; init; }
    public IReadOnlyList<string> TeacherOverrides { get; init; } = [];
    public IReadOnlyList<string> DistillOverrides { get; init; } = [];
    /// <summary>Which quickstart: DMD2 of a bidirectional student (default), or a causal student (KD, then Self-Forcing).</summary>
    public QuickstartScenario Scenario { get; init; } = QuickstartScenario.Default;
    /// <summary>Causal scenario: kd_causal steps of the ODE init (examples/recipes/quickstart_causal_kd.yaml).</summary>
    public int KdSteps { get; init; } = 300;
    /// <summary>Causal scenario: Self-Forcing steps (examples/recipes/quickstart_causal_self_forcing.yaml).</summary>
    public int SelfForcingSteps { get; init; } = 600;
    /// <summary>Causal scenario: streaming long tuning steps after Self-Forcing (examples/recipes/quickstart_causal_long_tuning.yaml); 0 = none.</summary>
    public int LongTuningSteps { get; init; }
    public IReadOnlyList<string> KdOverrides { get; init; } = [];
    public IReadOnlyList<string> SelfForcingOverrides { get; init; } = [];
    public IReadOnlyList<string> LongTuningOverrides { get; init; } = [];
    /// <summary>Dataset and teacher architecture (tests shrink them).</summary>
    public SyntheticOptions Data { get; init; } = QuickstartRunner.Data;
    /// <summary>The teacher's transformer config.json (Diffusers keys) for the quickstart's family.</summary>
    public JsonObject Model { get; init; } = QuickstartRunner.Model;
}

public enum QuickstartScenario
{
    /// <summary>Teacher, then a 4-step DMD2 student (<see cref="QuickstartRunner"/>).</summary>
    Default,
    /// <summary>The default scenario's teacher, then a causal student: KD (ODE init), Self-Forcing, streaming (<see cref="CausalQuickstartRunner"/>).</summary>
    Causal,
}

/// <summary>
/// The quickstart: (1) synthesise the moving-shapes dataset, (2) train a small Wan teacher with flow matching,
/// (3) distill a 4-step student from it with DMD2, (4) compare teacher (many steps), student (4 steps) and the
/// undistilled teacher (4 Euler steps, and the student's 4-step sampler as a control) on the same prompts and seeds
/// with the dataset's evaluator, and write report.html and summary.json. Its stages are examples/recipes/quickstart_teacher.yaml and quickstart_dmd2.yaml.
/// </summary>
public static class QuickstartRunner
{
    public static readonly SyntheticOptions Data = new()
    {
        Colors = 4, Directions = 4, ClipsPerClass = 32, Frames = 4, Height = 16, Width = 16, ShapeSize = 5,
        TextLen = 16, EmbedDim = 32, Seed = 7,
        // Every clip starts at the edge it leaves: with random starts this RoPE-only DiT never learns to take the
        // direction from the caption (bench/results/conditioning-probe-2026-12-03.md); with edge starts it does.
        Start = SyntheticStart.Edge,
        // Captions name the axis only ("moving horizontally"), so each caption allows two motions. A few-step
        // sampler that averages them draws two ghost squares; DMD2's student has to learn to commit to one. With
        // exact captions every generator scored 100% and the comparison said nothing (bench/results/quickstart-2026-12-03.md).
        Captions = SyntheticCaptions.Axis,
    };

    /// <summary>The family of the quickstart's recipes (examples/recipes/quickstart_*.yaml).</summary>
    public const string Family = "wan";

    public static JsonObject Model => new()
    {
        ["num_attention_heads"] = 4, ["attention_head_dim"] = 32, ["in_channels"] = 3, ["out_channels"] = 3, ["text_dim"] = 32,
        ["ffn_dim"] = 512, ["num_layers"] = 4,
        ["patch_size"] = new JsonArray(1, 4, 4),   // 4x4-pixel tokens: 64 tokens per clip, so 4000 steps fit in the time budget
    };

    public static string EmbeddedRecipe(string name)
    {
        using var s = typeof(QuickstartRunner).Assembly.GetManifestResourceStream($"recipes/{name}")
            ?? throw new InvalidOperationException($"embedded recipe {name} is missing");
        return new StreamReader(s).ReadToEnd();
    }

    public static JsonObject Run(QuickstartOptions o, TextWriter console)
    {
        var wall = Stopwatch.StartNew();
        var root = Path.GetFullPath(o.OutDir);
        if (o.Overwrite && Directory.Exists(root) && Directory.EnumerateFileSystemEntries(root).Any())
        {
            if (o.ReuseTeacher) throw new UserError("quickstart: --overwrite moves the earlier run (and its teacher) aside, so --reuse-teacher has nothing to reuse; give one of them");
            if (RunFolders.RunLock.IsHeld(root)) throw new RunFolderError($"quickstart --out: '{o.OutDir}' is in use by another quickstart");
            var aside = $"{root}.previous-{DateTime.Now:yyyyMMdd-HHmmss}";
            Directory.Move(root, aside);
            console.WriteLine($"--overwrite: the earlier quickstart in {root} was moved to {aside}");
        }
        using var folderLock = Lock(root, o.OutDir);
        if (File.Exists(Path.Combine(root, "summary.json")))
            console.WriteLine($"{root} holds an earlier quickstart: its stages are run again and replace it");
        var (data, teacherRun, teacherModel) = (DataDir(root), TeacherRunDir(root), TeacherModelDir(root));
        string studentRun = Path.Combine(root, "student"), studentModel = Path.Combine(root, "student_model");
        var families = ModelFamilyRegistry.Default;

        // 1. Data. 2. Teacher: random init, flow matching, EMA weights exported as a Diffusers folder.
        EnsureData(o, root, "[1/4]", console);
        var timings = new JsonObject();
        var stage = Stopwatch.StartNew();
        if (!(o.ReuseTeacher && HasTeacher(root))) TrainTeacher(o, root, families, "[2/4]", console);
        timings["teacher_seconds"] = Math.Round(stage.Elapsed.TotalSeconds, 1);

        // 3. Student: DMD2 from the teacher.
        stage.Restart();
        ResetDir(studentRun);
        console.WriteLine($"[3/4] student: DMD2 distillation for {o.DistillSteps} steps");
        var dcfg = LoadStage("quickstart_dmd2.yaml", root, families,
            [$"training.loop.max_train_steps={o.DistillSteps}", .. o.DistillOverrides]);
        float[] dmdSteps = [];
        TrainStage(dcfg, families, console, 25, (method, _) =>
        {
            dmdSteps = ((Methods.DistributionMatching.DMD2Method)method).DenoisingSteps;
            ExportModel(method.Student, teacherModel, studentModel);
        });
        timings["distill_seconds"] = Math.Round(stage.Elapsed.TotalSeconds, 1);

        // 4. Evaluation and report.
        stage.Restart();
        console.WriteLine("[4/4] evaluation: same prompts and seeds for every generator");
        var eval = QuickstartEvaluation.ForDataset(o.Data, data, o.EvalSeeds);
        var (classes, latent) = (eval.Prompts, QuickstartEvaluation.LatentShape(o.Data));
        double shift = dcfg.Pipeline.FlowShift ?? 1.0;
        // The evaluation computes as the DMD2 stage did (training.compute_precision of its recipe).
        var computePrecision = dcfg.Training.ComputePrecision;
        using var teacher = families.CreateForInference(new InferenceModel(Family, teacherModel, FlowShift: shift, Role: "teacher", ComputePrecision: computePrecision));
        using var student = families.CreateForInference(new InferenceModel(Family, studentModel, FlowShift: shift, Role: "student", ComputePrecision: computePrecision));
        console.WriteLine($"  {classes.Count} prompts x {o.EvalSeeds.Count} seeds = {classes.Count * o.EvalSeeds.Count} samples per generator");
        var results = new List<GeneratorResult>();
        // One line as each generator finishes: the 40-step teacher alone takes a while on a CPU.
        void Add(GeneratorResult r) => results.Add(Print(r, console));
        Add(eval.Euler("teacher", $"teacher, {o.TeacherSamplingSteps} Euler steps, CFG {o.GuidanceScale}", teacher, o.TeacherSamplingSteps, o.GuidanceScale, shift, latent));
        Add(eval.FewStep("student", $"DMD2 student, {dmdSteps.Length} steps, no CFG", student, dmdSteps, latent, 5));
        Add(eval.Euler("undistilled", $"teacher, {dmdSteps.Length} Euler steps, CFG {o.GuidanceScale}", teacher, dmdSteps.Length, o.GuidanceScale, shift, latent));
        // The control for the sampler: the teacher itself through the student's few-step sampler, so what DMD2
        // training adds is read apart from what the sampler adds.
        Add(eval.FewStep("undistilled_fewstep", $"teacher, student's {dmdSteps.Length}-step sampler, no CFG", teacher, dmdSteps, latent, 5));
        timings["evaluation_seconds"] = Math.Round(stage.Elapsed.TotalSeconds, 1);

        var summary = new JsonObject();
        foreach (var r in results) summary[r.Name] = ResultJson(r);
        summary["wall_seconds"] = Math.Round(wall.Elapsed.TotalSeconds, 1);
        summary["timings"] = timings;
        summary["samples_per_generator"] = classes.Count * o.EvalSeeds.Count;
        Reports.QuickstartReport.Write(root, summary, results,
            [(teacherRun, "finetune_loss"), (studentRun, "generator_loss"), (studentRun, "fake_score_loss")]);
        WriteJson(Path.Combine(root, "summary.json"), summary);
        foreach (var r in results) r.Clips.Dispose();
        console.WriteLine($"done in {wall.Elapsed.TotalSeconds:F0} s: {Path.Combine(root, "report.html")}, {Path.Combine(root, "summary.json")}");
        return summary;
    }

    // The run folder's layout, shared by the scenarios: the causal one reuses the default one's data and teacher.
    internal static string DataDir(string root) => Path.Combine(root, "data");
    internal static string TeacherRunDir(string root) => Path.Combine(root, "teacher");
    internal static string TeacherModelDir(string root) => Path.Combine(root, "teacher_model");
    private static string TeacherInitDir(string root) => Path.Combine(root, "teacher_init");

    /// <summary>A finished teacher: its weights are exported only after its last step.</summary>
    public static bool HasTeacher(string root) =>
        File.Exists(Path.Combine(TeacherModelDir(root), "transformer", "diffusion_pytorch_model.safetensors"));

    /// <summary>Creates the folder and holds it: one quickstart per folder at a time; its stages re-run into their sub-folders.</summary>
    internal static IDisposable Lock(string root, string given)
    {
        if (File.Exists(root)) throw new StorageError($"quickstart --out: '{given}' is a file; expected a folder");
        Directory.CreateDirectory(root);
        return RunFolders.RunLock.Acquire(root, "quickstart --out");
    }

    /// <summary>The synthetic dataset of <see cref="QuickstartOptions.Data"/>, unless the folder has one.</summary>
    internal static void EnsureData(QuickstartOptions o, string root, string label, TextWriter console)
    {
        var data = DataDir(root);
        if (File.Exists(Path.Combine(data, SyntheticVideoDataset.ClassesFile))) return;
        if (Directory.Exists(data)) Directory.Delete(data, true);
        console.WriteLine($"{label} synthetic dataset -> {data}");
        SyntheticVideoDataset.Write(o.Data, data, m => console.WriteLine("  " + m));
    }

    /// <summary>Trains the teacher (quickstart_teacher.yaml) from a random init and exports its EMA weights.</summary>
    internal static void TrainTeacher(QuickstartOptions o, string root, ModelFamilyRegistry families, string label, TextWriter console)
    {
        string teacherInit = TeacherInitDir(root), teacherModel = TeacherModelDir(root);
        ResetDir(TeacherRunDir(root));
        WriteInitModel(families, teacherInit, DataDir(root), o.Model);
        console.WriteLine($"{label} teacher: flow matching for {o.TeacherSteps} steps");
        var cfg = LoadStage("quickstart_teacher.yaml", root, families,
            [$"training.loop.max_train_steps={o.TeacherSteps}", .. o.TeacherOverrides]);
        TrainStage(cfg, families, console, 200, (method, trainer) =>
        {
            var ema = trainer.Callbacks.OfType<EmaCallback>().FirstOrDefault();
            using var swap = ema?.Started == true ? ema.Swap() : null;
            ExportModel(method.Student, teacherInit, teacherModel);
        });
    }

    /// <summary>Builds a stage's method and data, trains (every <paramref name="printEvery"/>th step line printed), then
    /// hands the trained method to <paramref name="done"/> before it is disposed.</summary>
    internal static void TrainStage(RunConfig cfg, ModelFamilyRegistry families, TextWriter console, int printEvery, Action<TrainingMethod, Trainer> done)
    {
        using var method = TrainingBuilder.Build(cfg, families);
        using var source = DataLoaderBatchSource.FromConfig(cfg, families);
        using var trainer = new Trainer(method, source, console: new ThrottledWriter(console, printEvery));
        trainer.Run();
        done(method, trainer);
    }

    /// <summary>One generator's scores as summary.json holds them.</summary>
    internal static JsonObject ResultJson(GeneratorResult r) => new()
    {
        ["steps"] = r.Steps, ["accuracy"] = Math.Round(r.Accuracy, 4), ["sharpness"] = Math.Round(r.Sharpness, 4),
        ["color_accuracy"] = Math.Round(r.ColorAccuracy, 4), ["direction_accuracy"] = Math.Round(r.DirectionAccuracy, 4),
        ["object_accuracy"] = r.ObjectAccuracy is { } oa ? Math.Round(oa, 4) : null,
        ["steady_accuracy"] = Math.Round(r.SteadyAccuracy, 4),
        ["description"] = r.Description,
    };

    internal static GeneratorResult Print(GeneratorResult r, TextWriter console)
    {
        console.WriteLine($"  {r.Description,-44} accuracy {r.Accuracy:P1} (colour {r.ColorAccuracy:P0}, direction {r.DirectionAccuracy:P0}, one object {r.ObjectAccuracy:P0})  sharpness {r.Sharpness:F3}");
        return r;
    }

    internal static RunConfig LoadStage(string recipe, string root, IFamilyCatalog families, IReadOnlyList<string> extra) =>
        RecipeLoader.LoadText(StageRecipe(recipe, root), $"examples/recipes/{recipe}", extra, families);

    /// <summary>A stage's recipe text with its paths (runs/quickstart/...) pointing at <paramref name="root"/>.</summary>
    public static string StageRecipe(string recipe, string root) =>
        EmbeddedRecipe(recipe).Replace("runs/quickstart", root.Replace('\\', '/'));

    /// <summary>A pipeline folder: random transformer, the dataset's VAE constants and empty-caption embedding.</summary>
    public static void WriteInitModel(ModelFamilyRegistry families, string dir, string data, JsonObject model)
    {
        ResetDir(dir);
        RandomModelFolder.Write(families.Get(Family), model, 0, dir, data);
    }

    internal static void ExportModel(ModelBase model, string baseDir, string outDir)
    {
        ResetDir(outDir);
        model.SavePretrained(Path.Combine(outDir, "transformer"));
        RandomModelFolder.CopyPipelineFiles(baseDir, outDir);
    }

    internal static void ResetDir(string dir)
    {
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        Directory.CreateDirectory(dir);
    }

    internal static void WriteJson(string path, JsonNode node) =>
        IO.Durable.WriteAllText(path, node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
}

/// <summary>Passes through every line that is not a per-step progress line, and every Nth progress line.</summary>
internal sealed class ThrottledWriter(TextWriter inner, int every) : TextWriter
{
    private int _n;
    public override System.Text.Encoding Encoding => inner.Encoding;
    public override void WriteLine(string? value)
    {
        if (value is not null && value.StartsWith("step ") && ++_n % every != 0 && !IsLast(value)) return;
        inner.WriteLine(value);
    }
    public override void Write(char value) => inner.Write(value);

    private static bool IsLast(string line)
    {
        var parts = line[5..].Split(' ')[0].Split('/');
        return parts.Length == 2 && parts[0] == parts[1];
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Data.Synthetic;
using FastVideo.Models.Schedulers;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.DistributionMatching;
using FastVideo.Train.Methods.KnowledgeDistillation;
using FastVideo.Train.Models;
using static FastVideo.Train.Quickstart.QuickstartRunner;

namespace FastVideo.Train.Quickstart;

/// <summary>
/// The causal quickstart (<c>fastvideo quickstart --scenario causal</c>): (1-2) the default scenario's dataset and
/// teacher, reused when the folder holds them, else made as it makes them; (3) a causal (<c>wan_causal</c>) student
/// initialised by knowledge distillation of the teacher's ODE (kd_causal, examples/recipes/quickstart_causal_kd.yaml),
/// (4) then trained with Self-Forcing (quickstart_causal_self_forcing.yaml); (5) the teacher at 40 Euler steps, the
/// KD-only student and the Self-Forcing student streamed at 4 steps per block, on the default scenario's prompts and
/// seeds and the same evaluator, and a clip twice as long as the training clips streamed by the Self-Forcing
/// student (speed, and whether its second half keeps the first half's colour and direction). Writes
/// <c>&lt;out&gt;/causal/report.html</c> and <c>summary.json</c>; the default scenario's own files stay.
/// </summary>
public static class CausalQuickstartRunner
{
    /// <summary>The scenario's sub-folder of the quickstart folder.</summary>
    public const string Folder = "causal";
    public const string StudentFamily = "wan_causal";

    public static JsonObject Run(QuickstartOptions o, TextWriter console)
    {
        if (o.ReuseTeacher) throw new UserError("quickstart --scenario causal reuses the folder's teacher whenever it has one; --reuse-teacher is an option of the default scenario");
        if (o.Overwrite) throw new UserError("quickstart --scenario causal re-runs its own stages into <out>/causal and keeps the default scenario's; --overwrite is an option of the default scenario");
        var wall = Stopwatch.StartNew();
        var root = Path.GetFullPath(o.OutDir);
        using var folderLock = Lock(root, o.OutDir);
        var dir = Path.Combine(root, Folder);
        string kdRun = Path.Combine(dir, "ode_init"), odeInitModel = Path.Combine(dir, "ode_init_model");
        string sfRun = Path.Combine(dir, "student"), studentModel = Path.Combine(dir, "student_model");
        string teacherModel = TeacherModelDir(root);
        var families = ModelFamilyRegistry.Default;
        var timings = new JsonObject();

        // 1-2. The default scenario's data and teacher.
        EnsureData(o, root, "[1/5]", console);
        var stage = Stopwatch.StartNew();
        bool reused = HasTeacher(root);
        if (reused) console.WriteLine($"[2/5] teacher: reusing {teacherModel} (the default scenario's)");
        else TrainTeacher(o, root, families, "[2/5]", console);
        timings["teacher_seconds"] = Math.Round(stage.Elapsed.TotalSeconds, 1);
        Directory.CreateDirectory(dir);

        // 3. ODE init: kd_causal onto the teacher's cached ODE results. The cache is rebuilt every run: it belongs to
        // this folder's teacher, which a default run may have retrained since.
        stage.Restart();
        ResetDir(kdRun);
        var kcfg = LoadStage("quickstart_causal_kd.yaml", root, families, [$"training.loop.max_train_steps={o.KdSteps}", .. o.KdOverrides]);
        var kd = kcfg.MethodOptions<KDOptions>();
        if (Directory.Exists(kd.TeacherPathCache)) Directory.Delete(kd.TeacherPathCache, true);
        console.WriteLine($"[3/5] ODE init: the teacher's {kd.TeacherInferenceSteps}-step ODE cached for every row, then kd_causal for {o.KdSteps} steps");
        double[] kdSteps = [];
        TrainStage(kcfg, families, console, 50, (method, _) =>
        {
            kdSteps = kd.TList.Take(((KDMethod)method).Steps).Select(t => (double)t).ToArray();
            ExportModel(method.Student, teacherModel, odeInitModel);
        });
        timings["ode_init_seconds"] = Math.Round(stage.Elapsed.TotalSeconds, 1);

        // 4. Self-Forcing from the ODE init.
        stage.Restart();
        ResetDir(sfRun);
        console.WriteLine($"[4/5] Self-Forcing for {o.SelfForcingSteps} steps");
        var scfg = LoadStage("quickstart_causal_self_forcing.yaml", root, families, [$"training.loop.max_train_steps={o.SelfForcingSteps}", .. o.SelfForcingOverrides]);
        double[] sfSteps = [];
        TrainStage(scfg, families, console, 25, (method, _) =>
        {
            sfSteps = ((SelfForcingMethod)method).DenoisingSteps.Select(t => (double)t).ToArray();
            ExportModel(method.Student, teacherModel, studentModel);
        });
        timings["self_forcing_seconds"] = Math.Round(stage.Elapsed.TotalSeconds, 1);

        // 4b. Streaming long tuning of the Self-Forcing student (optional): its stream runs past the teacher's horizon.
        string longRun = Path.Combine(dir, "long_tuning"), longModel = Path.Combine(dir, "long_tuned_model");
        if (o.LongTuningSteps > 0)
        {
            stage.Restart();
            ResetDir(longRun);
            var lcfg = LoadStage("quickstart_causal_long_tuning.yaml", root, families, [$"training.loop.max_train_steps={o.LongTuningSteps}", .. o.LongTuningOverrides]);
            var lo = lcfg.MethodOptions<StreamingLongTuningOptions>();
            console.WriteLine($"[4b/5] streaming long tuning for {o.LongTuningSteps} steps: streams of {lo.StreamingMaxLength ?? lcfg.Training.Data.NumLatentT} frames, " +
                              $"each step's new frames scored with the last frames of the previous chunk ({lo.StreamingChunkSize} frames scored)");
            TrainStage(lcfg, families, console, 25, (method, _) => ExportModel(method.Student, teacherModel, longModel));
            timings["long_tuning_seconds"] = Math.Round(stage.Elapsed.TotalSeconds, 1);
        }
        else if (Directory.Exists(longModel)) Directory.Delete(longModel, true);

        // 5. Evaluation: the default scenario's prompts, seeds, teacher setting and evaluator.
        stage.Restart();
        console.WriteLine("[5/5] evaluation: same prompts and seeds as the default scenario");
        var d = o.Data;
        var eval = QuickstartEvaluation.ForDataset(d, DataDir(root), o.EvalSeeds);
        var (classes, latent) = (eval.Prompts, QuickstartEvaluation.LatentShape(o.Data));
        double shift = scfg.Pipeline.FlowShift ?? 1.0;
        var precision = scfg.Training.ComputePrecision;
        InferenceModel Causal(string path, string role, PipelineConfig? pipeline = null) =>
            new(StudentFamily, path, FlowShift: shift, Role: role, ComputePrecision: precision, Pipeline: pipeline ?? scfg.Pipeline);
        using var teacher = families.CreateForInference(new InferenceModel(Family, teacherModel, FlowShift: shift, Role: "teacher", ComputePrecision: precision));
        using var odeInit = families.CreateForInference(Causal(odeInitModel, "ode_init"));
        using var student = families.CreateForInference(Causal(studentModel, "student"));
        // Both students denoise on the grid they were trained on: the Self-Forcing scheduler's (spec 3.2).
        var grid = SelfForcingFlowMatchScheduler.ForTraining(shift, student.NumTrainTimesteps, training: true);
        console.WriteLine($"  {classes.Count} prompts x {o.EvalSeeds.Count} seeds = {classes.Count * o.EvalSeeds.Count} samples per generator");
        var results = new List<GeneratorResult>();
        void Add(GeneratorResult r) => results.Add(Print(r, console));
        Add(eval.Euler("teacher", $"teacher, {o.TeacherSamplingSteps} Euler steps, CFG {o.GuidanceScale}", teacher, o.TeacherSamplingSteps, o.GuidanceScale, shift, latent));
        Add(eval.Streaming("ode_init", $"KD-only causal student, {kdSteps.Length} steps per frame", odeInit, kdSteps, grid, latent, 5));
        Add(eval.Streaming("student", $"Self-Forcing causal student, {sfSteps.Length} steps per frame", student, sfSteps, grid, latent, 5));
        using var longTuned = o.LongTuningSteps > 0 ? families.CreateForInference(Causal(longModel, "long_tuned")) : null;
        if (longTuned is not null)
            Add(eval.Streaming("long_tuned", $"Self-Forcing + streaming long tuning, {sfSteps.Length} steps per frame", longTuned, sfSteps, grid, latent, 5));
        // The streamed generator: the long-tuned student when there is one.
        var streamer = longTuned ?? student;
        string streamerModel = longTuned is null ? studentModel : longModel;

        // The long clips: twice the training length, streamed by the Self-Forcing student for every prompt and seed
        // (the second half checked by the evaluator), and one of them alone (B = 1) for the speed.
        long[] longLatent = QuickstartEvaluation.LatentShape(d, 2 * d.Frames);
        var longClips = eval.Streaming("student_long", $"{(longTuned is null ? "Self-Forcing" : "long-tuned")} student, {2 * d.Frames} frames streamed", streamer, sfSteps, grid, longLatent, 5);
        var continuation = ContinuationCheck.Of(eval.Evaluator, longClips.Clips, longClips.Prompts, d.Frames);
        // The same with a local window of the training clips' length: every frame then attends over frame distances it
        // saw in training (RoPE scores depend on the distance only), where global attention reaches back further.
        var windowed = scfg.Pipeline with { DitConfig = scfg.Pipeline.DitConfig with { LocalAttnSize = d.Frames } };
        ContinuationCheck local;
        using (var studentLocal = families.CreateForInference(Causal(streamerModel, "student", windowed)))
        {
            var localRun = eval.Streaming("student_long_local", "", studentLocal, sfSteps, grid, longLatent, 5);
            local = ContinuationCheck.Of(eval.Evaluator, localRun.Clips, localRun.Prompts, d.Frames);
            localRun.Clips.Dispose();
        }
        var one = new QuickstartEvaluation(DataDir(root), d.EmbedDim, d.Seed, d.TextLen, [classes[0]], [o.EvalSeeds[0]]);
        one.Streaming("warm-up", "", streamer, sfSteps, grid, latent, 5).Clips.Dispose();   // first-call set-up is not streaming speed
        double seconds = 0;
        var blockSeconds = new JsonArray();
        var clip = one.Streaming("streamed", "", streamer, sfSteps, grid, longLatent, 5, (_, _, s) => { seconds += s; blockSeconds.Add(Math.Round(s, 4)); });
        long frames = 2 * d.Frames;
        console.WriteLine($"  long clip: {frames} frames in {seconds:F2} s ({frames / seconds:F1} frames/s, B = 1)");
        foreach (var (what, c) in new[] { ("global attention", continuation), ($"local window {d.Frames}", local) })
            console.WriteLine($"  second half of {c.Samples} long clips, {what}: colour {c.ColorAccuracy:P1}, direction {c.DirectionAccuracy:P1}, " +
                              $"both the same as in the first half {c.Kept:P1}");
        timings["evaluation_seconds"] = Math.Round(stage.Elapsed.TotalSeconds, 1);

        var summary = new JsonObject { ["scenario"] = "causal", ["teacher_reused"] = reused };
        foreach (var r in results) summary[r.Name] = ResultJson(r);
        summary["streaming"] = new JsonObject
        {
            ["frames"] = frames, ["training_frames"] = d.Frames, ["frames_per_second"] = Math.Round(frames / seconds, 2),
            ["seconds"] = Math.Round(seconds, 3), ["block_seconds"] = blockSeconds, ["frames_per_block"] = ((ICausalModel)streamer).NumFramesPerBlock, ["generator"] = longTuned is null ? "student" : "long_tuned",
            ["steps_per_block"] = sfSteps.Length, ["batch"] = 1, ["prompt"] = classes[0], ["seed"] = o.EvalSeeds[0],
            ["second_half"] = continuation.ToJson(),
            ["second_half_local_window"] = local.ToJson(d.Frames),
            ["whole_clip"] = ResultJson(longClips),
        };
        // The acceptance lines, computed from the numbers above.
        var (t, k, s2) = (results[0], results[1], results[2]);
        summary["checks"] = new JsonObject
        {
            ["student_over_teacher_accuracy"] = t.Accuracy > 0 ? Math.Round(s2.Accuracy / t.Accuracy, 4) : null,
            ["student_reaches_85_percent_of_teacher"] = s2.Accuracy >= 0.85 * t.Accuracy,
            ["student_beats_ode_init"] = s2.Accuracy > k.Accuracy || s2.Sharpness > k.Sharpness,
            // The evaluator's colour and direction (one the caption allows) on the long clips' second half, in most of them.
            ["long_clip_second_half_color"] = Math.Round(continuation.ColorAccuracy, 4),
            ["long_clip_second_half_direction"] = Math.Round(continuation.DirectionAccuracy, 4),
            // What "keeps" asks: the caption allows either sign on its axis, so a square that turns back still passes the
            // direction above. Kept = the colour and the first half's direction (global attention; a window of the
            // training length).
            ["long_clip_second_half_kept"] = Math.Round(continuation.Kept, 4),
            ["long_clip_second_half_kept_local_window"] = Math.Round(local.Kept, 4),
        };
        summary["wall_seconds"] = Math.Round(wall.Elapsed.TotalSeconds, 1);
        summary["timings"] = timings;
        summary["samples_per_generator"] = classes.Count * o.EvalSeeds.Count;

        var curves = new List<(string, string)>();
        if (!reused || File.Exists(Path.Combine(TeacherRunDir(root), "metrics.jsonl"))) curves.Add((TeacherRunDir(root), "finetune_loss"));
        curves.AddRange([(kdRun, "kd_loss"), (sfRun, "generator_loss"), (sfRun, "fake_score_loss")]);
        if (longTuned is not null) curves.AddRange([(longRun, "generator_loss"), (longRun, "fake_score_loss")]);
        var title = longTuned is null ? "a causal student (KD, then Self-Forcing), streamed" : "a causal student (KD, Self-Forcing, then streaming long tuning), streamed";
        Reports.QuickstartReport.Write(dir, summary, results, curves, title,
            LongClipHtml(dir, longTuned is null ? "The Self-Forcing student" : "The long-tuned student (Self-Forcing, then streaming long tuning)",
                clip, longClips, continuation, summary["streaming"]!.AsObject()));
        WriteJson(Path.Combine(dir, "summary.json"), summary);
        foreach (var r in results) r.Clips.Dispose();
        longClips.Clips.Dispose();
        clip.Clips.Dispose();
        console.WriteLine($"done in {wall.Elapsed.TotalSeconds:F0} s: {Path.Combine(dir, "report.html")}, {Path.Combine(dir, "summary.json")}");
        return summary;
    }

    /// <summary>The report's long-clip section: the timed clip, each prompt's long clip (first seed) and the second-half check.</summary>
    private static string LongClipHtml(string dir, string who, GeneratorResult timed, GeneratorResult all, ContinuationCheck c, JsonObject streaming)
    {
        var media = Path.Combine(dir, "media");
        Directory.CreateDirectory(media);
        var html = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        html.Append(inv, $"<h2>Streaming a clip twice as long as the training clips</h2><p>{Reports.QuickstartReport.Esc(who)}, frame by frame through its KV cache, ")
            .Append(inv, $"{streaming["frames"]} frames ({streaming["training_frames"]} in training): {streaming["frames_per_second"]} frames/s for one clip (B = 1, {streaming["steps_per_block"]} steps per block). ")
            .Append(inv, $"Over {c.Samples} long clips (every prompt and seed), the evaluator on frames {c.SplitFrame}.. alone: ")
            .Append(inv, $"colour {c.ColorAccuracy:P1}, direction {c.DirectionAccuracy:P1}, same colour as the first half {c.SameColor:P1}, same direction {c.SameDirection:P1}, ")
            .Append(inv, $"all four {c.Kept:P1}; sharpness {c.Sharpness:F3}.</p><table><tr><th>prompt</th><th>streamed clip</th></tr>");
        GifWriter.Write(Path.Combine(media, "long_timed.gif"), timed.Clips[0], fps: 4, scale: 6);
        html.Append(inv, $"<tr><td>{Reports.QuickstartReport.Esc(timed.Prompts[0])} (timed)</td><td><img src='media/long_timed.gif' alt='long clip'></td></tr>");
        var prompts = all.Prompts.Distinct().ToList();
        int seeds = all.Prompts.Count / prompts.Count;
        for (int p = 0; p < prompts.Count; p++)
        {
            var name = $"long_{p:D2}.gif";
            GifWriter.Write(Path.Combine(media, name), all.Clips[p * seeds], fps: 4, scale: 6);
            html.Append(inv, $"<tr><td>{Reports.QuickstartReport.Esc(prompts[p])}</td><td><img src='media/{name}' alt='long clip'></td></tr>");
        }
        return html.Append("</table>").ToString();
    }
}

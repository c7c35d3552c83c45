// Training speed of the causal methods on the quickstart-sized model (Wan D = 128: 4 heads x 32, 4 layers, patch
// 1x4x4 on 16x16 latents, 4 latent frames, batch 8): each example recipe of examples/recipes/fastvideo/wan_causal_*.yaml
// pointed at the quickstart dataset and a random model of the quickstart teacher's shape, a few steps each.
// Reports the set-up time (for KD: building the teacher-trajectory cache) and the median seconds per step after the
// first, and, as a ratio taken in the same run, against the quickstart teacher's finetune step (method "finetune":
// examples/recipes/quickstart_teacher.yaml, a bidirectional Wan of the same shape) - absolute times on a shared
// machine move with its load, ratios much less.
// Run: dotnet run -c Release --project bench/CausalMethodsBench [-- --steps N --methods a,b --kd-rows N --compute auto|fp32|bf16 --out FILE]
using System.Diagnostics;
using System.Globalization;
using FastVideo.Configs;
using FastVideo.Data.Synthetic;
using FastVideo.Train;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Quickstart;
using FastVideo.Train.Tracking;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
string Arg(string name, string fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;
int steps = int.Parse(Arg("--steps", "12"), CultureInfo.InvariantCulture);
var methods = Arg("--methods", "finetune,dfsft,dfsft_framewise,tfsft,kd,kd_causal,self_forcing,finetune").Split(',');
int kdRows = int.Parse(Arg("--kd-rows", "64"), CultureInfo.InvariantCulture);
string compute = Arg("--compute", "auto");
string? outFile = args.SkipWhile(a => a != "--out").Skip(1).FirstOrDefault();

var repo = new DirectoryInfo(AppContext.BaseDirectory);
while (!File.Exists(Path.Combine(repo.FullName, "FastVideo.slnx"))) repo = repo.Parent!;
var root = Path.Combine(Path.GetTempPath(), $"fv-causal-bench-{Environment.ProcessId}");
var data = Path.Combine(root, "data");
var model = Path.Combine(root, "model");
var families = ModelFamilyRegistry.Default;
// The quickstart's dataset (kd: only its first kd-rows clips, so that the cache build fits the run) and a random
// model of its teacher's shape with the dataset's VAE constants and empty-caption embedding.
SyntheticVideoDataset.Write(QuickstartRunner.Data, data);
var kdData = Path.Combine(root, "kd-data");
SyntheticVideoDataset.Write(QuickstartRunner.Data with { ClipsPerClass = Math.Max(1, kdRows / 16) }, kdData);
families.Get("wan").WriteRandomTransformer!(QuickstartRunner.Model, 0, Path.Combine(model, "transformer"));
Directory.CreateDirectory(Path.Combine(model, "vae"));
File.Copy(Path.Combine(data, "vae", "config.json"), Path.Combine(model, "vae", "config.json"));
File.Copy(Path.Combine(data, "negative_prompt_embeds.safetensors"), Path.Combine(model, "negative_prompt_embeds.safetensors"));
File.WriteAllText(Path.Combine(model, "model_index.json"), "{\"_class_name\": \"WanPipeline\"}");

var lines = new List<string>
{
    $"causal methods on the quickstart-sized model, {DateTime.Now:yyyy-MM-dd HH:mm}, {Environment.ProcessorCount} cores, torch threads {TorchSharp.torch.get_num_threads()}, compute {compute}, {steps} steps each (median of all but the first)",
    "| method | set-up s | s/step | it/s | x finetune step | forward s | backward s | optimizer s |",
    "|---|---|---|---|---|---|---|---|",
};
double? reference = null;
var results = new List<(string Method, double Setup, double PerStep, string Phases)>();
foreach (var method in methods)
{
    bool kd = method.StartsWith("kd", StringComparison.Ordinal);
    var recipe = method == "finetune"
        ? Path.Combine(repo.FullName, "examples", "recipes", "quickstart_teacher.yaml")
        : Path.Combine(repo.FullName, "examples", "recipes", "fastvideo", $"wan_causal_{method}.yaml");
    var text = File.ReadAllText(recipe)
        .Replace("runs/quickstart/teacher_model", model).Replace("runs/quickstart/teacher_init", model)
        .Replace("runs/fastvideo_wan_causal_ode_init", model)
        .Replace("runs/quickstart/data", kd ? kdData : data).Replace("runs/", root + "/");
    var cfg = RecipeLoader.LoadText(text, recipe, [$"training.loop.max_train_steps={steps}", "training.checkpoint.training_state_checkpointing_steps=0",
        $"training.compute_precision={compute}", "training.checkpoint.resume_from_checkpoint="], families);
    cfg = cfg with { Callbacks = cfg.Callbacks.Where(c => c.Key != "ema").ToList() };   // the reference's EMA is not a step cost
    var setup = Stopwatch.StartNew();
    using var m = TrainingBuilder.Build(cfg, families);
    using var source = DataLoaderBatchSource.FromConfig(cfg, families);
    var memory = new MemoryTracker();
    using (var trainer = new Trainer(m, source, trackers: [memory], console: TextWriter.Null, overwrite: true)) trainer.Run();
    double total = setup.Elapsed.TotalSeconds;
    var timed = memory.Entries.Skip(1).ToList();
    double Median(Func<IReadOnlyDictionary<string, double>, double> pick)
    {
        var v = timed.Select(e => pick(e.Metrics)).Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }
    double perStep = Median(e => e["step_time_sec"]);
    double setupSeconds = total - memory.Entries.Sum(e => e.Metrics["step_time_sec"]);
    var phases = FormattableString.Invariant($"{Median(e => e["time/forward"]):0.000} | {Median(e => e["time/backward"]):0.000} | {Median(e => e["time/optimizer"]):0.000}");
    if (method == "finetune") reference = reference is null ? perStep : Math.Min(reference.Value, perStep);
    results.Add((method, setupSeconds, perStep, phases));
    Console.WriteLine(FormattableString.Invariant($"{method}: set-up {setupSeconds:0.0} s, {perStep:0.000} s/step"));
}
foreach (var (method, setupSeconds, perStep, phases) in results)
    lines.Add(FormattableString.Invariant($"| {method} | {setupSeconds:0.0} | {perStep:0.000} | {1 / perStep:0.00} | {perStep / reference!.Value:0.0} | {phases} |"));
Directory.Delete(root, true);
if (outFile is not null) File.AppendAllLines(outFile, lines);
Console.WriteLine(string.Join("\n", lines));

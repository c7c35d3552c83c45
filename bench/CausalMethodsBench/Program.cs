// Training speed of the causal methods on the quickstart-sized model (Wan D = 128: 4 heads x 32, 4 layers, patch
// 1x4x4 on 16x16 latents, 4 latent frames, batch 8): each example recipe of examples/recipes/fastvideo/wan_causal_*.yaml
// pointed at the quickstart dataset and a random model of the quickstart teacher's shape, a few steps each.
// Reports the set-up time (for KD: building the teacher-trajectory cache) and seconds per step after the first.
// Run: dotnet run -c Release --project bench/CausalMethodsBench [-- --steps N --methods a,b --kd-rows N --out FILE]
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
var methods = Arg("--methods", "dfsft,dfsft_framewise,tfsft,kd,kd_causal,self_forcing").Split(',');
int kdRows = int.Parse(Arg("--kd-rows", "64"), CultureInfo.InvariantCulture);
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
    $"causal methods on the quickstart-sized model, {DateTime.Now:yyyy-MM-dd HH:mm}, {Environment.ProcessorCount} cores, torch threads {TorchSharp.torch.get_num_threads()}",
    "| method | set-up s | s/step | it/s | steps timed |",
    "|---|---|---|---|---|",
};
foreach (var method in methods)
{
    var recipe = Path.Combine(repo.FullName, "examples", "recipes", "fastvideo", $"wan_causal_{method}.yaml");
    bool kd = method.StartsWith("kd", StringComparison.Ordinal);
    var text = File.ReadAllText(recipe)
        .Replace("runs/quickstart/teacher_model", model).Replace("runs/fastvideo_wan_causal_ode_init", model)
        .Replace("runs/quickstart/data", kd ? kdData : data).Replace("runs/", root + "/");
    var cfg = RecipeLoader.LoadText(text, recipe, [$"training.loop.max_train_steps={steps}", "training.checkpoint.training_state_checkpointing_steps=0"], families);
    var setup = Stopwatch.StartNew();
    using var m = TrainingBuilder.Build(cfg, families);
    using var source = DataLoaderBatchSource.FromConfig(cfg, families);
    var memory = new MemoryTracker();
    using var trainer = new Trainer(m, source, trackers: [memory], console: TextWriter.Null);
    trainer.Run();
    double total = setup.Elapsed.TotalSeconds;
    var stepTimes = memory.Entries.Skip(1).Select(e => e.Metrics["step_time_sec"]).ToList();
    double perStep = stepTimes.Average();
    double setupSeconds = total - memory.Entries.Sum(e => e.Metrics["step_time_sec"]);
    var line = FormattableString.Invariant($"| {method} | {setupSeconds:0.0} | {perStep:0.000} | {1 / perStep:0.00} | {stepTimes.Count} |");
    Console.WriteLine(line);
    lines.Add(line);
}
Directory.Delete(root, true);
if (outFile is not null) File.AppendAllLines(outFile, lines);
Console.WriteLine(string.Join("\n", lines));

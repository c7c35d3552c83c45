// Activation memory and step time of the mid-sized Wan (as bench/TrainStepBench) in a finetune step, per activation
// checkpointing policy. Each policy runs in its own process (a fresh heap); per measured step the child reports
//   kept:  RSS right after the forward minus RSS before it (both after malloc_trim): the activations kept for backward
//   peak:  peak RSS during forward + backward minus RSS before the forward
//   time:  forward + backward + AdamW, from further steps that neither trim nor read RSS (after 2 untimed ones).
// The acceptance to check: full keeps <= half the activations of none, at <= 35% more step time. Needs a quiet
// machine for the times; Linux only (/proc/self/status, clear_refs, glibc malloc_trim).
// glibc's heap: with its default (dynamic) mmap threshold, the backward of a checkpointed model grows the heap by
// memory it has freed but does not reuse (parameter gradients are allocated between the recomputations), so the
// untrimmed peak overstates what is live; GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576 makes tensors of 1 MiB
// and more mmap'ed and returned on free, and the peak then shows live memory (it may cost some speed).
// Run: dotnet run -c Release --project bench/CheckpointBench [-- --steps N --policies none,full,block_skip/2,ops --compute fp32,bf16 --repeats R --out FILE]
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using FastVideo.Train.Methods;
using FastVideo.Train.Models.Wan;
using TorchSharp;
using static TorchSharp.torch;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
string Arg(string name, string def) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? def;
int steps = int.Parse(Arg("--steps", "4"), CultureInfo.InvariantCulture);
string compute = Arg("--compute", "fp32,bf16");   // training.compute_precision: a list in the parent, one value in a child

// Mid-sized Wan: D = 8 x 64, ffn 2048, 8 layers, latent [16,8,16,32] (1024 tokens), text 64 x 4096, batch 1.
var cfg = new WanTransformerConfig { NumAttentionHeads = 8, AttentionHeadDim = 64, FfnDim = 2048, NumLayers = 8, InChannels = 16, OutChannels = 16, TextDim = 4096 };
const int C = 16, T = 8, H = 16, W = 32, L = 64;

if (Arg("--child", "") is { Length: > 0 } child) { Child(child, Arg("--model", "")); return; }

var modelDir = Path.Combine(Path.GetTempPath(), $"fv-ckpt-bench-model-{Environment.ProcessId}");
using (var m = WanTransformer3DModel.CreateRandom(cfg, 0)) m.SavePretrained(Path.Combine(modelDir, "transformer"));
File.WriteAllText(Path.Combine(modelDir, "model_index.json"), "{\"_class_name\": \"WanPipeline\"}");
// Each (compute, policy) runs in `repeats` fresh processes, interleaved (fp32, bf16, fp32, bf16, ...) so that drift
// of the machine hits both alike; kept/peak are medians over the processes, the step time the median of all their
// timed steps.
var computes = compute.Split(',');
var policies = Arg("--policies", "none,full,block_skip/2,ops").Split(',');
int repeats = int.Parse(Arg("--repeats", "1"), CultureInfo.InvariantCulture);
var runs = new Dictionary<(string Compute, string Policy), (List<double> Kept, List<double> Peak, List<double> Times)>();
try
{
    for (int rep = 0; rep < repeats; rep++)
    foreach (var c in computes)
    foreach (var policy in policies)
    {
        var self = Environment.ProcessPath!;
        var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(typeof(Program).Assembly.Location);
        foreach (var a in new[] { "--child", policy, "--model", modelDir, "--steps", steps.ToString(CultureInfo.InvariantCulture), "--compute", c }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var lines = p.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        p.WaitForExit();
        foreach (var l in lines.Where(l => !l.StartsWith("result "))) Console.Error.WriteLine($"  [{c} {policy}] {l}");
        if (p.ExitCode != 0) throw new InvalidOperationException($"{c} {policy}: child exited with {p.ExitCode}");
        var last = lines.Last(l => l.StartsWith("result ")).Split(' ');
        if (!runs.TryGetValue((c, policy), out var acc)) runs[(c, policy)] = acc = ([], [], []);
        acc.Kept.Add(double.Parse(last[1], CultureInfo.InvariantCulture));
        acc.Peak.Add(double.Parse(last[2], CultureInfo.InvariantCulture));
        acc.Times.AddRange(lines.Where(l => l.StartsWith("timed step ")).Select(l => double.Parse(l.Split(' ')[3], CultureInfo.InvariantCulture)));
        Console.Error.WriteLine($"{c} {policy} (process {rep + 1}/{repeats}): kept {acc.Kept[^1]:F0} MiB, peak {acc.Peak[^1]:F0} MiB, step {last[3]} s");
    }
}
finally { Directory.Delete(modelDir, true); }

static double Med(List<double> xs) => xs.Order().ElementAt(xs.Count / 2);
var report = new System.Text.StringBuilder();
report.AppendLine(CultureInfo.InvariantCulture, $"## {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, torch threads {torch.get_num_threads()}, Release, {repeats} process(es) x {steps} timed steps per row (medians)");
report.AppendLine(CultureInfo.InvariantCulture, $"- model: D={cfg.InnerDim} ({cfg.NumAttentionHeads}x{cfg.AttentionHeadDim}), ffn {cfg.FfnDim}, {cfg.NumLayers} layers, {T * (H / 2) * (W / 2)} video tokens, {L} text tokens, batch 1, fp32 weights, finetune");
report.AppendLine("| compute | policy | kept after forward | peak in forward+backward | step time | kept vs none | time vs none |");
report.AppendLine("|---|---|---|---|---|---|---|");
foreach (var ((c, policy), r) in runs)
{
    var none = runs.TryGetValue((c, "none"), out var n) ? n : default;
    report.AppendLine(CultureInfo.InvariantCulture,
        $"| {c} | {policy} | {Med(r.Kept):F0} MiB | {Med(r.Peak):F0} MiB | {Med(r.Times):F3} s | {(none.Kept is null ? "" : $"{Med(r.Kept) / Med(none.Kept):P0}")} | {(none.Kept is null ? "" : $"{Med(r.Times) / Med(none.Times) - 1:+0%;-0%;0%}")} |");
}
foreach (var policy in policies)
    if (runs.TryGetValue(("fp32", policy), out var f) && runs.TryGetValue(("bf16", policy), out var b))
        report.AppendLine(CultureInfo.InvariantCulture, $"- {policy}: bf16 compute step {Med(f.Times) / Med(b.Times):F2}x as fast as fp32 (medians of {f.Times.Count} and {b.Times.Count} steps)");
Console.WriteLine(report);
if (Arg("--out", "") is { Length: > 0 } outFile) File.AppendAllText(outFile, report + "\n");

void Child(string policyName, string model)
{
    CheckpointingPolicy? policy = policyName switch
    {
        "none" => null,
        _ when policyName.StartsWith("block_skip/") => CheckpointingPolicy.BlockSkip(int.Parse(policyName["block_skip/".Length..], CultureInfo.InvariantCulture)),
        _ => CheckpointingPolicy.FromRecipe(policyName),
    };
    var run = new RunConfig
    {
        Recipe = new RecipeSection { Family = "wan", Method = "finetune" },
        Method = new FastVideo.Train.Methods.FineTuning.FineTuneOptions(),
        Roles = new Dictionary<string, RoleConfig> { ["student"] = new RoleConfig { InitFrom = model, Family = "wan" } },
        Training = new TrainingConfig
        {
            Data = new DataConfig { Seed = 0, TrainBatchSize = 1, NumLatentT = T, NumHeight = H * 8, NumWidth = W * 8 },
            Optimizer = new OptimizerConfig { LearningRate = 1e-5 },
            Loop = new LoopConfig { MaxTrainSteps = 100 },
            ComputePrecision = compute,
        },
    };
    using var method = TrainingBuilder.Build(run);
    ((WanModel)method.Student).WanTransformer.GradientCheckpointing = policy;   // block_skip/n is not a recipe value
    method.OnTrainStart();
    using var g = new Generator(1, device("cpu"));
    var kept = new List<double>();
    var peak = new List<double>();
    var times = new List<double>();
    for (int i = 1; i <= steps + 2; i++)
    {
        using var scope = NewDisposeScope();
        using var batch = new RawBatch
        {
            VaeLatent = randn([1, C, T, H, W], generator: g),
            Conditioning = Conditioning.FromText(randn([1, L, cfg.TextDim], generator: g), ones(1, L)),
        };
        Trim();
        double before = Rss("VmRSS");
        ResetPeak();
        var sw = Stopwatch.StartNew();
        var r = method.SingleTrainStep(batch, i);   // the forward
        double forwardTime = sw.Elapsed.TotalSeconds;
        double forwardPeak = Rss("VmHWM");
        Trim();
        double afterForward = Rss("VmRSS");
        ResetPeak();
        sw.Restart();
        method.Backward(r, 1);
        double backwardPeak = Math.Max(forwardPeak, Rss("VmHWM"));
        method.OptimizersSchedulersStep(i);
        method.OptimizersZeroGrad(i);
        r.Losses["total_loss"].item<float>();
        double sec = forwardTime + sw.Elapsed.TotalSeconds;   // the trim and RSS reads are not timed
        if (i > 2) { kept.Add(afterForward - before); peak.Add(backwardPeak - before); times.Add(sec); }   // 2 warm-up steps
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"step {i}: kept {afterForward - before:F0} MiB, peak in forward {forwardPeak - before:F0} MiB, in backward {Rss("VmHWM") - before:F0} MiB, {sec:F3} s"));
    }
    // Step time from separate steps without the trims and RSS reads: a trim hands the heap back to the kernel, and
    // the next step would pay for faulting it in again, which a training run does not.
    // Two untimed steps first: the steps above trimmed the heap, and the first steps after a trim fault it back in.
    times.Clear();
    for (int i = steps + 3; i <= 2 * steps + 4; i++)
    {
        using var scope = NewDisposeScope();
        using var batch = new RawBatch
        {
            VaeLatent = randn([1, C, T, H, W], generator: g),
            Conditioning = Conditioning.FromText(randn([1, L, cfg.TextDim], generator: g), ones(1, L)),
        };
        long faults0 = MinorFaults();
        var sw = Stopwatch.StartNew();
        var r = method.SingleTrainStep(batch, i);
        double tf = sw.Elapsed.TotalSeconds;
        method.Backward(r, 1);
        double tb = sw.Elapsed.TotalSeconds;
        method.OptimizersSchedulersStep(i);
        method.OptimizersZeroGrad(i);
        r.Losses["total_loss"].item<float>();
        if (i <= steps + 4) { Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"warm-up step {i}: {sw.Elapsed.TotalSeconds:F3} s")); continue; }
        times.Add(sw.Elapsed.TotalSeconds);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"timed step {i}: {times[^1]:F3} s (forward {tf:F3}, backward {tb - tf:F3}), {MinorFaults() - faults0} page faults"));
    }
    double Median(List<double> xs) => xs.Order().ElementAt(xs.Count / 2);
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"result {Median(kept):F1} {Median(peak):F1} {Median(times):F4}"));
}

static double Rss(string field)
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith(field + ":"))
            return double.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;   // kB -> MiB
    throw new InvalidOperationException($"/proc/self/status has no {field}");
}

// Minor page faults of this process so far (/proc/self/stat field 10).
static long MinorFaults() => long.Parse(File.ReadAllText("/proc/self/stat").Split(')')[1].Split(' ', StringSplitOptions.RemoveEmptyEntries)[7], CultureInfo.InvariantCulture);

static void ResetPeak() => File.WriteAllText("/proc/self/clear_refs", "5");   // resets VmHWM to the current RSS

static void Trim() => MallocTrim(0);

[DllImport("libc", EntryPoint = "malloc_trim")]
static extern int MallocTrim(nuint pad);

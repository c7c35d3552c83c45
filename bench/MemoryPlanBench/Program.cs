// The memory plan of `fastvideo train --dry-run` against the peak RSS of the same recipe trained by the real CLI,
// measured by /usr/bin/time -v ("Maximum resident set size") in a fresh process per case.
//   prepare DIR   writes the models, datasets and recipes of every case under DIR, each big model in this process
//                 (so that building a random model never pollutes a measured peak)
//   run DIR       per case: the dry-run plan (its `total memory estimate` line and wall time), then the training run
//                 under /usr/bin/time -v; prints a markdown table (plan, peak RSS, plan / RSS - 1)
// Options of run: --cases a,b (default: all), --out FILE (appends the table), --cli PATH (FastVideo.Cli.dll; default:
// the Release build next to this repository's src/FastVideo.Cli).
// Cases:
//   baseline          the quickstart teacher's recipe on a 1-block, D = 8 model, 100 steps: the process baseline
//   quickstart        the quickstart teacher recipe (examples/recipes/quickstart_teacher.yaml), 300 steps
//   quickstart-dmd2   the quickstart DMD2 recipe (student, teacher, critic), 60 steps
//   mid-<c>-<p>       the mid-size Wan of bench/CheckpointBench (D=512, 8 layers, ffn 2048, latent [16,8,16,32],
//                     64 text tokens of 4096), finetune, fp32 masters, compute c (fp32, bf16), checkpointing p (none, full), 5 steps
//   mid-bf16-ops, mid-fp32-full-b2, causal-mid-bf16
//                     out of sample: ops checkpointing; batch 2; the wan_causal family (blocks of 2 frames), 5 steps
//   dmd2-mid          DMD2 with three mid-size roles, bf16 compute, full checkpointing, simulate rollout, 3 steps
//   hunyuan-mid-<p>   a mid-size HunyuanVideo (D=512, 2 dual- and 4 single-stream blocks, mlp ratio 4, latent
//                     [16,8,16,32], 64 text rows of 4096 in FastVideo's packed layout), bf16 compute, checkpointing p
//                     (none, full), 5 steps: out of sample (the family's rough per-block count)
//   lora-1.3b         random weights with Wan2.1-T2V-1.3B-Diffusers' config, bf16 base, LoRA rank 16 on
//                     to_q/to_k/to_v/to_out, full checkpointing, bf16 compute, latent [16,3,32,32], 512 text tokens, 3 steps
// Every run writes one checkpoint at its last step (as a real run does).
// Run: dotnet run -c Release --project bench/MemoryPlanBench -- prepare /tmp/mp; then ... -- run /tmp/mp [--cases ...]
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using FastVideo.Data;
using FastVideo.Models.Dits;
using TorchSharp;
using static TorchSharp.torch;

if (args is ["sdpa", ..]) return Sdpa();
if (args.Length < 2 || args[0] is not ("prepare" or "run"))
{
    Console.Error.WriteLine("usage: MemoryPlanBench prepare DIR | run DIR [--cases a,b] [--out FILE] [--cli FastVideo.Cli.dll] | sdpa");
    return 2;
}
string dir = Path.GetFullPath(args[1]);
string Arg(string name, string def) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? def;
string repo = FindRepo();
string cli = Arg("--cli", Path.Combine(repo, "src", "FastVideo.Cli", "bin", "Release", "net10.0", "FastVideo.Cli.dll"));

var mid = new WanTransformerConfig { NumAttentionHeads = 8, AttentionHeadDim = 64, FfnDim = 2048, NumLayers = 8, InChannels = 16, OutChannels = 16, TextDim = 4096 };
var wan13 = new WanTransformerConfig
{
    PatchSize = [1, 2, 2], NumAttentionHeads = 12, AttentionHeadDim = 128, InChannels = 16, OutChannels = 16,
    TextDim = 4096, FreqDim = 256, FfnDim = 8960, NumLayers = 30, CrossAttnNorm = true, Eps = 1e-6,
};

var hunyuanMid = new HunyuanVideoTransformerConfig { NumAttentionHeads = 8, AttentionHeadDim = 64, NumLayers = 2, NumSingleLayers = 4, RopeAxesDim = [16, 24, 24] };

var cases = new List<(string Name, string Recipe, string[] Set)>();
string Q(string p) => p.Replace('\\', '/');
string Recipe(string name) => File.ReadAllText(Path.Combine(repo, "examples", "recipes", name)).Replace("runs/quickstart", Q(Path.Combine(dir, "quickstart")));
// The process baseline: the quickstart teacher's recipe on a model of next to nothing (1 block, D = 8).
cases.Add(("baseline", Recipe("quickstart_teacher.yaml"), ["training.loop.max_train_steps=100", "training.checkpoint.training_state_checkpointing_steps=100",
    $"roles.student.init_from={Path.Combine(dir, "tiny")}"]));
cases.Add(("quickstart", Recipe("quickstart_teacher.yaml"), ["training.loop.max_train_steps=300", "training.checkpoint.training_state_checkpointing_steps=300"]));
cases.Add(("quickstart-dmd2", Recipe("quickstart_dmd2.yaml"), ["training.loop.max_train_steps=60", "training.checkpoint.training_state_checkpointing_steps=60"]));
string midModel = Q(Path.Combine(dir, "mid", "model"));
string MidRecipe(string family, string compute, string policy, int batch, string role = "") => $$"""
    recipe: {family: {{family}}, method: finetune}
    roles:
      student: {init_from: "{{midModel}}"{{role}}}
    training:
      data: {data_path: "{{Q(Path.Combine(dir, "mid", "data"))}}", train_batch_size: {{batch}}, seed: 0}
      optimizer: {learning_rate: 1.0e-5}
      loop: {max_train_steps: 5}
      checkpoint: {training_state_checkpointing_steps: 5}
      compute_precision: {{compute}}
      {{(policy == "none" ? "" : $"model: {{enable_gradient_checkpointing_type: {policy}}}")}}
    pipeline: {text_len: 64}
    """;
foreach (var compute in new[] { "fp32", "bf16" })
foreach (var policy in new[] { "none", "full" })
    cases.Add(($"mid-{compute}-{policy}", MidRecipe("wan", compute, policy, 1), []));
// Out of sample (the allocator's coefficients were fitted on the rows above): ops checkpointing, batch 2, causal.
cases.Add(("mid-bf16-ops", MidRecipe("wan", "bf16", "ops", 1), []));
cases.Add(("mid-fp32-full-b2", MidRecipe("wan", "fp32", "full", 2), []));
cases.Add(("causal-mid-bf16", MidRecipe("wan_causal", "bf16", "none", 1, ", num_frames_per_block: 2"), []));
cases.Add(("dmd2-mid", $$"""
    recipe: {family: wan, method: dmd2}
    roles:
      student: {init_from: "{{midModel}}"}
      teacher: {init_from: "{{midModel}}", trainable: false}
      critic: {init_from: "{{midModel}}"}
    method:
      rollout_mode: simulate
      dmd_denoising_steps: [1000, 750, 500, 250]
      warp_denoising_step: true
      generator_update_interval: 1
      fake_score_learning_rate: 1.0e-5
      fake_score_betas: [0.0, 0.999]
      fake_score_lr_scheduler: constant
      cfg_uncond: {text: zero}
    training:
      data: {data_path: "{{Q(Path.Combine(dir, "mid", "data"))}}", train_batch_size: 1, seed: 0, num_latent_t: 8, num_height: 128, num_width: 256}
      optimizer: {learning_rate: 1.0e-5}
      loop: {max_train_steps: 3}
      checkpoint: {training_state_checkpointing_steps: 3}
      compute_precision: bf16
      model: {enable_gradient_checkpointing_type: full}
    pipeline: {text_len: 64}
    """, []));
foreach (var policy in new[] { "none", "full" })
    cases.Add(($"hunyuan-mid-{policy}", $$"""
        recipe: {family: hunyuan, method: finetune}
        roles:
          student: {init_from: "{{Q(Path.Combine(dir, "hunyuan-mid", "model"))}}"}
        training:
          data: {data_path: "{{Q(Path.Combine(dir, "hunyuan-mid", "data"))}}", train_batch_size: 1, seed: 0}
          optimizer: {learning_rate: 1.0e-5}
          loop: {max_train_steps: 5}
          checkpoint: {training_state_checkpointing_steps: 5}
          compute_precision: bf16
          {{(policy == "none" ? "" : $"model: {{enable_gradient_checkpointing_type: {policy}}}")}}
        pipeline: {text_len: 64}
        """, []));
cases.Add(("lora-1.3b", $$"""
    recipe: {family: wan, method: finetune}
    roles:
      student:
        init_from: "{{Q(Path.Combine(dir, "wan13", "model"))}}"
        lora: {enable: true, rank: 16, alpha: 16, target_modules: [to_q, to_k, to_v, to_out]}
    training:
      data: {data_path: "{{Q(Path.Combine(dir, "wan13", "data"))}}", train_batch_size: 1, seed: 0}
      optimizer: {learning_rate: 1.0e-4}
      loop: {max_train_steps: 3}
      checkpoint: {training_state_checkpointing_steps: 3}
      dit_precision: bf16
      compute_precision: bf16
      model: {enable_gradient_checkpointing_type: full}
    pipeline: {text_len: 512}
    """, []));

if (args[0] == "prepare")
{
    FastVideo.Native.TorchSharpLoader.EnsureLoaded();
    Directory.CreateDirectory(dir);
    // Quickstart: its data and models as the quickstart writes them (1 teacher and 1 DMD2 step, 1 evaluation seed).
    if (!File.Exists(Path.Combine(dir, "quickstart", "teacher_model", "model_index.json")))
        Run("dotnet", [cli, "quickstart", "--out", Path.Combine(dir, "quickstart"), "--teacher-steps", "1", "--distill-steps", "1", "--eval-seeds", "1", "--overwrite"]);
    if (!Directory.Exists(Path.Combine(dir, "tiny")))
    {
        // The quickstart's pipeline folder (VAE constants, negative prompt) with a 1-block, D = 8 transformer.
        CopyTree(Path.Combine(dir, "quickstart", "teacher_init"), Path.Combine(dir, "tiny"));
        Directory.Delete(Path.Combine(dir, "tiny", "transformer"), true);
        using var m = WanTransformer3DModel.CreateRandom(new WanTransformerConfig
        {
            PatchSize = [1, 4, 4], NumAttentionHeads = 1, AttentionHeadDim = 8, FfnDim = 8, NumLayers = 1, InChannels = 3, OutChannels = 3, TextDim = 32,
        }, 0);
        m.SavePretrained(Path.Combine(dir, "tiny", "transformer"));
    }
    WriteModel(Path.Combine(dir, "mid", "model"), mid, ScalarType.Float32);
    WriteData(Path.Combine(dir, "mid", "data"), [16, 8, 16, 32], 64, rows: 4);
    if (!File.Exists(Path.Combine(dir, "hunyuan-mid", "model", "model_index.json")))
    {
        using (var m = HunyuanVideoTransformer3DModel.CreateRandom(hunyuanMid, 0)) m.SavePretrained(Path.Combine(dir, "hunyuan-mid", "model", "transformer"));
        File.WriteAllText(Path.Combine(dir, "hunyuan-mid", "model", "model_index.json"), "{\"_class_name\": \"HunyuanVideoPipeline\"}");
    }
    WriteData(Path.Combine(dir, "hunyuan-mid", "data"), [16, 8, 16, 32], 64, rows: 4, pooledDim: hunyuanMid.PooledProjectionDim);
    WriteModel(Path.Combine(dir, "wan13", "model"), wan13, ScalarType.BFloat16);
    WriteData(Path.Combine(dir, "wan13", "data"), [16, 3, 32, 32], 512, rows: 4);
    foreach (var (name, recipe, _) in cases) File.WriteAllText(Path.Combine(dir, $"{name}.yaml"), recipe + "\n");
    Console.WriteLine($"prepared {dir}");
    return 0;
}

var wanted = Arg("--cases", string.Join(",", cases.Select(c => c.Name))).Split(',');
var table = new StringBuilder();
table.AppendLine(CultureInfo.InvariantCulture, $"## {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, MemTotal {MemTotalGiB():F1} GiB");
table.AppendLine("| case | plan total | peak RSS | plan vs RSS | dry run | train wall |");
table.AppendLine("|---|---|---|---|---|---|");
foreach (var name in wanted)
{
    var (_, _, set) = cases.Single(c => c.Name == name);
    string recipe = Path.Combine(dir, $"{name}.yaml");
    var extra = set.SelectMany(s => new[] { "--set", s })
        .Concat(["--set", $"training.checkpoint.output_dir={Path.Combine(dir, "out", name)}"]).ToArray();
    var sw = Stopwatch.StartNew();
    var plan = Run("dotnet", [cli, "train", recipe, "--dry-run", .. extra]);
    double dry = sw.Elapsed.TotalSeconds;
    Console.Error.Write(plan);
    var total = Regex.Match(plan, @"total memory estimate: ([0-9.]+) (GiB|MiB)");
    double planGiB = double.Parse(total.Groups[1].Value, CultureInfo.InvariantCulture) / (total.Groups[2].Value == "MiB" ? 1024 : 1);
    sw.Restart();
    var output = Run("/usr/bin/time", ["-v", "dotnet", cli, "train", recipe, "--overwrite", .. extra], mergeStderr: true);
    double wall = sw.Elapsed.TotalSeconds;
    var rss = Regex.Match(output, @"Maximum resident set size \(kbytes\): (\d+)");
    double rssGiB = long.Parse(rss.Groups[1].Value, CultureInfo.InvariantCulture) / 1024.0 / 1024.0;
    Console.Error.WriteLine(string.Join('\n', output.Split('\n').Where(l => l.StartsWith("step ") || l.Contains("error") || l.Contains("Maximum resident") || l.Contains("Exit status"))));
    string row = string.Create(CultureInfo.InvariantCulture,
        $"| {name} | {planGiB:F3} GiB | {rssGiB:F3} GiB | {planGiB / rssGiB - 1:+0.0%;-0.0%} | {dry:F1} s | {wall:F0} s |");
    Console.Error.WriteLine(row);
    table.AppendLine(row);
}
Console.WriteLine(table);
if (Arg("--out", "") is { Length: > 0 } outFile) File.AppendAllText(outFile, table + "\n");
return 0;

// What LibTorch's SDPA keeps for backward on the CPU (RSS after a forward with grad minus before), against the
// heads x N x N score matrix an eager attention would keep, with and without a boolean key mask.
static int Sdpa()
{
    FastVideo.Native.TorchSharpLoader.EnsureLoaded();
    static long Rss() => long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmRSS:")).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
    const long n = 4096, h = 8, d = 64;
    foreach (var (dtype, masked) in new[] { (ScalarType.Float32, false), (ScalarType.Float32, true), (ScalarType.BFloat16, false), (ScalarType.BFloat16, true) })
    {
        using var scope = NewDisposeScope();
        var (q, k, v) = (randn(1, h, n, d).to_type(dtype).requires_grad_(), randn(1, h, n, d).to_type(dtype).requires_grad_(), randn(1, h, n, d).to_type(dtype).requires_grad_());
        var mask = arange(n).lt(n - 100).reshape(1, 1, 1, n);
        long before = Rss();
        var o = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: masked ? mask : null);
        long kept = Rss() - before;
        o.sum().backward();
        int size = dtype == ScalarType.Float32 ? 4 : 2;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{dtype}, key mask {masked}: kept {kept} MiB; output {n * h * d * size >> 20} MiB; an N x N score matrix would be {h * n * n * size >> 20} MiB"));
    }
    return 0;
}

static string Run(string file, string[] arguments, bool mergeStderr = false)
{
    var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
    foreach (var a in arguments) psi.ArgumentList.Add(a);
    using var p = Process.Start(psi)!;
    var err = p.StandardError.ReadToEndAsync();
    string stdout = p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    string stderr = err.GetAwaiter().GetResult();
    if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', arguments)} exited with {p.ExitCode}:\n{stdout}\n{stderr}");
    return mergeStderr ? stdout + stderr : stdout;
}

static void WriteModel(string modelDir, WanTransformerConfig config, ScalarType dtype)
{
    if (File.Exists(Path.Combine(modelDir, "model_index.json"))) return;
    using (var m = WanTransformer3DModel.CreateRandom(config, 0)) m.SavePretrained(Path.Combine(modelDir, "transformer"), dtype);
    File.WriteAllText(Path.Combine(modelDir, "model_index.json"), "{\"_class_name\": \"WanPipeline\"}");
    GC.Collect();
}

// Random latents [C,T,H,W] and text embeddings [textLen, 4096] (float32) in FastVideo's parquet layout; with
// pooledDim, HunyuanVideo's packed text (row 0: a pooled vector of that width, zero-padded).
static void WriteData(string dataDir, long[] latent, int textLen, int rows, int pooledDim = 0)
{
    if (Directory.Exists(dataDir)) return;
    var g = new Random(0);
    float[] Values(long n) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(g.NextDouble() * 2 - 1); return a; }
    float[] Text()
    {
        var t = Values(textLen * 4096L);
        if (pooledDim > 0) Array.Clear(t, pooledDim, 4096 - pooledDim);
        return t;
    }
    var list = Enumerable.Range(0, rows).Select(i => new VideoRow
    {
        Latent = TensorBytes.FromFloats(Values(latent.Aggregate(1L, (a, b) => a * b)), latent),
        Text = TensorBytes.FromFloats(Text(), [textLen, 4096]),
        Id = $"row{i}", Caption = $"random row {i}", NumFrames = latent[1],
    }).ToList();
    ParquetVideoWriter.Write(Path.Combine(dataDir, "data.parquet"), list);
}

static void CopyTree(string from, string to)
{
    foreach (var d in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories)) Directory.CreateDirectory(d.Replace(from, to));
    Directory.CreateDirectory(to);
    foreach (var f in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories)) File.Copy(f, f.Replace(from, to), true);
}

static double MemTotalGiB() =>
    double.Parse(File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:"))["MemTotal:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024 / 1024;

static string FindRepo()
{
    for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        if (File.Exists(Path.Combine(d.FullName, "FastVideo.slnx"))) return d.FullName;
    throw new InvalidOperationException("cannot find the repository (FastVideo.slnx) above " + AppContext.BaseDirectory);
}

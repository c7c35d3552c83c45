// A LoRA finetune of a random-weight transformer with Wan2.1-T2V-1.3B-Diffusers' exact config (30 layers, dim 1536,
// ffn 8960, 12 heads, text_dim 4096): rank 16 on to_q/to_k/to_v/to_out, `full` activation checkpointing, the frozen
// base held in bf16 (dit_precision bf16), bf16 compute, latent [16,3,32,32] (768 video tokens), 512 text tokens,
// batch 1. Prints load time, step times, the process's peak RSS (VmHWM) and the dry-run plan's total for comparison.
// --layers K keeps the first K of the 30 blocks (a per-block cost that fits in memory for a full finetune);
// --full trains every weight instead of LoRA (use --dit-precision fp32: fp32 master weights).
// Run: dotnet run -c Release --project bench/BigLoraBench [-- --steps 3 --dit-precision bf16 --ckpt full --keep DIR
//      --layers 30 --full]
using System.Diagnostics;
using System.Globalization;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Train;
using FastVideo.Train.Methods;
using TorchSharp;
using static TorchSharp.torch;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
string Arg(string name, string def) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? def;
int steps = int.Parse(Arg("--steps", "3"), CultureInfo.InvariantCulture);
int layers = int.Parse(Arg("--layers", "30"), CultureInfo.InvariantCulture);
bool full = args.Contains("--full");
string dit = Arg("--dit-precision", "bf16"), ckpt = Arg("--ckpt", "full"), compute = Arg("--compute", "auto");
const int C = 16, T = 3, H = 32, W = 32, L = 512;

var cfg = new WanTransformerConfig
{
    PatchSize = [1, 2, 2], NumAttentionHeads = 12, AttentionHeadDim = 128, InChannels = 16, OutChannels = 16,
    TextDim = 4096, FreqDim = 256, FfnDim = 8960, NumLayers = layers, CrossAttnNorm = true, Eps = 1e-6,
};
string modelDir = Arg("--keep", Path.Combine(Path.GetTempPath(), $"fv-big-lora-{layers}-{Environment.ProcessId}"));
bool owned = !args.Contains("--keep");
if (!File.Exists(Path.Combine(modelDir, "transformer", "config.json")))
{
    var sw0 = Stopwatch.StartNew();
    using (var m = WanTransformer3DModel.CreateRandom(cfg, 0)) m.SavePretrained(Path.Combine(modelDir, "transformer"), ScalarType.BFloat16);
    File.WriteAllText(Path.Combine(modelDir, "model_index.json"), "{\"_class_name\": \"WanPipeline\"}");
    Console.WriteLine($"wrote the random 1.3B-config transformer (bf16) in {sw0.Elapsed.TotalSeconds:F0} s");
    GC.Collect();
}

var run = new RunConfig
{
    Recipe = new RecipeSection { Family = "wan", Method = "finetune" },
    Method = new FastVideo.Train.Methods.FineTuning.FineTuneOptions(),
    Roles = new Dictionary<string, RoleConfig>
    {
        ["student"] = new RoleConfig
        {
            InitFrom = modelDir, Family = "wan",
            Lora = full ? new LoraOptions() : new LoraOptions { Enable = true, Rank = 16, Alpha = 16, TargetModules = ["to_q", "to_k", "to_v", "to_out"] },
        },
    },
    Training = new TrainingConfig
    {
        Data = new DataConfig { Seed = 0, TrainBatchSize = 1, NumLatentT = T, NumHeight = H * 8, NumWidth = W * 8 },
        Optimizer = new OptimizerConfig { LearningRate = 1e-4 },
        Loop = new LoopConfig { MaxTrainSteps = 100 },
        DitPrecision = dit, ComputePrecision = compute,
        Model = new ModelTrainingConfig { EnableGradientCheckpointingType = ckpt == "none" ? null : ckpt },
    },
};
var plan = TrainingPlan.BuildFromConfig(run);
Console.Write(TrainingPlan.Format(plan));

long baseline = Status("VmRSS");
var sw = Stopwatch.StartNew();
using var method = TrainingBuilder.Build(run);
long trainable = method.Student.Transformer.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
long total = method.Student.Transformer.parameters().Sum(p => p.numel());
Console.WriteLine($"built (weights loaded) in {sw.Elapsed.TotalSeconds:F1} s; RSS {Status("VmRSS") / 1024.0 / 1024:F2} GiB; " +
                  $"{layers} layers, {total:N0} parameters, {trainable:N0} trainable ({(full ? "full finetune" : "LoRA")}), " +
                  $"{trainable * 4 / 1e6:F1} MB of float32 gradients per step");
method.OnTrainStart();
using var g = new Generator(1, device("cpu"));
for (int i = 1; i <= steps; i++)
{
    using var scope = NewDisposeScope();
    using var batch = new RawBatch
    {
        VaeLatent = randn([1, C, T, H, W], generator: g),
        Conditioning = Conditioning.FromText(randn([1, L, cfg.TextDim], generator: g), ones(1, L)),
    };
    sw.Restart();
    var r = method.SingleTrainStep(batch, i);
    string forward = Phase();
    method.Backward(r, 1);
    string backward = Phase();
    method.OptimizersSchedulersStep(i);
    method.OptimizersZeroGrad(i);
    float loss = r.Losses["total_loss"].item<float>();
    Console.WriteLine($"step {i}: loss {loss:F4}, {sw.Elapsed.TotalSeconds:F1} s, RSS {Status("VmRSS") / 1024.0 / 1024:F2} GiB, peak {Status("VmHWM") / 1024.0 / 1024:F2} GiB; after forward {forward}; after backward {backward}");
}
Console.WriteLine($"RESULT peak_rss_gib {Status("VmHWM") / 1024.0 / 1024:F2} baseline_gib {baseline / 1024.0 / 1024:F2}");
if (owned) Directory.Delete(modelDir, true);

// RSS and peak so far, then RSS after handing freed heap memory back (malloc_trim): what is live.
static string Phase()
{
    string s = $"RSS {Status("VmRSS") / 1024.0 / 1024:F2} GiB (peak {Status("VmHWM") / 1024.0 / 1024:F2}";
    MallocTrim(0);
    return s + $", trimmed {Status("VmRSS") / 1024.0 / 1024:F2})";
}

[System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
static extern int MallocTrim(nuint pad);

static long Status(string key)
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith(key + ":")) return long.Parse(line[(key.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
    return 0;
}

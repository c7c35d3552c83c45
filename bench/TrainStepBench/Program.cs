// Training-step throughput of the Wan DiT through the real methods (FineTuneMethod, DMD2Method), as a fraction of
// this machine's plain fp32 1024^3 matmul rate measured in the same run. FLOPs are counted analytically per
// transformer forward (2 per multiply-add); a backward costs 2 forwards. DMD2 counts the forwards it actually ran.
// Run: dotnet run -c Release --project bench/TrainStepBench [-- --steps N --out FILE]
using System.Diagnostics;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Train.Methods;
using TorchSharp;
using static TorchSharp.torch;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
int steps = args.SkipWhile(a => a != "--steps").Skip(1).Select(int.Parse).FirstOrDefault(6);
string? outFile = args.SkipWhile(a => a != "--out").Skip(1).FirstOrDefault();

double MatmulRate()
{
    using var scope = NewDisposeScope();
    var a = randn(1024, 1024); var b = randn(1024, 1024);
    for (int i = 0; i < 5; i++) a.matmul(b).Dispose();
    int n = 40; var sw = Stopwatch.StartNew();
    for (int i = 0; i < n; i++) a.matmul(b).Dispose();
    return 2.0 * 1024 * 1024 * 1024 * n / sw.Elapsed.TotalSeconds;
}

// Mid-sized Wan: D = 8 x 64, ffn 2048, 8 layers, latent [16,8,16,32] (1024 tokens), text 64 x 4096, batch 1.
var cfg = new WanTransformerConfig { NumAttentionHeads = 8, AttentionHeadDim = 64, FfnDim = 2048, NumLayers = 8, InChannels = 16, OutChannels = 16, TextDim = 4096 };
const int C = 16, T = 8, H = 16, W = 32, L = 64;
long S = T * (H / 2) * (W / 2), D = cfg.InnerDim, F = cfg.FfnDim;
double blockFwd = 8.0 * S * D * D + 4.0 * S * S * D            // self-attention: q,k,v,o projections; scores and AV
                + 4.0 * S * D * D + 4.0 * L * D * D + 4.0 * S * L * D  // cross-attention
                + 4.0 * S * D * F;                                  // feed-forward
double embedFwd = 2.0 * S * (C * 4) * D + 2.0 * S * D * (C * 4)   // patch embedding, proj_out
                + 2.0 * L * (cfg.TextDim * D + D * D)               // text embedder
                + 2.0 * (256 * D + D * D + D * 6 * D);              // time embedder + projection
double forwardFlops = cfg.NumLayers * blockFwd + embedFwd;

var modelDir = Path.Combine(Path.GetTempPath(), $"fv-bench-model-{Environment.ProcessId}");
using (var m = WanTransformer3DModel.CreateRandom(cfg, 0)) m.SavePretrained(Path.Combine(modelDir, "transformer"));
File.WriteAllText(Path.Combine(modelDir, "model_index.json"), "{\"_class_name\": \"WanPipeline\"}");

RunConfig Config(string method, params string[] roles)
{
    var roleMap = roles.ToDictionary(r => r, r => new RoleConfig { InitFrom = modelDir, Trainable = r != "teacher", Family = "wan" });
    return new RunConfig
    {
        Recipe = new RecipeSection { Family = "wan", Method = method },
        Roles = roleMap,
        Method = method == "dmd2"
            ? RecipeLoader.BindOptions<FastVideo.Train.Methods.DistributionMatching.DMD2Options>(new Dictionary<string, object?>
            {
                ["rollout_mode"] = "simulate", ["dmd_denoising_steps"] = new List<object?> { 1000L, 750L, 500L, 250L },
                ["fake_score_learning_rate"] = 1e-5, ["fake_score_betas"] = new List<object?> { 0.0, 0.999 }, ["fake_score_lr_scheduler"] = "constant",
            }, "method")
            : new FastVideo.Train.Methods.FineTuning.FineTuneOptions(),
        Training = new TrainingConfig
        {
            Data = new DataConfig { Seed = 0, TrainBatchSize = 1, NumLatentT = T, NumHeight = H * 8, NumWidth = W * 8 },
            Optimizer = new OptimizerConfig { LearningRate = 1e-5 },
            Loop = new LoopConfig { MaxTrainSteps = 100 },
        },
    };
}

RawBatch Batch(Generator g) => new()
{
    VaeLatent = randn([1, C, T, H, W], generator: g), Conditioning = Conditioning.FromText(randn([1, L, cfg.TextDim], generator: g), ones(1, L)),
};

(double Median, double FlopsPerStep) Measure(TrainingMethod method)
{
    method.OnTrainStart();
    using var g = new Generator(1, device("cpu"));
    var times = new List<double>();
    var flops = new List<double>();
    for (int i = 1; i <= steps + 2; i++)
    {
        using var scope = NewDisposeScope();
        using var batch = Batch(g);
        long before = WanTransformer3DModel.ForwardCount;
        var sw = Stopwatch.StartNew();
        var r = method.SingleTrainStep(batch, i);
        method.Backward(r, 1);
        method.OptimizersSchedulersStep(i);
        method.OptimizersZeroGrad(i);
        r.Losses["total_loss"].item<float>();
        double sec = sw.Elapsed.TotalSeconds;
        long forwards = WanTransformer3DModel.ForwardCount - before;
        int backwards = method is FastVideo.Train.Methods.DistributionMatching.DMD2Method d ? (d.UpdatesStudent(i) ? 2 : 1) : 1;
        if (i > 2) { times.Add(sec); flops.Add((forwards + 2.0 * backwards) * forwardFlops); } // 2 warm-up steps
    }
    // Rate = total FLOPs / total time (DMD2 steps differ in how many forwards the rollout runs).
    return (times.Order().ElementAt(times.Count / 2), flops.Sum() / times.Sum());
}

double matmul = MatmulRate();
var (ftMedian, ftRate) = Measure(TrainingBuilder.Build(Config("finetune", "student")));
var (dmdMedian, dmdRate) = Measure(TrainingBuilder.Build(Config("dmd2", "student", "teacher", "critic")));
double matmulAfter = MatmulRate();
Directory.Delete(modelDir, true);

var report = $"""
    ## {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, torch threads {torch.get_num_threads()}, Release
    - fp32 1024^3 matmul: {matmul / 1e9:F1} GFLOP/s before, {matmulAfter / 1e9:F1} GFLOP/s after the step measurements
    - model: D={D} ({cfg.NumAttentionHeads}x{cfg.AttentionHeadDim}), ffn {F}, {cfg.NumLayers} layers, {S} video tokens, {L} text tokens (4096 wide), batch 1; one forward = {forwardFlops / 1e9:F1} GFLOP
    - finetune step (FineTuneMethod: forward + backward + AdamW): median {ftMedian:F3} s, {ftRate / 1e9:F1} GFLOP/s = {100 * ftRate / matmul:F0}% of matmul
    - DMD2 step (DMD2Method, simulate, 4 denoising steps, student updated every step): median {dmdMedian:F3} s, {dmdRate / 1e9:F1} GFLOP/s = {100 * dmdRate / matmul:F0}% of matmul
    """;
Console.WriteLine(report);
if (outFile is not null) File.AppendAllText(outFile, report + "\n");

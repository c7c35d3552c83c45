// Training-step throughput of the Wan DiT as a fraction of this machine's plain fp32 matmul rate, both measured in
// the same run. FLOPs are counted analytically (2 per multiply-add; backward = 2x forward).
// Run: dotnet run -c Release --project bench/TrainStepBench [-- --steps N --out FILE]
using System.Diagnostics;
using FastVideo.Models.Dits;
using TorchSharp;
using static TorchSharp.torch;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
int steps = args.SkipWhile(a => a != "--steps").Skip(1).Select(int.Parse).FirstOrDefault(5);
string? outFile = args.SkipWhile(a => a != "--out").Skip(1).FirstOrDefault();
torch.manual_seed(0);

// 1. Reference: 1024^3 fp32 matmul.
double matmulRate;
{
    var a = randn(1024, 1024); var b = randn(1024, 1024);
    for (int i = 0; i < 5; i++) a.matmul(b).Dispose();
    int n = 40; var sw = Stopwatch.StartNew();
    for (int i = 0; i < n; i++) a.matmul(b).Dispose();
    matmulRate = 2.0 * 1024 * 1024 * 1024 * n / sw.Elapsed.TotalSeconds;
}

// 2. Finetune step on a mid-sized Wan: D = 8 x 64, ffn 2048, 8 layers, latent [16,8,16,32] (1024 tokens), text 64 x 4096.
var cfg = new WanTransformerConfig { NumAttentionHeads = 8, AttentionHeadDim = 64, FfnDim = 2048, NumLayers = 8, InChannels = 16, OutChannels = 16, TextDim = 4096 };
const int C = 16, T = 8, H = 16, W = 32, L = 64;
long S = T * (H / 2) * (W / 2), D = cfg.InnerDim, F = cfg.FfnDim;
double blockFwd = 8.0 * S * D * D + 4.0 * S * S * D            // self-attention: q,k,v,o projections; scores and AV
                + 4.0 * S * D * D + 4.0 * L * D * D + 4.0 * S * L * D  // cross-attention
                + 4.0 * S * D * F;                                  // feed-forward
double embedFwd = 2.0 * S * (C * 4) * D + 2.0 * S * D * (C * 4)   // patch embedding, proj_out
                + 2.0 * L * (cfg.TextDim * D + D * D)               // text embedder
                + 2.0 * (256 * D + D * D + D * 6 * D);              // time embedder + projection
double stepFlops = 3.0 * (cfg.NumLayers * blockFwd + embedFwd);

var model = new WanTransformer3DModel(cfg);
model.train();
var opt = optim.AdamW(model.parameters(), lr: 1e-4);
var x0 = randn([1, C, T, H, W]); var eps = randn([1, C, T, H, W]); var text = randn(1, L, cfg.TextDim);
double Step()
{
    using var scope = NewDisposeScope();
    var sw = Stopwatch.StartNew();
    var sigma = 0.6f;
    var xt = (1 - sigma) * x0 + sigma * eps;
    var v = model.Forward(xt, full([1], 600f), text);
    var loss = (v - (eps - x0)).pow(2).mean();
    opt.zero_grad();
    loss.backward();
    opt.step();
    loss.item<float>();
    return sw.Elapsed.TotalSeconds;
}
Step(); Step(); // warm-up
var times = Enumerable.Range(0, steps).Select(_ => Step()).OrderBy(t => t).ToArray();
double median = times[times.Length / 2];
double rate = stepFlops / median;

var report = $"""
    ## Finetune step, mid-sized Wan ({DateTime.UtcNow:yyyy-MM-dd}, {Environment.ProcessorCount} cores, torch threads {torch.get_num_threads()})
    - fp32 1024^3 matmul: {matmulRate / 1e9:F1} GFLOP/s
    - model: D={D} ({cfg.NumAttentionHeads}x{cfg.AttentionHeadDim}), ffn {F}, {cfg.NumLayers} layers, {S} video tokens, {L} text tokens, batch 1
    - step FLOPs (analytic, fwd+bwd): {stepFlops / 1e9:F1} GFLOP
    - finetune step (forward+backward+AdamW): median {median:F3} s over {steps} steps = {rate / 1e9:F1} GFLOP/s = {100 * rate / matmulRate:F0}% of matmul
    """;
Console.WriteLine(report);
if (outFile is not null) File.AppendAllText(outFile, report + "\n");

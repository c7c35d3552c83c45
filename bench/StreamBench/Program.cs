// Streaming generation (generate --causal's path: CausalStream + StreamingSampling.Generate on a wan_causal model):
// per-block latency from block 1 to block 8 with the KV cache, and the cached run against recomputation without cache
// (--no-kv-cache), with global attention and with a local window; then latent frames per second of the
// quickstart-sized model. Random weights (speed does not depend on them), fp32 compute, batch 1, one process.
// Run (quiet machine), one part per run to keep each under a few minutes:
//   quiet dotnet run -c Release --project bench/StreamBench -- --part global|local|quickstart [--repeats 2 --blocks 8 --window 6 --layers 4]
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Sampling;
using FastVideo.Train.Models;
using static TorchSharp.torch;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
string Arg(string name, string def) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? def;
int Int(string name, int def) => int.Parse(Arg(name, def.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
int repeats = Int("--repeats", 2), nBlocks = Int("--blocks", 8), window = Int("--window", 6), k = 3;
var part = Arg("--part", "global");
double[] steps = [1000, 750, 500, 250];
string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
var root = Path.Combine(Path.GetTempPath(), $"streambench-{Environment.ProcessId}");

Console.WriteLine(F($"StreamBench {DateTime.Now:yyyy-MM-dd HH:mm}, {Environment.ProcessorCount} cores, torch threads {get_num_threads()}, fp32 compute, batch 1"));
Console.WriteLine(F($"{nBlocks} blocks of {k} latent frames, steps [{string.Join(", ", steps)}], guidance 1, {repeats} repeats (medians)"));

// The bench model: the mid-size bench's width (D=512, 8 heads, ffn 2048) with 4 layers; latents 16 x 16 x 32 with
// patch 2: 128 tokens per frame, 384 per block, 3072 for the clip; 64 text tokens 4096 wide, padded to text_len 512.
var mid = new JsonObject
{
    ["num_attention_heads"] = 8, ["attention_head_dim"] = 64, ["ffn_dim"] = 2048, ["num_layers"] = Int("--layers", 4),
    ["in_channels"] = 16, ["out_channels"] = 16, ["text_dim"] = 4096, ["patch_size"] = new JsonArray(1, 2, 2),
};
foreach (var local in part == "global" ? [-1] : part == "local" ? new[] { window } : [])
{
    var (cached, recomputed, cacheFrames) = Compare(mid, [16, 16, 32], 64, 512, local);
    double Sum(double[] xs) => xs.Sum();
    Console.WriteLine();
    Console.WriteLine(local == -1 ? "global attention (local_attn_size -1):" : F($"local window of {local} frames (local_attn_size {local}):"));
    Console.WriteLine("  block   cached s   no-kv-cache s   ratio");
    for (int b = 0; b < nBlocks; b++)
        Console.WriteLine(F($"  {b + 1,5}   {cached[b],8:F3}   {recomputed[b],13:F3}   {recomputed[b] / cached[b],5:F2}x"));
    Console.WriteLine(F($"  clip    {Sum(cached),8:F3}   {Sum(recomputed),13:F3}   {Sum(recomputed) / Sum(cached),5:F2}x"));
    Console.WriteLine(F($"  cached latency block {nBlocks} / block 1: x{cached[^1] / cached[0]:F2} (max/min over blocks 1-{nBlocks}: x{cached.Max() / cached.Min():F2}); cache {cacheFrames} frames per layer at the end"));
}

// The quickstart teacher's config (src/FastVideo/Train/Quickstart): D=128, 4 layers, 3 x 16 x 16 latents, patch 4:
// 16 tokens per frame, text 16 tokens 32 wide, text_len 16 (its pipeline.text_len). Identity VAE: 1 video frame per latent frame.
if (part == "quickstart") Console.WriteLine("quickstart-sized model (cached):");
foreach (var local in part == "quickstart" ? new[] { -1, window } : [])
{
    Run(FastVideo.Train.Quickstart.QuickstartRunner.Model, [3, 16, 16], 16, 16, local, useKvCache: true, out _, blocks: 2);   // warm-up
    // Seconds per block and per clip: medians of 15 clips (a block takes milliseconds here: single ones are noisy).
    var clips = Enumerable.Range(0, 15).Select(i => Run(FastVideo.Train.Quickstart.QuickstartRunner.Model, [3, 16, 16], 16, 16, local, useKvCache: true, out _)).ToList();
    double Med(IEnumerable<double> xs) { var a = xs.Order().ToArray(); return a[a.Length / 2]; }
    double total = Med(clips.Select(c => c.Sum()));
    var label = local == -1 ? "global" : $"local {local}";
    if (args.Contains("--verbose")) foreach (var c in clips) Console.WriteLine("    " + string.Join(" ", c.Select(x => x.ToString("F3", CultureInfo.InvariantCulture))));
    Console.WriteLine(F($"  {label,-9} {nBlocks * k} latent frames in {total:F3} s: {nBlocks * k / total:F1} frames/s (block 1 {k / Med(clips.Select(c => c[0])):F1}, block {nBlocks} {k / Med(clips.Select(c => c[^1])):F1} frames/s)"));
}
if (Directory.Exists(root)) Directory.Delete(root, true);

// Medians per block of the cached and the recomputed runs, alternated, after a 2-block warm-up of each.
(double[] Cached, double[] Recomputed, long CacheFrames) Compare(JsonObject config, long[] frame, int textTokens, int textLen, int local)
{
    var runs = new Dictionary<bool, List<double[]>> { [true] = [], [false] = [] };
    long cacheFrames = 0;
    foreach (var useKv in new[] { true, false }) Run(config, frame, textTokens, textLen, local, useKv, out _, blocks: 2);
    for (int r = 0; r < repeats; r++)
        foreach (var useKv in new[] { true, false })
        {
            var t = Run(config, frame, textTokens, textLen, local, useKv, out var c);
            if (useKv) cacheFrames = c;
            runs[useKv].Add(t);
        }
    double[] Median(List<double[]> xs) => Enumerable.Range(0, nBlocks).Select(b => xs.Select(x => x[b]).Order().ElementAt(xs.Count / 2)).ToArray();
    return (Median(runs[true]), Median(runs[false]), cacheFrames);
}

// One streamed clip: seconds per block; the cache size (frames per layer) at the end.
double[] Run(JsonObject config, long[] frame, int textTokens, int textLen, int local, bool useKvCache, out long cacheFrames, int? blocks = null)
{
    int nb = blocks ?? nBlocks;
    using var scope = NewDisposeScope();
    var dir = Folder(config, (int)frame[0]);
    using var model = ModelFamilyRegistry.Default.CreateForInference(new InferenceModel("wan_causal", dir, ComputePrecision: "fp32",
        Pipeline: new PipelineConfig { TextLen = textLen, DitConfig = new DitConfigOverrides { NumFramesPerBlock = k, LocalAttnSize = local } }));
    using var g = new Generator(1, device("cpu"));
    var text = randn([1, textTokens, (int)config["text_dim"]!], generator: g);
    using var batch = model.PrepareInference(Conditioning.FromText(text, ones(1, textTokens)), [frame[0], nb * k, frame[1], frame[2]]);
    var noise = randn([1, nb * k, frame[0], frame[1], frame[2]], generator: g);
    var times = new double[nb];
    long cache = 0;
    using (no_grad())
    using (var stream = new CausalStream(model, batch, new CausalStreamOptions { UseKvCache = useKvCache }))
    {
        StreamingSampling.Generate(stream, noise, new StreamingSchedule(steps), FewStepSampler.StandardNoise(g),
            (block, x0, seconds) => { times[block.Index] = seconds; cache = stream.CacheFrames; });
    }
    cacheFrames = cache;
    return times;
}

// A model folder with random weights (seed 0) and an identity VAE config of the given latent channels.
string Folder(JsonObject config, int channels)
{
    var dir = Path.Combine(root, $"{config.ToJsonString().GetHashCode():x8}");
    if (Directory.Exists(dir)) return dir;
    ModelFamilyRegistry.Default.Get("wan").WriteRandomTransformer!(config, 0, Path.Combine(dir, "transformer"));
    Directory.CreateDirectory(Path.Combine(dir, "vae"));
    File.WriteAllText(Path.Combine(dir, "vae", "config.json"), new JsonObject
    {
        ["_class_name"] = FastVideo.Models.Vae.VaeConfig.IdentityClassName, ["latent_channels"] = channels,
        ["scaling_factor"] = 1.0, ["spatial_compression_ratio"] = 1, ["temporal_compression_ratio"] = 1,
    }.ToJsonString());
    return dir;
}

// Probe: where the mid-size model's training step spends its time with bf16 against fp32 compute. One process,
// fp32 and bf16 steps alternated on the same model (forward + backward + AdamW), medians per dtype.
// Run: dotnet run -c Release --project bench/Bf16Probe [-- --steps N]
using System.Diagnostics;
using System.Globalization;
using FastVideo.Models.Dits;
using TorchSharp;
using static TorchSharp.torch;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
string Arg(string name, string def) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? def;
int steps = int.Parse(Arg("--steps", "4"), CultureInfo.InvariantCulture);
var cfg = new WanTransformerConfig { NumAttentionHeads = 8, AttentionHeadDim = 64, FfnDim = 2048, NumLayers = 8, InChannels = 16, OutChannels = 16, TextDim = 4096 };
using var model = WanTransformer3DModel.CreateRandom(cfg, 0);
var opt = optim.AdamW(model.parameters(), 1e-5);
using var g = new Generator(1, device("cpu"));
var lat = randn([1, 16, 8, 16, 32], generator: g);
var text = randn([1, 64, 4096], generator: g);
var target = randn([1, 16, 8, 16, 32], generator: g);
var t = tensor(new float[] { 500f });
var times = new Dictionary<string, List<(double F, double B, double O)>>();
foreach (var i in Enumerable.Range(0, 2 * (steps + 1)))
{
    var dt = i % 2 == 0 ? ScalarType.Float32 : ScalarType.BFloat16;
    model.ComputeDtype = dt;
    using var scope = NewDisposeScope();
    var sw = Stopwatch.StartNew();
    var y = model.Forward(lat, t, text);
    var loss = nn.functional.mse_loss(y, target);
    double f = sw.Elapsed.TotalSeconds; sw.Restart();
    loss.backward();
    double b = sw.Elapsed.TotalSeconds; sw.Restart();
    opt.step(); opt.zero_grad();
    double o = sw.Elapsed.TotalSeconds;
    if (i >= 2) (times.TryGetValue(dt.ToString(), out var l) ? l : times[dt.ToString()] = []).Add((f, b, o));
}
double Med(IEnumerable<double> xs) { var a = xs.Order().ToArray(); return a[a.Length / 2]; }
foreach (var (k, v) in times)
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{k,-9} forward {Med(v.Select(x => x.F)):F3} s  backward {Med(v.Select(x => x.B)):F3} s  adamw {Med(v.Select(x => x.O)):F3} s  total {Med(v.Select(x => x.F + x.B + x.O)):F3} s"));
var r = Med(times["Float32"].Select(x => x.F + x.B + x.O)) / Med(times["BFloat16"].Select(x => x.F + x.B + x.O));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"bf16 speed-up {r:F2}x"));

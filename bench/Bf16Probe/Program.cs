// Probe: where the mid-size model's training step spends its time with bf16 against fp32 compute. One process,
// fp32 and bf16 steps alternated on the same model (forward + backward + AdamW), medians per dtype.
// Run: dotnet run -c Release --project bench/Bf16Probe [-- --steps N --preset mid|1.3b --layers L | --ops | --attn | --block | --attn-error | --attn-speed [--rounds N]]
using System.Diagnostics;
using System.Globalization;
using FastVideo.Models.Dits;
using TorchSharp;
using static TorchSharp.torch;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
string Arg(string name, string def) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? def;
int steps = int.Parse(Arg("--steps", "4"), CultureInfo.InvariantCulture);
if (args.Contains("--ops")) { Ops(); return; }
if (args.Contains("--attn")) { Attn(); return; }
if (args.Contains("--block")) { Block(); return; }
if (args.Contains("--attn-error")) { AttnError(); return; }
if (args.Contains("--block-values")) FastVideo.Models.Layers.Bf16Attention.BlockValues = long.Parse(Arg("--block-values", "1048576"), CultureInfo.InvariantCulture);
if (args.Contains("--attn-speed")) { AttnSpeed(int.Parse(Arg("--rounds", "3"), CultureInfo.InvariantCulture), Arg("--shape", "1,8,1024,1024,64").Split(',').Select(long.Parse).ToArray()); return; }
// --preset mid: the mid-size bench model (D=512, 8 layers, 1024 video + 64 text tokens); --preset 1.3b: blocks of
// Wan2.1-T2V-1.3B's config (D=1536, 12 heads, ffn 8960; --layers of its 30) at latent [16,3,32,32] with 512 text tokens.
bool big = Arg("--preset", "mid") == "1.3b";
var cfg = big
    ? new WanTransformerConfig { NumAttentionHeads = 12, AttentionHeadDim = 128, FfnDim = 8960, NumLayers = int.Parse(Arg("--layers", "4"), CultureInfo.InvariantCulture), InChannels = 16, OutChannels = 16, TextDim = 4096 }
    : new WanTransformerConfig { NumAttentionHeads = 8, AttentionHeadDim = 64, FfnDim = 2048, NumLayers = 8, InChannels = 16, OutChannels = 16, TextDim = 4096 };
long[] latShape = big ? [1, 16, 3, 32, 32] : [1, 16, 8, 16, 32];
using var model = WanTransformer3DModel.CreateRandom(cfg, 0);
var opt = optim.AdamW(model.parameters(), 1e-5);
using var g = new Generator(1, device("cpu"));
var lat = randn(latShape, generator: g);
var text = randn([1, big ? 512 : 64, 4096], generator: g);
var target = randn(latShape, generator: g);
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

// Per-operation times of one block's pieces at the mid-size shapes (1024 tokens, D=512, 8 heads, ffn 2048), fp32
// against bf16, forward and forward+backward, so the step's ratio can be traced to its parts.
static void Ops()
{
    double Time(Action a) => MeanMs(a, warmups: 1, reps: 20);
    foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        var q = randn(1, 8, 1024, 64).to_type(dt).requires_grad_(); var k = randn(1, 8, 1024, 64).to_type(dt).requires_grad_(); var v = randn(1, 8, 1024, 64).to_type(dt).requires_grad_();
        var x = randn(1024, 512).to_type(dt).requires_grad_();
        var w = randn(2048, 512).requires_grad_();
        var x32 = randn(1024, 512); var gate = randn(1, 512);
        double sdpaF = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); nn.functional.scaled_dot_product_attention(q, k, v); });
        double sdpaFB = Time(() => { using var s = NewDisposeScope(); nn.functional.scaled_dot_product_attention(q, k, v).sum().backward(); });
        double mathF = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); nn.functional.softmax(q.matmul(k.transpose(-2, -1)).mul_(0.125), -1).matmul(v); });
        double mathFB = Time(() => { using var s = NewDisposeScope(); nn.functional.softmax(q.matmul(k.transpose(-2, -1)) * 0.125, -1).matmul(v).sum().backward(); });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{dt,-9} math attention fwd {mathF:F2} ms, fwd+bwd {mathFB:F2} ms"));
        double linF = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); nn.functional.linear(x, w.to_type(dt)); });
        double linFB = Time(() => { using var s = NewDisposeScope(); nn.functional.linear(x, w.to_type(dt)).sum().backward(); w.grad!.zero_(); });
        double gelu = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); nn.functional.gelu(randn(1024, 2048).to_type(dt), TorchSharp.Modules.GELU.Approximate.tanh); });
        double mod = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); var y = (nn.functional.layer_norm(x.to_type(ScalarType.Float32), [512]) * (gate + 1) + gate).to_type(dt); (x.to_type(ScalarType.Float32) + y * gate).to_type(dt); });
        var xb = x.detach();
        double cast = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); xb.to_type(ScalarType.Float32).to_type(dt); });
        double mixed = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); var _ = x32 + xb * gate; });
        double castFirst = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); var _ = x32 + xb.to_type(ScalarType.Float32) * gate; });
        var x32c = xb.to_type(ScalarType.Float32);
        double ln = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); nn.functional.layer_norm(x32c, [512]); });
        double ln2 = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); nn.functional.layer_norm(xb.to_type(ScalarType.Float32), [512]); });
        var lnOut = nn.functional.layer_norm(x32c, [512]).detach();
        double ss = Time(() => { using var s = NewDisposeScope(); using var ng = no_grad(); (lnOut * (gate + 1) + gate).to_type(dt); });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{dt,-9} layer_norm(fp32 copy) {ln:F2} ms, layer_norm(cast) {ln2:F2} ms, scale-shift+cast {ss:F2} ms"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{dt,-9} 1024x512: round-trip cast {cast:F2} ms, x32 + x*gate32 mixed {mixed:F2} ms, cast first {castFirst:F2} ms"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{dt,-9} sdpa fwd {sdpaF:F2} ms, fwd+bwd {sdpaFB:F2} ms | linear 512->2048 fwd {linF:F2} ms, fwd+bwd {linFB:F2} ms | gelu(randn) 1024x2048 {gelu:F2} ms | modulation chain {mod:F2} ms"));
    }
}

// The pieces of attention at the mid-size shape [1,8,1024,64], per dtype: SDPA against a materialised form, stage by stage.
static void Attn()
{
    double Time(Action a) => MeanMs(a, warmups: 2, reps: 20);
    foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        using var ng = no_grad();
        var q = randn(1, 8, 1024, 64).to_type(dt); var k = randn(1, 8, 1024, 64).to_type(dt); var v = randn(1, 8, 1024, 64).to_type(dt);
        var kt = k.transpose(-2, -1).contiguous();
        var scores = q.matmul(kt);
        var p = nn.functional.softmax(scores, -1);
        double sdpa = Time(() => { using var s = NewDisposeScope(); nn.functional.scaled_dot_product_attention(q, k, v); });
        double qk = Time(() => { using var s = NewDisposeScope(); q.matmul(k.transpose(-2, -1)); });
        double qkc = Time(() => { using var s = NewDisposeScope(); q.matmul(kt); });
        double sm = Time(() => { using var s = NewDisposeScope(); nn.functional.softmax(scores, -1); });
        double sm32 = Time(() => { using var s = NewDisposeScope(); nn.functional.softmax(scores.to_type(ScalarType.Float32), -1).to_type(dt); });
        double pv = Time(() => { using var s = NewDisposeScope(); p.matmul(v); });
        double exp = Time(() => { using var s = NewDisposeScope(); scores.exp(); });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{dt,-9} sdpa {sdpa:F2} ms | q@kT {qk:F2} (k contiguous {qkc:F2}) | softmax {sm:F2} (via fp32 {sm32:F2}) | exp {exp:F2} | p@v {pv:F2} ms"));
    }
}

// One mid-size block's forward + backward against the pieces around its matmuls and attention, per compute dtype
// (fp32 master weights), to see what the non-matmul work costs.
static void Block()
{
    double Time(Action a) => MeanMs(a, warmups: 2, reps: 10);
    var cfg = new WanTransformerConfig { NumAttentionHeads = 8, AttentionHeadDim = 64, FfnDim = 2048, NumLayers = 1, InChannels = 16, OutChannels = 16, TextDim = 4096 };
    using var block = new WanTransformerBlock(cfg);
    var rope = FastVideo.Models.Layers.RotaryPosEmbed3D.Tables(64, 8, 8, 16);
    var norm = new FastVideo.Models.Layers.RMSNorm(512);
    foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        var x = randn(1, 1024, 512).to_type(dt).requires_grad_();
        var ctx = randn(1, 64, 512).to_type(dt);
        var tproj = randn(1, 1, 6, 512).to_type(dt);
        var h = randn(1, 1024, 8, 64).to_type(dt).requires_grad_();
        var f = randn(1024, 2048).to_type(dt).requires_grad_();
        var gate = randn(1, 1, 1, 512);
        double blk = Time(() => { using var s = NewDisposeScope(); block.Forward(x, ctx, tproj, rope).sum().backward(); });
        double rms = Time(() => { using var s = NewDisposeScope(); norm.forward(x).sum().backward(); });
        double rot = Time(() => { using var s = NewDisposeScope(); FastVideo.Models.Layers.RotaryPosEmbed3D.Apply(h, rope.Cos, rope.Sin).sum().backward(); });
        double ln = Time(() => { using var s = NewDisposeScope(); FrameModulation.ScaleShift(FastVideo.Models.Layers.Fp32LayerNorm.Apply(x, 1e-6), gate, gate).to_type(dt).sum().backward(); });
        double add = Time(() => { using var s = NewDisposeScope(); FrameModulation.AddGated(x.to_type(ScalarType.Float32), x, gate).to_type(dt).sum().backward(); });
        double gelu = Time(() => { using var s = NewDisposeScope(); nn.functional.gelu(f, TorchSharp.Modules.GELU.Approximate.tanh).sum().backward(); });
        var freqs = polar(ones_like(rope.Cos), rope.Sin.atan2(rope.Cos)).reshape(1, 1024, 1, 32);   // complex [1,S,1,d/2]
        double rotC = Time(() => { using var s = NewDisposeScope();
            var c = view_as_complex(h.to_type(ScalarType.Float32).reshape(1, 1024, 8, 32, 2));
            view_as_real(c * freqs).reshape(1, 1024, 8, 64).to_type(dt).sum().backward(); });
        var cosI = rope.Cos.repeat_interleave(2, 1).reshape(1, 1024, 1, 64); var sinI = rope.Sin.repeat_interleave(2, 1).reshape(1, 1024, 1, 64);
        double rotH = Time(() => { using var s = NewDisposeScope();
            var x32 = h.to_type(ScalarType.Float32); var pr = x32.reshape(1, 1024, 8, 32, 2);
            var sw = stack([pr.select(-1, 1).neg(), pr.select(-1, 0)], -1).reshape(1, 1024, 8, 64);
            (x32 * cosI + sw * sinI).to_type(dt).sum().backward(); });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{dt,-9} rope complex {rotC:F2} ms, rotate-half {rotH:F2} ms"));
        double sum = Time(() => { using var s = NewDisposeScope(); x.sum().backward(); });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{dt,-9} block fwd+bwd {blk:F1} ms | each fwd+bwd (minus a bare sum().backward() {sum:F2}): rmsnorm {rms - sum:F2} (x4/block), rope {rot - sum:F2} (x2), layernorm+scale-shift {ln - sum:F2} (x2), add-gated {add - sum:F2} (x2), gelu 1024x2048 {gelu - sum:F2} ms"));
    }
}

// Attention's error at [1,8,1024,64] against an fp64 reference, for scores of std 1, 3 and 6: the output and the q/k/v
// gradients (random upstream gradient) of SDPA in fp32, SDPA on bf16 inputs and ChunkedAttention's three score
// products. "total": against the reference on the fp32 draw (what bf16 compute costs, input rounding included);
// "kernel": against the reference on the bf16-rounded inputs (the kernel's own error). Relative Frobenius norms.
static void AttnError()
{
    var f32 = ScalarType.Float32; var bf = ScalarType.BFloat16; var f64 = ScalarType.Float64;
    Console.WriteLine("| score std | kernel | ref | out | dq | dk | dv |");
    Console.WriteLine("|---|---|---|---|---|---|---|");
    foreach (var std in new[] { 1.0, 3.0, 6.0 })
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(42, device("cpu"));
        // q·k/8 over d=64 terms of N(0,σ²)·N(0,σ²): std σ²
        double sigma = Math.Sqrt(std);
        var q = randn([1, 8, 1024, 64], generator: gen) * sigma; var k = randn([1, 8, 1024, 64], generator: gen) * sigma;
        var v = randn([1, 8, 1024, 64], generator: gen); var dO = randn([1, 8, 1024, 64], generator: gen);
        var (qb, kb, vb, gb) = (q.to_type(bf), k.to_type(bf), v.to_type(bf), dO.to_type(bf));
        var refTotal = Reference(q, k, v, dO);
        var refKernel = Reference(qb, kb, vb, gb);
        var candidates = new List<(string Name, Tensor[] R)>
        {
            ("SDPA fp32", Sdpa(q, k, v, dO)),
            ("SDPA bf16", Sdpa(qb, kb, vb, gb)),
        };
        foreach (var mode in new[] { Bf16Probe.ScoreProducts.Bf16, Bf16Probe.ScoreProducts.Fp32, Bf16Probe.ScoreProducts.Shifted })
        {
            var (o, lse, shift) = Bf16Probe.ChunkedAttention.Forward(qb, kb, vb, null, mode);
            var (dq, dk, dv) = Bf16Probe.ChunkedAttention.Backward(qb, kb, vb, null, o, lse, shift, gb, mode);
            candidates.Add(($"chunked {mode}", [o, dq, dk, dv]));
        }
        {
            var (o, lse, shift) = FastVideo.Models.Layers.Bf16Attention.Forward(qb, kb, vb, null);
            var (dq, dk, dv) = FastVideo.Models.Layers.Bf16Attention.Backward(qb, kb, vb, null, o, lse, shift, gb);
            candidates.Add(("Bf16Attention", [o, dq, dk, dv]));
        }
        foreach (var (name, r) in candidates)
        {
            string Row(Tensor[] reference) => string.Join(" | ", r.Zip(reference, (x, y) =>
                ((x.to_type(f64) - y).norm().item<double>() / y.norm().item<double>()).ToString("0.00e+0", CultureInfo.InvariantCulture)));
            Console.WriteLine($"| {std} | {name} | total | {Row(refTotal)} |");
            if (name != "SDPA fp32") Console.WriteLine($"| {std} | {name} | kernel | {Row(refKernel)} |");
        }
    }

    static Tensor[] Reference(Tensor q, Tensor k, Tensor v, Tensor dO)
    {
        var f64 = ScalarType.Float64;
        var (q64, k64, v64) = (q.to_type(f64).requires_grad_(), k.to_type(f64).requires_grad_(), v.to_type(f64).requires_grad_());
        var o = nn.functional.softmax(q64.matmul(k64.transpose(-2, -1)) / 8.0, -1).matmul(v64);
        o.backward([dO.to_type(f64)]);
        return [o.detach(), q64.grad!, k64.grad!, v64.grad!];
    }

    static Tensor[] Sdpa(Tensor q, Tensor k, Tensor v, Tensor dO)
    {
        var (qg, kg, vg) = (q.detach().requires_grad_(), k.detach().requires_grad_(), v.detach().requires_grad_());
        var o = nn.functional.scaled_dot_product_attention(qg, kg, vg);
        o.backward([dO]);
        return [o.detach(), qg.grad!, kg.grad!, vg.grad!];
    }
}

// Time of SDPA (fp32 and bf16) and ChunkedAttention's score products in bf16 at [1,8,1024,64] (--shape B,H,S,L,d), forward and
// forward + backward (SDPA through autograd; chunked as its forward then its backward), interleaved over rounds.
static void AttnSpeed(int rounds, long[] shape)
{
    var bf = ScalarType.BFloat16;
    var (b, h, sq, sk, d) = (shape[0], shape[1], shape[2], shape[3], shape[4]);
    var q = randn(b, h, sq, d); var k = randn(b, h, sk, d); var v = randn(b, h, sk, d); var dO = randn(b, h, sq, d);
    // As the model passes them: [B,S,H,d] transposed to [B,H,S,d] (not contiguous).
    Tensor AsModel(Tensor t, ScalarType dt) => t.transpose(1, 2).contiguous().transpose(1, 2).to_type(dt);
    var cases = new List<(string Name, Action F, Action FB)>();
    foreach (var dt in new[] { ScalarType.Float32, bf })
    {
        var (qq, kk, vv, gg) = (AsModel(q, dt), AsModel(k, dt), AsModel(v, dt), AsModel(dO, dt));
        cases.Add(($"SDPA {dt}",
            () => { using var s = NewDisposeScope(); using var ng = no_grad(); nn.functional.scaled_dot_product_attention(qq, kk, vv); },
            () => { using var s = NewDisposeScope();
                var (a, b, c) = (qq.detach().requires_grad_(), kk.detach().requires_grad_(), vv.detach().requires_grad_());
                nn.functional.scaled_dot_product_attention(a, b, c).backward([gg]); }));
    }
    var (qb, kb, vb, gb) = (AsModel(q, bf), AsModel(k, bf), AsModel(v, bf), AsModel(dO, bf));
    foreach (var mode in new[] { Bf16Probe.ScoreProducts.Bf16, Bf16Probe.ScoreProducts.Fp32, Bf16Probe.ScoreProducts.Shifted })
        cases.Add(($"chunked {mode}",
            () => { using var s = NewDisposeScope(); Bf16Probe.ChunkedAttention.Forward(qb, kb, vb, null, mode); },
            () => { using var s = NewDisposeScope();
                var (o, lse, shift) = Bf16Probe.ChunkedAttention.Forward(qb, kb, vb, null, mode);
                Bf16Probe.ChunkedAttention.Backward(qb, kb, vb, null, o, lse, shift, gb, mode); }));
    cases.Add(("Bf16Attention",
        () => { using var s = NewDisposeScope(); FastVideo.Models.Layers.Bf16Attention.Forward(qb, kb, vb, null); },
        () => { using var s = NewDisposeScope();
            var (o, lse, shift) = FastVideo.Models.Layers.Bf16Attention.Forward(qb, kb, vb, null);
            FastVideo.Models.Layers.Bf16Attention.Backward(qb, kb, vb, null, o, lse, shift, gb); }));
    var times = cases.ToDictionary(c => c.Name, _ => (F: new List<double>(), FB: new List<double>()));
    for (int r = 0; r < rounds; r++)
        foreach (var (name, f, fb) in cases)
        {
            times[name].F.Add(MeanMs(f, warmups: 2, reps: 10));
            times[name].FB.Add(MeanMs(fb, warmups: 2, reps: 10));
        }
    double Med(List<double> xs) { var a = xs.Order().ToArray(); return a[a.Length / 2]; }
    foreach (var (name, (f, fb)) in times)
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name,-16} forward {Med(f):F2} ms  forward+backward {Med(fb):F2} ms  (rounds: {string.Join(", ", fb.Select(x => x.ToString("F1", CultureInfo.InvariantCulture)))})"));
}

// Mean milliseconds of `reps` calls after `warmups` untimed ones.
static double MeanMs(Action a, int warmups, int reps)
{
    for (int i = 0; i < warmups; i++) a();
    var sw = Stopwatch.StartNew();
    for (int i = 0; i < reps; i++) a();
    return sw.Elapsed.TotalMilliseconds / reps;
}

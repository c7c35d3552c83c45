// Loading the Wan2.1-T2V-1.3B-sized transformer from bf16 safetensors: the old path (build the model on the CPU with
// its random init, read every tensor into memory, copy_ into the parameters, cast to the master dtype) against the
// streaming path (build on the meta device, read the files straight into the parameters in the master dtype).
// Two measurements:
//   - in one process, alternating, several repetitions, the minimum reported (the ratio between the paths);
//   - each load as the first thing a fresh process does, as `generate` and `train` do (this VM makes the first
//     touch of memory a process has not used before far dearer than reusing it).
// Peak memory is VmHWM (resident set high-water mark: native + managed) above the resident set before the load; in
// one process it is reset before each load through /proc/self/clear_refs.
// The weights are random (shapes and dtypes of the real model, Diffusers key names, two shards with an index),
// written under /tmp and deleted at the end.
// Run: dotnet run -c Release --project bench/LoadBench [-- --reps N --fresh-reps N --out FILE --cold]
//   --cold   also time streaming loads after posix_fadvise(DONTNEED) on the shards (drops them from this VM's page
//            cache; the host may still cache the disk).
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using FastVideo.Models.Dits;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
string? Arg(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
int reps = int.Parse(Arg("--reps") ?? "3");
int freshReps = int.Parse(Arg("--fresh-reps") ?? "2");
string? outFile = Arg("--out");
bool cold = args.Contains("--cold");
string root = Arg("--dir") ?? Path.Combine(Path.GetTempPath(), $"fv-loadbench-{Environment.ProcessId}");

// Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json.
var config = new WanTransformerConfig
{
    PatchSize = [1, 2, 2], NumAttentionHeads = 12, AttentionHeadDim = 128, InChannels = 16, OutChannels = 16,
    TextDim = 4096, FreqDim = 256, FfnDim = 8960, NumLayers = 30, CrossAttnNorm = true, Eps = 1e-6, RopeMaxSeqLen = 1024,
};

// The path every caller took before streaming (WanModel, FromPretrained): CPU model with random init, all tensors
// read into memory, strict copy_, then .to(dtype).
WanTransformer3DModel Old(DiffusersModelFolder folder, ScalarType dtype)
{
    var model = new WanTransformer3DModel(config);
    var weights = StateDict.LoadWeights(folder);
    try { StateDict.LoadInto(model, weights, string.Join(", ", folder.WeightFiles)); }
    finally { foreach (var w in weights.Values) w.Dispose(); }
    model.to(dtype);
    return model;
}
WanTransformer3DModel New(DiffusersModelFolder folder, ScalarType dtype) =>
    WanTransformer3DModel.FromWeights(config, WeightSet.FromModelFolder(folder), string.Join(", ", folder.WeightFiles), dtype);

// One timed load; the caller settles the process first.
Sample Measure(Func<DiffusersModelFolder, ScalarType, WanTransformer3DModel> load, DiffusersModelFolder folder, ScalarType dtype)
{
    long rss0 = Status("VmRSS");
    ResetPeak();
    var p0 = Process.GetCurrentProcess();
    var (user0, sys0) = (p0.UserProcessorTime, p0.PrivilegedProcessorTime);
    long managed0 = GC.GetTotalAllocatedBytes(precise: true);
    var t = Stopwatch.StartNew();
    var model = load(folder, dtype);
    double seconds = t.Elapsed.TotalSeconds;
    long managed = GC.GetTotalAllocatedBytes(precise: true) - managed0;
    var p1 = Process.GetCurrentProcess();
    double user = (p1.UserProcessorTime - user0).TotalSeconds, sys = (p1.PrivilegedProcessorTime - sys0).TotalSeconds;
    long hwm = Status("VmHWM");
    _ = MallocTrim(0);
    long held = Status("VmRSS") - rss0;
    if (model.ParamDtype != dtype) throw new InvalidOperationException($"got {model.ParamDtype}, wanted {dtype}");
    model.Dispose();
    return new Sample(seconds, user, sys, hwm - rss0, held, managed);
}

// Child mode: one load as the first thing this process does.
if (Arg("--child") is string child)
{
    var parts = child.Split(':');
    var dtype = parts[1] == "fp32" ? ScalarType.Float32 : ScalarType.BFloat16;
    var folder = DiffusersModelFolder.Resolve(root);
    if (parts.Length > 2 && parts[2] == "cold") DropFromPageCache(folder.WeightFiles);
    var sample = Measure(parts[0] == "old" ? Old : New, folder, dtype);
    Console.WriteLine($"RESULT {sample.Seconds} {sample.User} {sample.Sys} {sample.PeakKb} {sample.HeldKb} {sample.Managed}");
    return 0;
}

var report = new StringBuilder();
void Line(string s) { Console.WriteLine(s); report.AppendLine(s); }

try
{
    var sw = Stopwatch.StartNew();
    long fileBytes = WriteRandomBf16Model(config, root);
    Console.WriteLine($"wrote {fileBytes / 1e9:F2} GB of bf16 weights in {sw.Elapsed.TotalSeconds:F1} s to {root}");
    var folder = DiffusersModelFolder.Resolve(root);

    var cases = new List<Case>
    {
        new("streaming", ScalarType.Float32, false),
        new("old", ScalarType.Float32, false),
        new("streaming", ScalarType.BFloat16, false),
        new("old", ScalarType.BFloat16, false),
    };
    if (cold)
    {
        cases.Add(new("streaming", ScalarType.Float32, true));
        cases.Add(new("streaming", ScalarType.BFloat16, true));
    }

    // Bit-identity first: a SHA-256 of every tensor's bytes from each path (one model in memory at a time).
    foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        Dictionary<string, string> Digest(WanTransformer3DModel m)
        {
            using (m) return m.state_dict().ToDictionary(kv => kv.Key,
                kv => $"{kv.Value.dtype}:{Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(kv.Value.bytes))}");
        }
        var a = Digest(Old(folder, dtype));
        var b = Digest(New(folder, dtype));
        int differ = a.Count(kv => !b.TryGetValue(kv.Key, out var d) || d != kv.Value) + b.Keys.Count(k => !a.ContainsKey(k));
        Console.WriteLine($"{dtype}: {a.Count} tensors, {differ} differ between the old and the streaming path");
        if (differ != 0) throw new InvalidOperationException("the streaming path does not reproduce the old one");
    }

    string loadStart = LoadAverage();
    var inProcess = cases.Select(_ => new List<Sample>()).ToList();
    for (int r = 0; r < reps; r++)
    {
        for (int c = 0; c < cases.Count; c++)
        {
            Settle();
            if (cases[c].Cold) DropFromPageCache(folder.WeightFiles);
            var sample = Measure(cases[c].Path == "old" ? Old : New, folder, cases[c].Dtype);
            inProcess[c].Add(sample);
            Console.WriteLine($"in-process rep {r + 1} {cases[c].Label,-24} {sample}");
        }
    }

    var fresh = cases.Select(_ => new List<Sample>()).ToList();
    for (int r = 0; r < freshReps; r++)
    {
        for (int c = 0; c < cases.Count; c++)
        {
            var sample = RunChild($"{cases[c].Path}:{cases[c].DtypeName}{(cases[c].Cold ? ":cold" : "")}", root);
            fresh[c].Add(sample);
            Console.WriteLine($"fresh-process rep {r + 1} {cases[c].Label,-24} {sample}");
        }
    }
    string loadEnd = LoadAverage();

    long paramCount;
    using (var meta = new WanTransformer3DModel(config, torch.META)) paramCount = meta.parameters().Sum(p => p.numel());

    Line($"# Transformer load benchmark (run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC)");
    Line("");
    Line("**Taken on a busy, shared machine**: 2 cores shared with other engineers' builds and test runs (see the load");
    Line("averages). Absolute seconds vary a lot from run to run; the ratios between the two paths, measured in the same");
    Line("run, alternating, are the result. The lead engineer re-measures on a quiet machine.");
    Line("");
    Line($"- machine: {CpuModel()}, {Environment.ProcessorCount} logical CPUs, {Status("MemTotal", "/proc/meminfo") / 1048576.0:F1} GiB RAM, {RuntimeInformation.OSDescription}, a VM");
    Line($"- runtime: .NET {Environment.Version}, TorchSharp {typeof(torch).Assembly.GetName().Version}, torch threads {torch.get_num_threads()}, Release");
    Line($"- load average (1, 5, 15 min) before the timed runs: {loadStart}; after: {loadEnd}");
    Line($"- model: the Wan2.1-T2V-1.3B-Diffusers transformer config (30 layers, dim 1536, ffn 8960, 12 heads, text_dim 4096, in/out 16, patch [1,2,2], freq_dim 256), {paramCount:N0} parameters");
    Line($"- weights: random, bf16, {folder.WeightFiles.Count} shards + index, {fileBytes / 1e9:F2} GB of tensor data, read from the page cache unless marked cold");
    Line("- old: `new WanTransformer3DModel(config)` (CPU, random init) + `StateDict.LoadWeights` (every tensor in memory) + `LoadInto` (copy_) + `.to(dtype)`, as WanModel and FromPretrained did");
    Line("- streaming: `WanTransformer3DModel.FromWeights` (meta device; `StateDict.Materialize`: header checks, one allocation per tensor in the target dtype with transparent huge pages requested, parallel pread straight into it, bf16->fp32 converted from a 4 MiB staging buffer per worker)");
    Line("- bit-identity: both paths gave the same bytes (SHA-256 per tensor) in all 825 tensors, into fp32 and into bf16, in this run");
    Line("- peak: VmHWM (resident high-water mark, native + managed) above the resident set just before the load; held: resident set after the load (after malloc_trim) above the one before, i.e. the loaded model; CPU: user + system time of the process during the load");
    Line("");
    void Table(string title, List<List<Sample>> results, int n)
    {
        Line($"## {title}");
        Line("");
        Line("| path | into | seconds (min) | GB/s of file | CPU s (min): user + sys | peak above start (max) | model held | managed allocations |");
        Line("|---|---|---:|---:|---:|---:|---:|---:|");
        for (int c = 0; c < cases.Count; c++)
        {
            var best = results[c].MinBy(x => x.Seconds)!;
            var cpuBest = results[c].MinBy(x => x.User + x.Sys)!;
            Line($"| {cases[c].Label} | {cases[c].DtypeName} | {best.Seconds:F2} | {fileBytes / 1e9 / best.Seconds:F2} | " +
                 $"{cpuBest.User + cpuBest.Sys:F1}: {cpuBest.User:F1} + {cpuBest.Sys:F1} | {results[c].Max(x => x.PeakKb) / 1048576.0:F2} GiB | " +
                 $"{best.HeldKb / 1048576.0:F2} GiB | {results[c].Max(x => x.Managed) / 1048576.0:F1} MiB |");
        }
        Line("");
        foreach (var dtype in new[] { "fp32", "bf16" })
        {
            int o = cases.FindIndex(x => x.Label == "old" && x.DtypeName == dtype);
            int s = cases.FindIndex(x => x.Label == "streaming" && x.DtypeName == dtype);
            Line($"- into {dtype}: streaming takes {results[s].Min(x => x.Seconds) / results[o].Min(x => x.Seconds):P0} of the old path's time " +
                 $"({results[o].Min(x => x.Seconds) / results[s].Min(x => x.Seconds):F1}x faster; CPU time " +
                 $"{results[o].Min(x => x.User + x.Sys) / results[s].Min(x => x.User + x.Sys):F1}x less); peak " +
                 $"{results[s].Max(x => x.PeakKb) / 1048576.0:F2} GiB vs {results[o].Max(x => x.PeakKb) / 1048576.0:F2} GiB");
        }
        Line("");
        Line($"Every repetition ({n}), seconds: " + string.Join("; ", cases.Select((c, i) =>
            $"{c.Label} -> {c.DtypeName}: {string.Join(", ", results[i].Select(x => x.Seconds.ToString("F2")))}")));
        Line("");
    }
    Table("In one process, alternating (the ratio)", inProcess, reps);
    Table("Each load first in a fresh process (as generate and train load)", fresh, freshReps);

    if (outFile is not null)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outFile))!);
        File.WriteAllText(outFile, report.ToString());
        Console.WriteLine($"wrote {outFile}");
    }
}
finally
{
    try { Directory.Delete(root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
}
return 0;

// ---------------------------------------------------------------------------------------------------- helpers

static long WriteRandomBf16Model(WanTransformerConfig config, string root)
{
    var dir = Path.Combine(root, "transformer");
    Directory.CreateDirectory(dir);
    File.WriteAllText(Path.Combine(root, "model_index.json"), "{\"_class_name\": \"WanPipeline\"}");
    File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJson().ToJsonString());

    using var meta = new WanTransformer3DModel(config, torch.META);
    var shapes = meta.state_dict().Select(kv => (kv.Key, Shape: kv.Value.shape)).ToList();
    // Two shards split between the blocks, as Diffusers writes a model larger than its shard size.
    bool First(string k) => !k.StartsWith("blocks.") || int.Parse(k.Split('.')[1]) < config.NumLayers / 2;
    var shards = new[] { "diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors" };
    var map = new JsonObject();
    long total = 0;
    ulong seed = 1;
    for (int s = 0; s < 2; s++)
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        try
        {
            foreach (var (key, shape) in shapes.Where(x => First(x.Key) == (s == 0)))
            {
                var t = torch.empty(shape, dtype: ScalarType.BFloat16);
                FillRandomBf16(t, seed++);
                tensors.Add(KeyValuePair.Create(key, t));
                map[key] = shards[s];
                total += t.numel() * 2;
            }
            SafeTensors.Save(Path.Combine(dir, shards[s]), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        }
        finally { foreach (var kv in tensors) kv.Value.Dispose(); }
    }
    var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = map };
    File.WriteAllText(Path.Combine(dir, "diffusion_pytorch_model.safetensors.index.json"), index.ToJsonString());
    return total;
}

// Uniform values in [-0.05, 0.05) as bf16 (truncated), from a per-chunk xorshift: fast, deterministic, finite.
static unsafe void FillRandomBf16(Tensor t, ulong seed)
{
    long n = t.numel();
    if (n == 0) return;
    ushort* p;
    using (var first = t.reshape(-1).narrow(0, 0, 1)) fixed (byte* b = first.bytes) p = (ushort*)b;
    const long chunk = 1 << 20;
    Parallel.For(0, (n + chunk - 1) / chunk, c =>
    {
        ulong x = (seed * 0x9E3779B97F4A7C15UL) ^ ((ulong)c + 1) * 0xBF58476D1CE4E5B9UL;
        long end = Math.Min(n, (c + 1) * chunk);
        for (long i = c * chunk; i < end; i++)
        {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            float v = ((x >> 40) / (float)(1 << 24) * 2f - 1f) * 0.05f;
            p[i] = (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16);
        }
    });
}

static long Status(string key, string file = "/proc/self/status")
{
    foreach (var line in File.ReadLines(file))
        if (line.StartsWith(key + ":"))
            return long.Parse(line[(key.Length + 1)..].Trim().Split(' ')[0]);   // kB
    return -1;
}

// Writing 5 to clear_refs resets the peak resident set size (VmHWM) to the current resident set.
static void ResetPeak() => File.WriteAllText("/proc/self/clear_refs", "5");

static void Settle()
{
    GC.Collect();
    GC.WaitForPendingFinalizers();
    GC.Collect();
    _ = MallocTrim(0);   // hand freed heap pages back so every run starts from the same resident set
}

static void DropFromPageCache(IEnumerable<string> files)
{
    foreach (var f in files)
    {
        using var h = File.OpenHandle(f);
        _ = PosixFadvise((int)h.DangerousGetHandle(), 0, 0, 4 /* POSIX_FADV_DONTNEED */);
    }
}

static string LoadAverage() => string.Join(", ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3));

static string CpuModel() =>
    File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "unknown CPU";

[DllImport("libc", EntryPoint = "malloc_trim")]
static extern int MallocTrim(nuint pad);

[DllImport("libc", EntryPoint = "posix_fadvise")]
static extern int PosixFadvise(int fd, long offset, long len, int advice);

static Sample RunChild(string spec, string root)
{
    // Under `dotnet LoadBench.dll` the process is dotnet and the program its first argument; as an apphost, itself.
    var self = Environment.ProcessPath!;
    var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
    if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(Assembly.GetEntryAssembly()!.Location);
    foreach (var a in new[] { "--child", spec, "--dir", root }) psi.ArgumentList.Add(a);
    using var p = Process.Start(psi)!;
    string output = p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    var line = output.Split('\n').FirstOrDefault(l => l.StartsWith("RESULT "))
               ?? throw new InvalidOperationException($"child {spec} exited {p.ExitCode} without a result:\n{output}");
    var f = line.Split(' ').Skip(1).ToArray();
    return new Sample(double.Parse(f[0]), double.Parse(f[1]), double.Parse(f[2]), long.Parse(f[3]), long.Parse(f[4]), long.Parse(f[5]));
}

record Case(string Path, ScalarType Dtype, bool Cold)
{
    public string Label => Cold ? $"{Path}, cold cache" : Path;
    public string DtypeName => Dtype == ScalarType.Float32 ? "fp32" : "bf16";
}

record Sample(double Seconds, double User, double Sys, long PeakKb, long HeldKb, long Managed)
{
    public override string ToString() =>
        $"{Seconds,7:F2} s  cpu {User:F1}+{Sys:F1} s  peak +{PeakKb / 1048576.0:F2} GiB  held +{HeldKb / 1048576.0:F2} GiB  managed {Managed / 1048576.0:F1} MiB";
}

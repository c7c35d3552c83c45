using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using FastVideo.Data;
using Parquet;

// Rows per second read from parquet and collated into batches, for Wan-sized rows (latent [16,21,60,104] float32,
// text [512,4096] float32 = 16.8 MB a row), with and without background prefetch, plus the time a training step
// waits for data when each step takes a fixed time. Data is generated under /tmp (not the repository).
// Usage: dotnet run -c Release --project bench/DataBench [-- --rows 48 --batch 2 --dir /tmp/fastvideo-databench
//        --step-ms 400 --results bench/results]

var opts = Args.Parse(args);
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
long[] latentShape = [16, 21, 60, 104];
long[] textShape = [512, 4096];
var lines = new List<string>();
void Log(string s) { Console.WriteLine(s); lines.Add(s); }

var results = new List<(string Name, double RowsPerSec, double RowsPerCpuSec, double WaitMs)>();
foreach (var compression in new[] { CompressionMethod.Snappy, CompressionMethod.None })
{
    var dir = Path.Combine(opts.Dir, compression.ToString().ToLowerInvariant());
    EnsureData(dir, opts.Rows, latentShape, textShape, compression);
    foreach (int prefetch in new[] { 0, 2 })
    {
        var (rowsPerSec, perCpu, _) = Throughput(dir, opts, prefetch, stepMs: 0);
        results.Add(($"{compression}, prefetch {prefetch}: read+collate", rowsPerSec, perCpu, double.NaN));
        Console.WriteLine($"  {compression} prefetch={prefetch}: {rowsPerSec:F1} rows/s ({perCpu:F1} rows per CPU-second)");
    }
    {
        var (rowsPerSec, perCpu, _) = Throughput(dir, opts, 2, stepMs: 0, fastTensorDecoding: false);
        results.Add(($"{compression}, prefetch 2: read+collate, Parquet.Net decoding only (baseline)", rowsPerSec, perCpu, double.NaN));
        Console.WriteLine($"  {compression} prefetch=2 Parquet.Net only: {rowsPerSec:F1} rows/s ({perCpu:F1} rows per CPU-second)");
    }
    foreach (int prefetch in new[] { 0, 2 })
    {
        var (rowsPerSec, perCpu, waitMs) = Throughput(dir, opts, prefetch, stepMs: opts.StepMs);
        results.Add(($"{compression}, prefetch {prefetch}, {opts.StepMs} ms step", rowsPerSec, perCpu, waitMs));
        Console.WriteLine($"  {compression} prefetch={prefetch} step={opts.StepMs}ms: {rowsPerSec:F1} rows/s, wait {waitMs:F1} ms/step");
    }
}

var date = DateTime.Now.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
Log($"# Data loader benchmark, {date}");
Log("");
Log($"- machine: {Machine()}");
Log($"- runtime: .NET {Environment.Version}, {RuntimeInformation.OSDescription}, {Environment.ProcessorCount} logical CPUs");
Log($"- rows: {opts.Rows} Wan-sized rows (vae_latent [{string.Join(", ", latentShape)}] float32 + text_embedding " +
    $"[{string.Join(", ", textShape)}] float32 = {RowBytes(latentShape, textShape) / 1e6:F1} MB a row), written by ParquetVideoWriter " +
    "(one row per row group), read from the page cache");
Log($"- loader: batch {opts.Batch}, text_len 512, shuffled, dataset cache 64 MB (smaller than the data, so every row is decoded), " +
    $"{opts.Epochs} epochs after one warm-up batch");
Log("- command: `dotnet run -c Release --project bench/DataBench`");
Log("- the machine is shared with other builds, so wall-clock numbers vary from run to run; rows per CPU-second " +
    "(process CPU time, all threads) is the steadier measure of the loader's own cost");
Log("");
Log("| case | rows/s (wall) | rows per CPU-second | wait per step |");
Log("|---|---:|---:|---:|");
foreach (var r in results)
    Log($"| {r.Name} | {r.RowsPerSec:F1} | {r.RowsPerCpuSec:F1} | {(double.IsNaN(r.WaitMs) ? "-" : r.WaitMs.ToString("F1") + " ms")} |");
Log("");
Log($"Target: >= 20 rows/s with prefetch on. With a {opts.StepMs} ms training step and prefetch on, the step waits for data " +
    "only when the loader is slower than the step.");
if (opts.Results is { } resultsDir)
{
    Directory.CreateDirectory(resultsDir);
    var path = Path.Combine(resultsDir, $"data-{date}.md");
    File.WriteAllText(path + ".tmp", string.Join("\n", lines) + "\n");
    File.Move(path + ".tmp", path, overwrite: true);
    Console.WriteLine($"wrote {path}");
}
return 0;

static (double RowsPerSec, double RowsPerCpuSecond, double WaitMsPerStep) Throughput(string dir, Args o, int prefetch, int stepMs,
    bool fastTensorDecoding = true)
{
    using var loader = new DataLoader(ParquetVideoDataset.Open(dir, new DatasetOptions { CacheBytes = 64L << 20, FastTensorDecoding = fastTensorDecoding }),
        new DataLoaderOptions { BatchSize = o.Batch, Seed = 1, PrefetchBatches = prefetch, TextLen = 512 }, ownsDataset: true);
    loader.Next().Dispose(); // warm-up: JIT, file handles
    long batches = loader.BatchesPerEpoch * o.Epochs - 1;
    double waited = 0;
    var proc = Process.GetCurrentProcess();
    var cpu0 = proc.TotalProcessorTime;
    var sw = Stopwatch.StartNew();
    for (long i = 0; i < batches; i++)
    {
        using var b = loader.Next();
        waited += loader.LastWaitSeconds;
        if (stepMs > 0) Thread.Sleep(stepMs); // the training step (GPU work: the CPU is free meanwhile)
    }
    double wall = sw.Elapsed.TotalSeconds;
    proc.Refresh();
    double cpu = (proc.TotalProcessorTime - cpu0).TotalSeconds;
    return (batches * o.Batch / wall, batches * o.Batch / cpu, waited / batches * 1000);
}

static void EnsureData(string dir, int rows, long[] latentShape, long[] textShape, CompressionMethod compression)
{
    var marker = Path.Combine(dir, "READY");
    var tag = $"{rows} {string.Join("x", latentShape)} {string.Join("x", textShape)} {compression}";
    if (File.Exists(marker) && File.ReadAllText(marker) == tag) return;
    if (Directory.Exists(dir)) Directory.Delete(dir, true);
    Directory.CreateDirectory(dir);
    Console.WriteLine($"generating {rows} rows ({compression}) in {dir} ...");
    var rng = new SplitMix64(42);
    IEnumerable<VideoRow> Rows()
    {
        for (int i = 0; i < rows; i++)
            yield return new VideoRow
            {
                Latent = TensorBytes.FromFloats(Noise(ref rng, latentShape), latentShape),
                Text = TensorBytes.FromFloats(Noise(ref rng, textShape), textShape),
                Id = $"clip{i:D5}", Caption = $"bench clip {i}", FileName = $"clip{i:D5}.mp4",
                Width = 832, Height = 480, NumFrames = 21, DurationSec = 5.06, Fps = 16,
            };
    }
    for (int start = 0, part = 0; start < rows; start += 16, part++)
        ParquetVideoWriter.Write(Path.Combine(dir, $"part-{part:D3}.parquet"), Rows().Skip(start).Take(16),
            new ParquetWriteOptions { Compression = compression });
    File.WriteAllText(marker, tag);
}

// Gaussian-like values with full float mantissas: about as incompressible as real latents.
static float[] Noise(ref SplitMix64 rng, long[] shape)
{
    var a = new float[shape.Aggregate(1L, (x, y) => x * y)];
    for (int i = 0; i < a.Length; i += 2)
    {
        ulong r = rng.NextUInt64();
        a[i] = ((uint)r * (1f / uint.MaxValue) - 0.5f) * 3.4f;
        if (i + 1 < a.Length) a[i + 1] = ((uint)(r >> 32) * (1f / uint.MaxValue) - 0.5f) * 3.4f;
    }
    return a;
}

static double RowBytes(long[] l, long[] t) => 4.0 * (l.Aggregate(1L, (x, y) => x * y) + t.Aggregate(1L, (x, y) => x * y));

static string Machine()
{
    try
    {
        var model = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim();
        var mem = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemTotal"))?.Split(':', 2)[1].Trim();
        return $"{model ?? "unknown CPU"}, {mem ?? "? kB"} RAM, host {Environment.MachineName}";
    }
    catch (IOException) { return Environment.MachineName; }
}

sealed record Args(int Rows, int Batch, int Epochs, int StepMs, string Dir, string? Results)
{
    public static Args Parse(string[] a)
    {
        var r = new Args(48, 2, 2, 400, "/tmp/fastvideo-databench", FindResultsDir());
        for (int i = 0; i + 1 < a.Length; i += 2)
            r = a[i] switch
            {
                "--rows" => r with { Rows = int.Parse(a[i + 1]) },
                "--batch" => r with { Batch = int.Parse(a[i + 1]) },
                "--epochs" => r with { Epochs = int.Parse(a[i + 1]) },
                "--step-ms" => r with { StepMs = int.Parse(a[i + 1]) },
                "--dir" => r with { Dir = a[i + 1] },
                "--results" => r with { Results = a[i + 1] == "none" ? null : a[i + 1] },
                _ => throw new ArgumentException($"unknown option {a[i]}"),
            };
        return r;
    }

    // bench/results of the source tree (found by walking up from the binaries).
    static string? FindResultsDir()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "bench", "DataBench", "DataBench.csproj")))
                return Path.Combine(d.FullName, "bench", "results");
        return null;
    }
}

// Data parallel over MPI (issue 16), on this machine:
//   allreduce: summing 64 MB of float32 gradients over the ranks, (a) on the tensor's own memory through
//              GradientAverager (what training does: MPI_Allreduce in place, 16 MB pieces), (b) through MPI.NET's
//              managed arrays (copy the tensor into a float[], Allreduce, copy back), as a user of MPI.NET would.
//              mpiexec -n 2 dotnet bench/MpiBench/bin/Release/net10.0/MpiBench.dll allreduce [--mb 64] [--repeats 8]
//   steps:     the trainer on a mid-size Wan (quickstart data), K steps; rank 0 prints the median step time, the
//              gradient all-reduce time and the bytes all-reduced per step.
//              dotnet .../MpiBench.dll steps --batch 1            (one process)
//              mpiexec -n 2 dotnet .../MpiBench.dll steps --batch 1
//   draws:     the cost of drawing per-sample noise for the global batch (every rank draws N x its own).
//   model:     the written model of step time on N = 8..64 nodes (one process each) from measured inputs: compute
//              seconds per step and bytes all-reduced per step of a full finetune and a LoRA of the 1.3B config
//              (bench/BigLoraBench --layers 4|8 [--full]), the trainer's local all-reduce rate (steps, N=2).
//              dotnet .../MpiBench.dll model --full-sec 31.4 --full-mb 5676 --lora-sec 17.7 --lora-mb 47.2 --local-gbs 1.44
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data.Synthetic;
using FastVideo.Distributed;
using FastVideo.Train;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Quickstart;
using FastVideo.Train.Tracking;
using static TorchSharp.torch;

FastVideo.Native.TorchSharpLoader.EnsureLoaded();
var mode = args.Length > 0 ? args[0] : "allreduce";
double D(string name, double dflt) => Array.IndexOf(args, name) is var i and >= 0 ? double.Parse(args[i + 1], CultureInfo.InvariantCulture) : dflt;
int Opt(string name, int dflt) => Array.IndexOf(args, name) is var i and >= 0 ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : dflt;
var inv = CultureInfo.InvariantCulture;

switch (mode)
{
    case "allreduce": AllReduce(Opt("--mb", 64), Opt("--repeats", 8)); break;
    case "steps": Steps(Opt("--batch", 1), Opt("--steps", 12), Opt("--layers", 8)); break;
    case "draws": Draws(); break;
    case "model": Model(); break;
    default: Console.Error.WriteLine($"unknown mode {mode}: allreduce | steps | draws | model"); return 2;
}
return 0;

void AllReduce(int mb, int repeats)
{
    // MPI.NET is built against MS-MPI (msmpi.dll), whose ABI is MPICH's: point it at MPICH's library.
    NativeLibrary.SetDllImportResolver(typeof(MPI.Communicator).Assembly, (name, _, _) =>
        name.StartsWith("msmpi", StringComparison.OrdinalIgnoreCase) ? NativeLibrary.Load("libmpich.so.12") : IntPtr.Zero);
    var argv = args;
    using var env = new MPI.Environment(ref argv);
    var comm = MPI.Communicator.world;
    var group = World.Join();   // MPI is initialised already: the same MPICH library, the same world
    long n = mb * (1L << 20) / 4;
    using var grad = full(n, (float)(group.Rank + 1));
    float expect = (group.Size + 1) / 2f;   // mean of 1..N

    using var averager = new GradientAverager(group);
    double Tensor()
    {
        grad.fill_(group.Rank + 1);
        group.Barrier();
        var sw = Stopwatch.StartNew();
        averager.Average([grad]);
        return sw.Elapsed.TotalSeconds;
    }
    double Managed()
    {
        grad.fill_(group.Rank + 1);
        group.Barrier();
        var sw = Stopwatch.StartNew();
        var mine = grad.data<float>().ToArray();                               // tensor -> managed array
        var sum = comm.Allreduce(mine, MPI.Operation<float>.Add);              // MPI.NET: allocates the result
        float scale = 1f / group.Size;
        var span = MemoryMarshal.Cast<byte, float>(grad.bytes);                // managed array -> tensor
        for (int i = 0; i < sum.Length; i++) span[i] = sum[i] * scale;
        return sw.Elapsed.TotalSeconds;
    }
    Tensor(); Managed();   // warm-up (first touch, connections)
    var t = new List<double>(); var m = new List<double>();
    for (int r = 0; r < repeats; r++) { t.Add(Tensor()); Check(); m.Add(Managed()); Check(); }
    void Check()
    {
        using var wrong = (grad - expect).abs().max();
        if (wrong.item<float>() != 0) throw new InvalidOperationException("all-reduce gave a wrong sum");
    }
    if (group.IsMain)
    {
        double mt = Median(t), mm = Median(m);
        Console.WriteLine($"| {group.Size} ranks, {mb} MB float32 | median of {repeats} | MB/s |");
        Console.WriteLine("|---|---|---|");
        Console.WriteLine(string.Format(inv, "| tensor memory (GradientAverager, in place, 16 MB pieces) | {0:0.000} s | {1:0} |", mt, mb / mt));
        Console.WriteLine(string.Format(inv, "| MPI.NET managed arrays (copy out, Allreduce, copy back) | {0:0.000} s | {1:0} |", mm, mb / mm));
        Console.WriteLine(string.Format(inv, "ratio managed / tensor memory: {0:0.00}x", mm / mt));
        Console.WriteLine("all: tensor " + string.Join(" ", t.Select(x => x.ToString("0.000", inv))) + " | managed " + string.Join(" ", m.Select(x => x.ToString("0.000", inv))));
    }
}

void Steps(int batch, int steps, int layers)
{
    var group = World.Join();
    // Every rank makes the same files in its own folder (no shared state needed on one machine).
    var root = Path.Combine(Path.GetTempPath(), $"fv-mpibench-{Environment.ProcessId}");
    var data = Path.Combine(root, "data");
    SyntheticVideoDataset.Write(QuickstartRunner.Data, data);
    var model = new JsonObject
    {
        ["num_attention_heads"] = 8, ["attention_head_dim"] = 64, ["in_channels"] = 3, ["out_channels"] = 3, ["text_dim"] = 32,
        ["ffn_dim"] = 2048, ["num_layers"] = layers, ["patch_size"] = new JsonArray(1, 2, 2),   // D=512, 256 video tokens
    };
    var families = ModelFamilyRegistry.Default;
    QuickstartRunner.WriteInitModel(families, Path.Combine(root, "teacher_init"), data, model);
    var output = Path.Combine(Path.GetTempPath(), $"fv-mpibench-run-{group.Size}-{batch}-{Guid.NewGuid():N}");
    output = System.Text.Encoding.UTF8.GetString(group.Broadcast(System.Text.Encoding.UTF8.GetBytes(output)));
    var config = RecipeLoader.LoadText(QuickstartRunner.StageRecipe("quickstart_teacher.yaml", root), "quickstart_teacher.yaml",
        [$"training.loop.max_train_steps={steps}", $"training.data.train_batch_size={batch}", "training.compute_precision=fp32",
         $"training.checkpoint.output_dir={output}", "training.checkpoint.training_state_checkpointing_steps=0"], families);
    using var method = TrainingBuilder.Build(config, families);
    using var source = DataLoaderBatchSource.FromConfig(config, families);
    var memory = new MemoryTracker();
    using (var trainer = new Trainer(method, source, trackers: [memory], console: TextWriter.Null, group: group)) trainer.Run();
    long parameters = method.Student.Transformer.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
    if (group.IsMain)
    {
        var measured = memory.Entries.Skip(2).Select(e => e.Metrics).ToList();   // the first two steps warm up
        double M(string key) => measured.Count == 0 || !measured[0].ContainsKey(key) ? 0 : Median(measured.Select(x => x[key]).ToList());
        Console.WriteLine(string.Format(inv,
            "| {0} | {1} | {2} | {3:0.000} s | {4:0.000} s | {5:0.000} s | {6:0.0} MB | {7} threads |",
            group.Size, batch, batch * group.Size, M("step_time_sec"), M("time/allreduce"), M("time/sync"),
            parameters * 4 / 1e6, get_num_threads()));
    }
    World.Leave();
    World.ExitIfJoined(0);
}

void Draws()
{
    // Per-sample noise of a Wan2.1-1.3B 480p clip: latent [16, 21, 60, 104] = 2.1 M values per sample.
    using var g = new Generator(1, CPU);
    foreach (int ranks in new[] { 1, 8, 64 })
    {
        var sw = Stopwatch.StartNew();
        using var x = randn([ranks, 16, 21, 60, 104], generator: g);
        Console.WriteLine(string.Format(inv, "randn for {0} samples of [16,21,60,104]: {1:0.000} s ({2} threads)", ranks, sw.Elapsed.TotalSeconds, get_num_threads()));
    }
}

void Model()
{
    // Step time on N nodes = compute + gradient all-reduce (not overlapped with backward: the trainer averages after
    // the micro-batches) + waiting for the slowest node (not modelled: identical nodes). The all-reduce of S bytes
    // in 16 MB buckets, as MPICH's large-message algorithm (reduce-scatter + all-gather, a ring): each node sends and
    // receives 2(N-1)/N x S over its link (bandwidth bw), pays 2(N-1) latencies per bucket, and passes S through
    // memory at the local rate measured by the trainer on this machine (packing, summing, scaling).
    var cases = new[] { ("full finetune", D("--full-sec", 31.4), D("--full-mb", 5676)), ("LoRA r16", D("--lora-sec", 17.7), D("--lora-mb", 47.2)) };
    double local = D("--local-gbs", 1.44) * 1e9, latency = D("--latency-us", 50) * 1e-6, bucket = 16 << 20;
    var links = new[] { ("10 GbE", 1.25e9 * 0.9), ("25 GbE", 3.125e9 * 0.9), ("100 Gb/s", 12.5e9 * 0.9) };   // 90% of line rate
    double AllReduce(int n, double bytes, double bw) =>
        2.0 * (n - 1) / n * bytes / bw + bytes / local + 2.0 * (n - 1) * Math.Ceiling(bytes / bucket) * latency;
    foreach (double speedup in new[] { 1.0, D("--fast-node", 16) })
    {
        Console.WriteLine(speedup == 1 ? "\nNodes that compute like this machine (measured compute time):"
                                       : string.Format(inv, "\nNodes that compute {0:0}x faster than this machine (compute / {0:0}):", speedup));
        Console.WriteLine("| training | compute | link | N=8 | N=16 | N=32 | N=64 | efficiency N=64 |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        foreach (var (name, sec, mb) in cases)
            foreach (var (link, bw) in links)
            {
                double c = sec / speedup, bytes = mb * 1e6;
                var cells = new[] { 8, 16, 32, 64 }.Select(n => c + AllReduce(n, bytes, bw)).ToList();
                Console.WriteLine(string.Format(inv, "| {0} ({1:0} MB) | {2:0.00} s | {3} | {4} | {5:0%} |", name, mb, c, link,
                    string.Join(" | ", cells.Select(t => t.ToString("0.00", inv) + " s")), c / cells[^1]));
            }
    }
}

static double Median(List<double> xs)
{
    var s = xs.Order().ToList();
    return s.Count == 0 ? 0 : s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using FastVideo.Data.Synthetic;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Models;
using FastVideo.Train.Quickstart;
using FastVideo.Train.Tracking;
using FastVideo.Weights;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Distributed;

/// <summary>
/// `mpiexec -n 2 fastvideo train` on the quickstart teacher, through MPICH and the built CLI: the same training as
/// one process of the global batch, rank 0's run folder, a killed rank, a bit-for-bit resume. Skipped (with the
/// reason) where MPICH is not installed.
/// </summary>
public class MpiTrainingTests : IClassFixture<MpiTrainingTests.QuickstartFiles>
{
    private readonly QuickstartFiles _files;
    public MpiTrainingTests(QuickstartFiles files) => _files = files;

    /// <summary>The quickstart's dataset, untrained teacher and teacher recipe, made once for the class.</summary>
    public sealed class QuickstartFiles
    {
        public QuickstartFiles()
        {
            Root = TestPaths.TempDir("mpi");
            var data = Path.Combine(Root, "data");
            SyntheticVideoDataset.Write(QuickstartRunner.Data, data);
            QuickstartRunner.WriteInitModel(ModelFamilyRegistry.Default, Path.Combine(Root, "teacher_init"), data, QuickstartRunner.Model);
            Recipe = Path.Combine(Root, "quickstart_teacher.yaml");
            File.WriteAllText(Recipe, QuickstartRunner.StageRecipe("quickstart_teacher.yaml", Root));
        }

        public string Root { get; }
        public string Recipe { get; }
    }

    private static string? MissingMpich()
    {
        var mpiexec = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "mpiexec.mpich")).FirstOrDefault(File.Exists);
        if (mpiexec is null) return "MPICH is not installed (apt-get install mpich): no mpiexec.mpich on PATH";
        if (!NativeLibrary.TryLoad("libmpich.so.12", out var lib)) return "MPICH is not installed (apt-get install mpich): no libmpich.so.12";
        NativeLibrary.Free(lib);
        return null;
    }

    private static string Cli => Path.Combine(AppContext.BaseDirectory, "FastVideo.Cli");

    /// <summary>The teacher recipe for a short run into <paramref name="output"/>, computing in fp32 (bf16 rounding
    /// would swamp the 1e-6 comparison).</summary>
    private string[] Train(string output, int batch, int steps, int saveSteps, params string[] more) =>
    [
        "train", _files.Recipe,
        "--set", $"training.checkpoint.output_dir={output}",
        "--set", $"training.data.train_batch_size={batch}",
        "--set", $"training.loop.max_train_steps={steps}",
        "--set", $"training.checkpoint.training_state_checkpointing_steps={saveSteps}",
        "--set", "training.compute_precision=fp32",
        .. more,
    ];

    private sealed record Outcome(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
    }

    /// <summary>Runs the built CLI under <c>mpiexec.mpich -n N</c>; <paramref name="onLine"/> sees each line of stdout
    /// as it comes (with the process, to act on it).</summary>
    private static Outcome Mpiexec(int n, string[] args, Action<string, Process>? onLine = null)
    {
        var psi = new ProcessStartInfo("mpiexec.mpich", ["-n", n.ToString(), Cli, .. args])
            { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.Environment.Remove("OMP_NUM_THREADS");
        using var p = Process.Start(psi)!;
        var stderr = new StringBuilder();
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        p.BeginErrorReadLine();
        var stdout = new StringBuilder();
        var watchdog = Stopwatch.StartNew();
        string? line;
        while ((line = p.StandardOutput.ReadLine()) is not null)
        {
            stdout.AppendLine(line);
            onLine?.Invoke(line, p);
            if (watchdog.Elapsed > TimeSpan.FromMinutes(10)) { p.Kill(entireProcessTree: true); break; }
        }
        if (!p.WaitForExit(TimeSpan.FromMinutes(2))) p.Kill(entireProcessTree: true);
        p.WaitForExit();
        lock (stderr) return new Outcome(p.ExitCode, stdout.ToString(), stderr.ToString());
    }

    private static List<JsonObject> Metrics(string run) =>
        File.ReadAllLines(Path.Combine(run, JsonlTracker.FileName)).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();

    private static Dictionary<string, Tensor> Weights(string checkpoint) => SafeTensors.Load(CheckpointManager.RoleWeightsPath(checkpoint, "student"));

    /// <summary>Rank 1's process id, from the start line rank 0 prints.</summary>
    private static int RankPid(string startLine, int rank)
    {
        var m = System.Text.RegularExpressions.Regex.Match(startLine, $@"rank {rank} \(pid (\d+) on ");
        Assert.True(m.Success, startLine);
        return int.Parse(m.Groups[1].Value);
    }

    [SkippableFact]
    public void TwoRanksOfBatchOne_TrainLikeOneProcessOfBatchTwo_Over20QuickstartTeacherSteps()
    {
        var missing = MissingMpich();
        Skip.If(missing is not null, missing);
        var one = Path.Combine(_files.Root, "one-process");
        var two = Path.Combine(_files.Root, "two-ranks");
        var err = new StringWriter();
        Assert.True(FastVideo.Cli.Cli.Run(Train(one, batch: 2, steps: 20, saveSteps: 20), TextWriter.Null, err) == 0, err.ToString());
        var dp = Mpiexec(2, Train(two, batch: 1, steps: 20, saveSteps: 20));
        Assert.True(dp.ExitCode == 0, dp.ToString());

        // Only rank 0 prints: the start line names both processes, and every step's line appears once.
        Assert.StartsWith("data parallel over 2 processes (MPI: libmpich.so.12)", dp.Stdout);
        Assert.Contains("train_batch_size 1 per process, global batch 2", dp.Stdout);
        for (int s = 1; s <= 20; s++) Assert.Single(dp.Stdout.Split('\n'), l => l.StartsWith($"step {s}/20 ", StringComparison.Ordinal));

        var a = Metrics(one);
        var b = Metrics(two);
        Assert.Equal(Enumerable.Range(1, 20), b.Select(m => (int)m["step"]!));
        foreach (var key in new[] { "total_loss", "grad_norm/student", "lr/student" })
            for (int i = 0; i < 20; i++)
                Assert.True(Math.Abs((double)a[i][key]! - (double)b[i][key]!) <= 1e-6, $"step {i + 1} {key}: {a[i][key]} vs {b[i][key]}");
        Assert.True(b.All(m => m.ContainsKey("time/allreduce") && m.ContainsKey("time/sync")));

        var wa = Weights(CheckpointManager.PathFor(one, 20));
        var wb = Weights(CheckpointManager.PathFor(two, 20));
        Assert.Equal(wa.Keys.Order(), wb.Keys.Order());
        double worst = wa.Max(kv => (kv.Value - wb[kv.Key]).abs().max().item<float>());
        Assert.True(worst <= 1e-6, $"weights differ by up to {worst}");
        double moved = wa.Max(kv => kv.Value.abs().max().item<float>());
        Assert.True(moved > 0);

        // The run folder's rules hold across ranks: a second run on it is refused, once, by rank 0 (exit 3).
        var again = Mpiexec(2, Train(two, batch: 1, steps: 20, saveSteps: 20));
        Assert.True(again.ExitCode == ExitCodes.RunFolder, again.ToString());
        Assert.Single(again.Stderr.Split('\n'), l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.Contains("error: training.checkpoint.output_dir:", again.Stderr);
        Assert.Contains("already holds a run", again.Stderr);
    }

    [SkippableFact]
    public void KillingOneRank_StopsTheRun_LastCheckpointIntact_ResumingOnTwoRanksIsBitForBit()
    {
        var missing = MissingMpich();
        Skip.If(missing is not null, missing);
        var reference = Path.Combine(_files.Root, "kill-reference");
        var run = Path.Combine(_files.Root, "kill-run");
        var r = Mpiexec(2, Train(reference, batch: 1, steps: 12, saveSteps: 4));
        Assert.True(r.ExitCode == 0, r.ToString());

        // Rank 1 is killed (SIGKILL) once step 6 is done: checkpoint-4 exists, checkpoint-8 does not yet.
        int? killed = null;
        int[] pids = [];
        var victim = Mpiexec(2, Train(run, batch: 1, steps: 12, saveSteps: 4), (line, _) =>
        {
            if (line.StartsWith("data parallel", StringComparison.Ordinal)) pids = [RankPid(line, 0), RankPid(line, 1)];
            if (line.StartsWith("step 6/12 ", StringComparison.Ordinal) && killed is null)
            {
                killed = pids[1];
                Process.GetProcessById(pids[1]).Kill();
            }
        });
        Assert.True(killed is not null, victim.ToString());
        Assert.True(victim.ExitCode != 0, victim.ToString());
        // mpiexec ends the whole run and says which process died and how.
        var said = victim.Stdout + victim.Stderr;
        Assert.True(said.Contains("BAD TERMINATION") && said.Contains($"PID {killed}"), victim.ToString());
        Assert.False(victim.Stdout.Contains("step 7/12"), victim.ToString());
        foreach (var pid in pids)
            Assert.True(!Process.GetProcesses().Any(p => p.Id == pid), $"process {pid} of the killed run is still alive");
        var latest = CheckpointManager.ResolveResume("latest", run);
        Assert.True(CheckpointManager.PathFor(run, 4) == latest, $"latest: {latest}\n{victim}");
        Assert.Null(CheckpointManager.Problem(latest!));

        var resumed = Mpiexec(2, Train(run, batch: 1, steps: 12, saveSteps: 4, "--set", "training.checkpoint.resume_from_checkpoint=latest"));
        Assert.True(resumed.ExitCode == 0, resumed.ToString());
        Assert.True(resumed.Stdout.Contains($"resumed from {CheckpointManager.PathFor(run, 4)} at step 4"), resumed.ToString());
        var expected = Metrics(reference);
        var actual = Metrics(run);
        Assert.Equal(Enumerable.Range(1, 12), actual.Select(m => (int)m["step"]!));
        Assert.Equal(expected.Select(m => (double)m["total_loss"]!), actual.Select(m => (double)m["total_loss"]!));
        var wa = Weights(CheckpointManager.PathFor(reference, 12));
        var wb = Weights(CheckpointManager.PathFor(run, 12));
        foreach (var (k, v) in wa) Assert.True(v.cpu().bytes.SequenceEqual(wb[k].cpu().bytes), $"weights differ: {k}");
    }
}

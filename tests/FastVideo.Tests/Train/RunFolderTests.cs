using System.Diagnostics;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Train;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using FastVideo.Train.RunFolders;
using FastVideo.Train.Tracking;
using FastVideo.Weights;
using Xunit;

namespace FastVideo.Tests.Train;

/// <summary>
/// One run per output folder, no silent reuse, every step once in the metrics, durable checkpoints, and I/O failures
/// as one message that leaves the last good checkpoint intact.
/// </summary>
public class RunFolderTests
{
    private static RunConfig Cfg(string dir, int maxSteps = 4, int saveSteps = 2, int keepLast = 0, string resume = "") =>
        TrainFixture.Config(dir, maxSteps: maxSteps, saveSteps: saveSteps, keepLast: keepLast, resume: resume);

    private static RunConfig Resume(RunConfig cfg, string spec = "latest") =>
        cfg with { Training = cfg.Training with { Checkpoint = cfg.Training.Checkpoint with { ResumeFromCheckpoint = spec } } };

    /// <summary>A run with the default trackers (metrics.jsonl and TensorBoard) as `fastvideo train` makes it.</summary>
    private static (int Last, string Console) Train(RunConfig cfg, int? stopAfter = null, bool overwrite = false,
        Action<Trainer>? prepare = null, IReadOnlyList<TrainCallback>? callbacks = null)
    {
        using var method = TrainingBuilder.Build(cfg);
        var console = new StringWriter();
        using var trainer = new Trainer(method, new RandomBatchSource(), callbacks: callbacks, console: console, overwrite: overwrite);
        prepare?.Invoke(trainer);
        return (trainer.Run(stopAfter), console.ToString());
    }

    private static List<int> MetricSteps(string dir) =>
        File.ReadAllLines(Path.Combine(dir, JsonlTracker.FileName)).Select(l => JsonNode.Parse(l)!["step"]!.GetValue<int>()).ToList();

    private static Dictionary<string, byte[]> Weights(string checkpoint) =>
        SafeTensors.Load(CheckpointManager.RoleWeightsPath(checkpoint, "student"))
            .ToDictionary(kv => kv.Key, kv => kv.Value.cpu().bytes.ToArray());

    private static void AssertSameWeights(string expectedCheckpoint, string actualCheckpoint)
    {
        var a = Weights(expectedCheckpoint);
        var b = Weights(actualCheckpoint);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (k, v) in a) Assert.True(v.SequenceEqual(b[k]), $"weights differ: {k}");
    }

    /// <summary>Starts a second run on the same folder from inside the first one, at a given step.</summary>
    private sealed class StartAnotherRun(RunConfig cfg, int atStep) : TrainCallback
    {
        public Exception? Refusal { get; private set; }
        public override void OnTrainingStepEnd(TrainingMethod method, int iteration, StepLog log)
        {
            if (iteration != atStep) return;
            Refusal = Record.Exception(() => Train(cfg));
        }
    }

    [Fact]
    public void ASecondRunOnAHeldFolderIsRefusedAndTheFirstFinishesUnharmed()
    {
        var dir = TestPaths.TempDir("twice");
        var cfg = Cfg(dir);
        var intruder = new StartAnotherRun(cfg, atStep: 3);
        var (last, _) = Train(cfg, callbacks: [intruder]);

        var e = Assert.IsType<RunFolderError>(intruder.Refusal);
        Assert.Contains($"'{dir}' is in use by another run", e.Message);
        Assert.Contains($"pid {Environment.ProcessId}", e.Message);
        Assert.Equal(ExitCodes.RunFolder, e.ExitCode);
        // The first run went on: each step once, its checkpoints, and a TensorBoard file of its own only.
        Assert.Equal(4, last);
        Assert.Equal([1, 2, 3, 4], MetricSteps(dir));
        Assert.Equal([2, 4], CheckpointManager.List(dir).Select(c => c.Step));
        Assert.Single(Directory.GetFiles(Path.Combine(dir, TensorBoardTracker.SubDir)));
        // Released at the end: the folder can be resumed now.
        Train(Resume(Cfg(dir, maxSteps: 5)));
        Assert.Equal([1, 2, 3, 4, 5], MetricSteps(dir));
    }

    [Fact]
    public void TheLockIsHeldAcrossProcessesAndReleasedWhenTheHolderIsKilled()
    {
        var dir = TestPaths.TempDir("flock");
        // flock(1) takes the same kind of lock (flock(2)) as the run does, from another process; --close keeps the
        // lock in flock itself (not in its sleep child), so killing flock releases it at once.
        Process? holder = null;
        try
        {
            holder = Process.Start(new ProcessStartInfo("flock", ["--exclusive", "--close", Path.Combine(dir, RunLock.FileName), "sleep", "60"]));
        }
        catch (System.ComponentModel.Win32Exception) { }
        Skip.If(holder is null, "flock(1) is not available");
        try
        {
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (!RunLock.IsHeld(dir) && DateTime.UtcNow < deadline) Thread.Sleep(20);
            Assert.True(RunLock.IsHeld(dir));
            var e = Assert.Throws<RunFolderError>(() => Train(Cfg(dir)));
            Assert.Contains("is in use by another run", e.Message);
            Assert.False(File.Exists(Path.Combine(dir, JsonlTracker.FileName)));   // refused before writing anything

            holder.Kill(entireProcessTree: true);   // SIGKILL: the kernel drops the lock
            holder.WaitForExit();
            Assert.Equal(4, Train(Cfg(dir)).Last);
        }
        finally
        {
            if (!holder.HasExited) holder.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public void AFreshRunInAUsedFolderIsRefused_OverwriteMovesTheEarlierRunAside()
    {
        var dir = TestPaths.TempDir("used");
        Train(Cfg(dir, maxSteps: 4));
        var metricsBefore = File.ReadAllText(Path.Combine(dir, JsonlTracker.FileName));

        var e = Assert.Throws<RunFolderError>(() => Train(Cfg(dir, maxSteps: 2)));
        Assert.Contains($"'{dir}' already holds a run (checkpoint-2, checkpoint-4; metrics.jsonl up to step 4)", e.Message);
        Assert.Contains("resume_from_checkpoint=latest", e.Message);
        Assert.Contains("--overwrite", e.Message);
        Assert.Equal(metricsBefore, File.ReadAllText(Path.Combine(dir, JsonlTracker.FileName)));   // untouched
        Assert.Equal([2, 4], CheckpointManager.List(dir).Select(c => c.Step));

        var (_, console) = Train(Cfg(dir, maxSteps: 2), overwrite: true);
        var aside = Assert.Single(Directory.GetDirectories(Path.GetDirectoryName(dir)!, Path.GetFileName(dir) + ".previous-*"));
        Assert.Contains($"moved to '{aside}'", console);
        // The earlier run is whole in its new place; the folder holds the new run only.
        Assert.Equal(metricsBefore, File.ReadAllText(Path.Combine(aside, JsonlTracker.FileName)));
        Assert.Equal([2, 4], CheckpointManager.List(aside).Select(c => c.Step));
        Assert.False(File.Exists(Path.Combine(aside, RunLock.FileName)));
        Assert.Equal([1, 2], MetricSteps(dir));
        Assert.Equal([2], CheckpointManager.List(dir).Select(c => c.Step));
        Assert.Equal(CheckpointManager.PathFor(dir, 2), CheckpointManager.ResolveResume("latest", dir));
    }

    [Fact]
    public void AKillRightAfterACheckpointIsPublishedLosesNoMetricsLine()
    {
        var dir = TestPaths.TempDir("kill");
        var cfg = Cfg(dir, maxSteps: 4, saveSteps: 2);
        Assert.Throws<InvalidOperationException>(() => Train(cfg, prepare: t => t.Checkpoints.AfterPublished = path =>
        {
            if (path.EndsWith("checkpoint-2")) throw new InvalidOperationException("killed");
        }));
        Assert.Equal([1, 2], MetricSteps(dir));   // the line of step 2 was written before its checkpoint

        Train(Resume(cfg));
        Assert.Equal([1, 2, 3, 4], MetricSteps(dir));
        var tb = TensorBoardEventReader.View(Path.Combine(dir, TensorBoardTracker.SubDir))["total_loss"];
        Assert.Equal([1L, 2L, 3L, 4L], tb.Select(p => p.Key));
    }

    [Fact]
    public void AResumeCutsTheMetricsAndEventsBackToItsStep_EveryStepOnce()
    {
        var dir = TestPaths.TempDir("cut");
        var cfg = Cfg(dir, maxSteps: 6, saveSteps: 2);
        Train(cfg, stopAfter: 5);   // preempted after step 5; the last checkpoint is step 4
        Assert.Equal([1, 2, 3, 4, 5], MetricSteps(dir));

        Train(Resume(cfg));
        Assert.Equal([1, 2, 3, 4, 5, 6], MetricSteps(dir));
        var events = Directory.GetFiles(Path.Combine(dir, TensorBoardTracker.SubDir))
            .SelectMany(f => TensorBoardEventReader.ReadEvents(f)).Where(e => e.Scalars.Count > 0).Select(e => e.Step).Order();
        Assert.Equal([1L, 2L, 3L, 4L, 5L, 6L], events);
    }

    [Fact]
    public void UnreadableCheckpointsAreSkippedByLatestWithAWarningAndNamedWhenAskedFor()
    {
        var dir = TestPaths.TempDir("corrupt");
        var cfg = Cfg(dir, maxSteps: 6, saveSteps: 2);
        Train(cfg);
        var ck2 = CheckpointManager.PathFor(dir, 2);
        var ck4 = CheckpointManager.PathFor(dir, 4);
        var ck6 = CheckpointManager.PathFor(dir, 6);
        File.WriteAllText(Path.Combine(ck6, "metadata.json"), "");                      // empty
        File.WriteAllText(Path.Combine(ck4, "training_state.json"), "{\"optimizers\": ");  // cut short

        var warnings = new List<string>();
        Assert.Equal(ck2, CheckpointManager.ResolveResume("latest", dir, warnings.Add));
        Assert.Equal(2, warnings.Count);
        Assert.Contains($"'{ck6}'", warnings[0]);
        Assert.Contains("metadata.json", warnings[0]);
        Assert.Contains($"'{ck4}'", warnings[1]);
        Assert.Contains("training_state.json", warnings[1]);

        var e = Assert.Throws<StorageError>(() => CheckpointManager.ResolveResume(ck6, dir));
        Assert.Contains($"'{ck6}' cannot be loaded", e.Message);
        Assert.Contains("metadata.json", e.Message);

        // Resuming from latest continues from step 2; the unreadable later ones are set aside, not deleted, and not
        // in the way of the new run's own checkpoints.
        var (_, console) = Train(Resume(Cfg(dir, maxSteps: 4, saveSteps: 2, keepLast: 1)));
        Assert.Contains($"skipping the checkpoint '{ck6}'", console);
        Assert.Contains("resumed from", console);
        Assert.Equal([4], CheckpointManager.List(dir).Select(c => c.Step));
        Assert.Equal(2, Directory.GetDirectories(dir, "checkpoint-*.superseded-*").Length);
        Assert.Equal([1, 2, 3, 4], MetricSteps(dir));
    }

    [Fact]
    public void StaleTemporaryCheckpointFoldersAreRemovedAtStartAndWhenPruning()
    {
        var dir = TestPaths.TempDir("stale");
        var cfg = Cfg(dir, maxSteps: 2, saveSteps: 2);
        Train(cfg);
        var stale = Path.Combine(dir, $"checkpoint-3.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path.Combine(stale, "student"));
        File.WriteAllBytes(Path.Combine(stale, "student", "junk"), new byte[1000]);
        var staleFile = Path.Combine(dir, $".metrics.jsonl.{Guid.NewGuid():N}.tmp");
        File.WriteAllText(staleFile, "x");
        var notOurs = Path.Combine(dir, "checkpoint-3.tmp-notes");   // not our naming: left alone
        Directory.CreateDirectory(notOurs);

        var (_, console) = Train(Resume(Cfg(dir, maxSteps: 4, saveSteps: 2)));
        Assert.False(Directory.Exists(stale));
        Assert.False(File.Exists(staleFile));
        Assert.True(Directory.Exists(notOurs));
        Assert.Contains($"removed '{stale}'", console);

        // A crash leftover that appears during the run goes with the next prune.
        var during = Path.Combine(dir, $"checkpoint-5.tmp-{Guid.NewGuid():N}");
        Train(Resume(Cfg(dir, maxSteps: 6, saveSteps: 1, keepLast: 2)), prepare: t => t.Checkpoints.AfterPublished = path =>
        {
            if (path.EndsWith("checkpoint-5")) Directory.CreateDirectory(during);
        });
        Assert.False(Directory.Exists(during));
        Assert.Equal([5, 6], CheckpointManager.List(dir).Select(c => c.Step));
    }

    [Fact]
    public void AnOutputDirThatIsAFileIsOneMessage()
    {
        var file = Path.Combine(TestPaths.TempDir("file"), "run");
        File.WriteAllText(file, "not a folder");
        var e = Assert.Throws<StorageError>(() => Train(Cfg(file)));
        Assert.Equal($"training.checkpoint.output_dir: '{file}' is a file; expected a folder (or a path that does not exist yet)", e.Message);
        Assert.Equal("not a folder", File.ReadAllText(file));
    }

    [SkippableFact]
    public void AReadOnlyFolderIsOneMessage()
    {
        using var ro = Tmpfs.Mount(1 << 20, readOnly: true);
        var e = Assert.Throws<StorageError>(() => Train(Cfg(Path.Combine(ro.Path, "run"))));
        Assert.Contains(Path.Combine(ro.Path, "run"), e.Message);
        Assert.Contains("Read-only file system", e.Message);
    }

    [SkippableFact]
    public void DiskFullOnASmallTmpfs_ClearMessage_PreviousCheckpointLoads_ResumeIsBitForBit()
    {
        // The reference: the same run on a roomy disk, measuring how big one checkpoint is.
        var reference = TestPaths.TempDir("roomy");
        Train(Cfg(reference, maxSteps: 4, saveSteps: 1));
        long checkpointBytes = new DirectoryInfo(CheckpointManager.PathFor(reference, 1)).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);

        // Room for the run's small files and two and a half checkpoints: the third checkpoint cannot be written.
        using var fs = Tmpfs.Mount(256 * 1024 + checkpointBytes * 5 / 2, readOnly: false);
        var dir = Path.Combine(fs.Path, "run");
        var cfg = Cfg(dir, maxSteps: 4, saveSteps: 1);
        var e = Assert.Throws<StorageError>(() => Train(cfg));
        Assert.Contains("No space left on device", e.Message);
        Assert.Contains(dir, e.Message);
        Assert.Equal(ExitCodes.Storage, e.ExitCode);
        var last = CheckpointManager.ResolveResume("latest", dir);
        Assert.NotNull(last);
        Assert.Null(CheckpointManager.Problem(last!));                            // the previous checkpoint loads
        Assert.Empty(CheckpointManager.StaleFolders(dir));                        // the failed one left nothing

        fs.Resize(64 << 20);   // the user frees space
        Train(Resume(cfg));
        Assert.Equal([1, 2, 3, 4], MetricSteps(dir));
        AssertSameWeights(CheckpointManager.PathFor(reference, 4), CheckpointManager.PathFor(dir, 4));
    }

    /// <summary>A finetune recipe on the synthetic parquet data, as `fastvideo train` reads it.</summary>
    private static (string Recipe, string Output) CliRecipe(string prefix, int maxSteps, int saveSteps)
    {
        var root = TestPaths.TempDir(prefix);
        var (data, model) = TrainFixture.SyntheticDataAndModel(root);
        var output = Path.Combine(root, "run");
        var recipe = Path.Combine(root, "recipe.yaml");
        File.WriteAllText(recipe, $$"""
            recipe: {family: wan, method: finetune}
            roles:
              student: {init_from: "{{model}}"}
            training:
              data: {data_path: "{{data}}", train_batch_size: 1, seed: 7}
              optimizer: {learning_rate: 1.0e-3}
              loop: {max_train_steps: {{maxSteps}}}
              checkpoint: {output_dir: "{{output}}", training_state_checkpointing_steps: {{saveSteps}}}
            pipeline: {text_len: 6}
            """);
        return (recipe, output);
    }

    [Fact]
    public void KilledWithSigkillAtSeveralMomentsAndResumed_EveryStepOnceAndBitForBit()
    {
        var (recipe, output) = CliRecipe("sigkill", maxSteps: 8, saveSteps: 2);
        var reference = output + "-reference";
        var rc = FastVideo.Cli.Cli.Run(["train", recipe, "--set", $"training.checkpoint.output_dir={reference}"], TextWriter.Null, TextWriter.Null);
        Assert.Equal(0, rc);

        // The built CLI beside the tests, killed (SIGKILL) as soon as it prints the line that marks each moment:
        // right after a step's line (mid-checkpoint or just before it), right after a checkpoint is published.
        var cli = Path.Combine(AppContext.BaseDirectory, "FastVideo.Cli");
        string[] moments = ["step 2/8", "saved", "step 5/8", "step 6/8"];
        int kills = 0;
        foreach (var moment in moments)
        {
            var psi = new ProcessStartInfo(cli, ["train", recipe, "--set", "training.checkpoint.resume_from_checkpoint=latest"])
                { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            string? line;
            while ((line = p.StandardOutput.ReadLine()) is not null)
                if (line.StartsWith(moment, StringComparison.Ordinal)) { p.Kill(); kills++; break; }
            p.WaitForExit();
        }
        Assert.True(kills >= 3, $"only {kills} of the runs were killed");
        Assert.Equal(0, FastVideo.Cli.Cli.Run(["train", recipe, "--set", "training.checkpoint.resume_from_checkpoint=latest"], TextWriter.Null, TextWriter.Null));

        Assert.Equal([1, 2, 3, 4, 5, 6, 7, 8], MetricSteps(output));
        var tb = TensorBoardEventReader.View(Path.Combine(output, TensorBoardTracker.SubDir))["total_loss"];
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i), tb.Keys);
        AssertSameWeights(CheckpointManager.PathFor(reference, 8), CheckpointManager.PathFor(output, 8));
        // The losses of the killed-and-resumed run are the reference's, step by step.
        Assert.Equal(File.ReadAllLines(Path.Combine(reference, JsonlTracker.FileName)).Select(l => JsonNode.Parse(l)!["total_loss"]!.GetValue<double>()),
            File.ReadAllLines(Path.Combine(output, JsonlTracker.FileName)).Select(l => JsonNode.Parse(l)!["total_loss"]!.GetValue<double>()));
    }

    [Fact]
    public void CliReportsRunFolderAndStorageFailuresAsOneLineWithTheirExitCodes()
    {
        var (recipe, output) = CliRecipe("cli", maxSteps: 2, saveSteps: 2);
        (int Code, string Err) Cli(params string[] args)
        {
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            int code = FastVideo.Cli.Cli.Run(args, stdout, stderr);
            return (code, stderr.ToString());
        }

        var first = Cli("train", recipe);
        Assert.True(first.Code == 0, first.Err);
        var (code, err) = Cli("train", recipe);
        Assert.Equal(ExitCodes.RunFolder, code);
        Assert.StartsWith("error: training.checkpoint.output_dir:", err);
        Assert.DoesNotContain("   at ", err);   // no stack trace
        var over = Cli("train", recipe, "--overwrite");                     // the CLI flag reaches the trainer
        Assert.True(over.Code == 0, over.Err);
        var aside = Assert.Single(Directory.GetDirectories(Path.GetDirectoryName(output)!, "run.previous-*"));
        Assert.True(Directory.Exists(CheckpointManager.PathFor(aside, 2)));

        Directory.Move(output, output + ".moved");
        File.WriteAllText(output, "a file");
        (code, err) = Cli("train", recipe);
        Assert.Equal(ExitCodes.Storage, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", err);

        File.Delete(output);
        Directory.Move(output + ".moved", output);
        File.WriteAllText(Path.Combine(output, "checkpoint-2", "metadata.json"), "{");
        (code, err) = Cli("train", recipe, "--set", $"training.checkpoint.resume_from_checkpoint={Path.Combine(output, "checkpoint-2")}");
        Assert.Equal(ExitCodes.Storage, code);
        Assert.Contains("checkpoint-2' cannot be loaded: metadata.json", err);
        Assert.DoesNotContain("   at ", err);
    }
}

/// <summary>A tmpfs of a given size mounted for one test (needs root); the test is skipped where mounting fails.</summary>
internal sealed class Tmpfs : IDisposable
{
    public string Path { get; }
    private Tmpfs(string path) => Path = path;

    public static Tmpfs Mount(long bytes, bool readOnly)
    {
        var dir = TestPaths.TempDir("tmpfs");
        long size = (bytes + 4095) / 4096 * 4096;
        var (code, err) = Run("mount", "-t", "tmpfs", "-o", $"size={size}{(readOnly ? ",ro" : "")}", "tmpfs", dir);
        Skip.If(code != 0, $"cannot mount a tmpfs here (needs root): {err.Trim()}");
        return new Tmpfs(dir);
    }

    public void Resize(long bytes)
    {
        var (code, err) = Run("mount", "-o", $"remount,size={bytes}", Path);
        Assert.True(code == 0, err);
    }

    public void Dispose() => Run("umount", "-l", Path);

    private static (int Code, string Err) Run(string file, params string[] args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            var err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode, err);
        }
        catch (System.ComponentModel.Win32Exception e) { return (-1, e.Message); }
    }
}

using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using FastVideo.Train;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using FastVideo.Train.Tracking;
using Xunit;
using Reader = FastVideo.Tests.Train.TensorBoardEventReader;

namespace FastVideo.Tests.Train;

public class TensorBoardTrackerTests
{
    private static Dictionary<string, double> M(params (string K, double V)[] kv) => kv.ToDictionary(p => p.K, p => p.V);

    private static string OnlyFile(string runDir) => Assert.Single(Directory.GetFiles(Path.Combine(runDir, TensorBoardTracker.SubDir)));

    [Fact]
    public void Crc32CMatchesKnownVectors()
    {
        // "123456789" is the CRC catalogue's check value; the 32-byte ones are RFC 3720 (iSCSI) B.4.
        var vectors = new (byte[] Data, uint Crc)[]
        {
            (Encoding.ASCII.GetBytes("123456789"), 0xE3069283),
            (new byte[32], 0x8A9136AA),
            (Enumerable.Repeat((byte)0xFF, 32).ToArray(), 0x62A8AB43),
            (Enumerable.Range(0, 32).Select(i => (byte)i).ToArray(), 0x46DD794E),
            ([], 0),
        };
        foreach (var (data, crc) in vectors)
        {
            Assert.Equal(crc, Reader.Crc32C(data));
            Assert.Equal(crc, TensorBoardEvents.Crc32C(data));
        }
        var random = new byte[1000];
        new Random(3).NextBytes(random);
        Assert.Equal(Reader.Crc32C(random), TensorBoardEvents.Crc32C(random));
    }

    [Fact]
    public void StepsReadBackWithTagsValuesAndSteps()
    {
        var dir = TestPaths.TempDir("tb");
        double before = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0 - 1;
        using (var t = new TensorBoardTracker(dir))
        {
            t.Log(1, M(("total_loss", 0.5), ("lr/student", 1e-3), ("time/data", 0.0123)));
            t.Log(2, M(("total_loss", 0.25), ("lr/student", 1e-3), ("time/data", 0.02)));
            t.Log(300, M(("total_loss", -1.5e30), ("lr/student", 0), ("grad_norm/student", 12345.678)));
        }
        double after = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0 + 1;

        var file = OnlyFile(dir);
        Assert.Matches(new Regex(@"^events\.out\.tfevents\.\d{10}\.[^/\\]+$"), Path.GetFileName(file));
        var events = Reader.ReadEvents(file);
        Assert.Equal(5, events.Count);
        Assert.Equal("brain.Event:2", events[0].FileVersion);
        Assert.Empty(events[0].Scalars);
        // A fresh run opens a session at step 1: it hides what an earlier run left in the folder.
        Assert.Equal((1, 1L), (events[1].SessionStatus, events[1].Step));
        Assert.All(events, e => Assert.InRange(e.WallTime, before, after));

        Assert.Equal([1L, 2L, 300L], events.Skip(2).Select(e => e.Step));
        Assert.Equal([("total_loss", 0.5f), ("lr/student", 1e-3f), ("time/data", 0.0123f)], events[2].Scalars);
        Assert.Equal([("total_loss", 0.25f), ("lr/student", 1e-3f), ("time/data", 0.02f)], events[3].Scalars);
        Assert.Equal([("total_loss", -1.5e30f), ("lr/student", 0f), ("grad_norm/student", 12345.678f)], events[4].Scalars);
        Assert.All(events.Skip(2), e => Assert.Null(e.SessionStatus));
    }

    [Fact]
    public void NonFiniteValuesAreKept()
    {
        var dir = TestPaths.TempDir("tb");
        using (var t = new TensorBoardTracker(dir))
            t.Log(1, M(("nan", double.NaN), ("inf", double.PositiveInfinity), ("ninf", double.NegativeInfinity), ("big", 1e300)));
        var values = Reader.ReadEvents(OnlyFile(dir))[2].Scalars;
        Assert.True(float.IsNaN(values[0].Value));
        Assert.Equal(float.PositiveInfinity, values[1].Value);
        Assert.Equal(float.NegativeInfinity, values[2].Value);
        Assert.Equal(float.PositiveInfinity, values[3].Value);   // beyond float32: TensorBoard scalars are float32
    }

    [Fact]
    public void ImagesReadBackWithTheirBytesAndSizeAndAreCutBackOnResume()
    {
        var dir = TestPaths.TempDir("tb");
        var gif = FastVideo.Data.GifWriter.Encode([new byte[2 * 3 * 3], Enumerable.Repeat((byte)200, 2 * 3 * 3).ToArray()], width: 2, height: 3, fps: 4, scale: 5);
        string first;
        using (var t = new TensorBoardTracker(dir))
        {
            first = t.FilePath;
            t.Log(1, M(("loss", 1)));
            t.LogImages(2, [TrackedImage.FromGif("val/a", gif), TrackedImage.FromGif("val/b", gif)]);
            t.Log(2, M(("loss", 2)));
            t.LogImages(3, []);   // nothing to write
            t.LogImages(4, [TrackedImage.FromGif("val/a", gif)]);
        }
        var events = Reader.ReadEvents(first);
        Assert.Equal(6, events.Count);   // version, session start, step 1, step 2's images, step 2's scalars, step 4's images
        var withImages = events.Where(e => e.Images.Count > 0).ToList();
        Assert.Equal([2L, 4L], withImages.Select(e => e.Step));
        Assert.Equal(["val/a", "val/b"], withImages[0].Images.Select(i => i.Tag));
        foreach (var im in withImages.SelectMany(e => e.Images))
        {
            Assert.Equal((3 * 5, 2 * 5, 3), (im.Height, im.Width, im.Colorspace));
            Assert.Equal(gif, im.Encoded);
        }
        Assert.Empty(withImages[0].Scalars);

        // A resume from step 2 cuts step 4's images from the earlier file, as it does scalars.
        using (new TensorBoardTracker(dir, startStep: 2)) { }
        Assert.Equal([2L], Reader.ReadEvents(first).Where(e => e.Images.Count > 0).Select(e => e.Step));
    }

    [Fact]
    public void EachStepIsOnDiskBeforeTheTrackerCloses()
    {
        var dir = TestPaths.TempDir("tb");
        using var t = new TensorBoardTracker(dir);
        t.Log(1, M(("loss", 1)));
        Assert.Equal([1L], Reader.ReadEvents(t.FilePath).Skip(2).Select(e => e.Step));
        t.Log(2, M(("loss", 2)));
        Assert.Equal([1L, 2L], Reader.ReadEvents(t.FilePath).Skip(2).Select(e => e.Step));
    }

    [Fact]
    public void ResumeCutsTheEarlierFilesBackToItsStepAndWritesANewFile()
    {
        var dir = TestPaths.TempDir("tb");
        string first;
        using (var t = new TensorBoardTracker(dir))
        {
            first = t.FilePath;
            for (int s = 1; s <= 4; s++) t.Log(s, M(("loss", s)));
        }
        string second;
        using (var t = new TensorBoardTracker(dir, startStep: 2))   // same second as the first, most likely
        {
            second = t.FilePath;
            for (int s = 3; s <= 5; s++) t.Log(s, M(("loss", 10 * s)));
        }

        Assert.NotEqual(first, second);
        Assert.True(string.CompareOrdinal(Path.GetFileName(first), Path.GetFileName(second)) < 0, "the resumed file must sort last");
        // The interrupted run's steps after the resumed step are gone from its file: every step is in the events once.
        Assert.Equal([1L, 2L], Reader.ReadEvents(first).Skip(2).Select(e => e.Step));
        var start = Reader.ReadEvents(second)[1];
        Assert.Equal((1, 3L), (start.SessionStatus, start.Step));

        var loss = Reader.View(Path.Combine(dir, TensorBoardTracker.SubDir))["loss"];
        Assert.Equal([(1L, 1f), (2L, 2f), (3L, 30f), (4L, 40f), (5L, 50f)], loss.Select(p => (p.Key, p.Value)));
    }

    [Fact]
    public void DefaultTrackersAreJsonlAndTensorBoard()
    {
        var dir = TestPaths.TempDir("tb");
        var cfg = TrainFixture.Config(dir);
        List<ITracker> With(params string[] names) =>
            Trackers.Create(cfg with { Training = cfg.Training with { Tracker = cfg.Training.Tracker with { Trackers = names } } }, dir, 0);

        var all = With();
        Assert.Collection(all, t => Assert.IsType<JsonlTracker>(t), t => Assert.IsType<TensorBoardTracker>(t));
        var jsonlOnly = With("jsonl");
        Assert.IsType<JsonlTracker>(Assert.Single(jsonlOnly));
        var tb = With("tensorboard");   // JSON lines are always written
        Assert.Collection(tb, t => Assert.IsType<JsonlTracker>(t), t => Assert.IsType<TensorBoardTracker>(t));
        foreach (var t in all.Concat(jsonlOnly).Concat(tb)) t.Dispose();

        var e = Assert.Throws<UserError>(() => With("jsonl", "wandb"));
        Assert.Contains("training.tracker.trackers[1]", e.Message);
        Assert.Contains("jsonl, tensorboard", e.Message);
    }

    [Fact]
    public void TrainerRunAndResumeMatchTheJsonLines()
    {
        var dir = TestPaths.TempDir("tb");
        var cfg = TrainFixture.Config(dir, maxSteps: 4, saveSteps: 2);
        using (var m = TrainingBuilder.Build(cfg))
        using (var t = new Trainer(m, new RandomBatchSource(), console: TextWriter.Null)) t.Run();
        var resumed = cfg with { Training = cfg.Training with { Checkpoint = cfg.Training.Checkpoint with { ResumeFromCheckpoint = CheckpointManager.PathFor(dir, 2) } } };
        using (var m = TrainingBuilder.Build(resumed))
        using (var t = new Trainer(m, new RandomBatchSource(seed: 8), console: TextWriter.Null)) t.Run();   // other data: other losses after step 2

        var tbDir = Path.Combine(dir, TensorBoardTracker.SubDir);
        Assert.Equal(2, Directory.GetFiles(tbDir).Length);
        var view = Reader.View(tbDir);
        var lines = File.ReadAllLines(Path.Combine(dir, JsonlTracker.FileName)).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        Assert.Equal([1, 2, 3, 4], lines.Select(n => n["step"]!.GetValue<int>()));
        foreach (var line in lines)
        {
            int step = line["step"]!.GetValue<int>();
            foreach (var (key, node) in line.Where(p => p.Key != "step"))
                Assert.Equal((float)node!.GetValue<double>(), view[key][step]);
        }
        Assert.Equal(lines.Count, view["total_loss"].Count);
    }
}

// Compares TorchSharp's torch.utils.tensorboard.SummaryWriter with FastVideo's TensorBoardTracker on what a training
// run needs: per-step durability, file naming, wall times, cost per step, resume, and images/video.
//   dotnet run -c Release --project bench/TensorBoardProbe -- [STEPS]
// Results: bench/results/tensorboard-summarywriter-2026-12-03.md.
using System.Diagnostics;
using FastVideo.Native;
using FastVideo.Tests.Train;
using FastVideo.Train.Tracking;
using static TorchSharp.torch;

TorchSharpLoader.EnsureLoaded();
int steps = args.Length > 0 ? int.Parse(args[0]) : 1000;
var root = Path.Combine(Path.GetTempPath(), $"fv-tbprobe-{Guid.NewGuid():N}");
// The metrics of one DMD2 step line: 3 losses, 2 grad norms, 2 lrs, timings.
string[] tags = ["total_loss", "generator_loss", "fake_score_loss", "grad_norm/student", "grad_norm/critic", "lr/student", "lr/critic",
    "time/data", "time/forward", "time/backward", "time/optimizer", "time/callbacks", "time/checkpoint", "time/validation", "step_time_sec", "update_student"];
double Value(int step, int i) => Math.Sin(step * 0.01 + i) + i;
Console.WriteLine($"TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version}, {steps} steps x {tags.Length} scalars, {Environment.ProcessorCount} cores");
Console.WriteLine($"Google.Protobuf loaded from: {typeof(Google.Protobuf.IMessage).Assembly.Location}");

// 1. SummaryWriter: scalars, one add_scalar per metric (its API: one value per call).
var swDir = Path.Combine(root, "summarywriter");
var writer = TorchSharp.torch.utils.tensorboard.SummaryWriter(swDir);
var swFile = Directory.GetFiles(swDir).Single();
Console.WriteLine($"SummaryWriter file name: {Path.GetFileName(swFile)}");
var sw = Stopwatch.StartNew();
bool durable = true;
for (int s = 1; s <= steps; s++)
{
    for (int i = 0; i < tags.Length; i++) writer.add_scalar(tags[i], (float)Value(s, i), s, walltime: null);
    // Durable per step? Read the file back while the writer is "open" (it opens and closes the file per event).
    if (s <= 3 && TensorBoardEventReader.ReadEvents(swFile).Count != 1 + s * tags.Length) durable = false;
}
double swSeconds = sw.Elapsed.TotalSeconds;
Console.WriteLine($"SummaryWriter: {swSeconds * 1000 / steps:0.000} ms per step, file {new FileInfo(swFile).Length / 1024.0:0.0} KiB, each step readable right after it: {durable}");
try
{
    var events = TensorBoardEventReader.ReadEvents(swFile);
    Console.WriteLine($"  test reader decodes it: {events.Count} events; first: file_version={events[0].FileVersion} wall_time={events[0].WallTime:R}; " +
                      $"second: step={events[1].Step} wall_time={events[1].WallTime:R} scalars={string.Join(",", events[1].Scalars)}");
    Console.WriteLine($"  wall_time as a date if read as Unix seconds (as TensorBoard does): {DateTimeOffset.UnixEpoch.AddSeconds(Math.Min(events[1].WallTime, 253402300799)):u}");
    var view = TensorBoardEventReader.View(swDir);
    Console.WriteLine($"  view: {view.Count} tags, total_loss has {view["total_loss"].Count} steps, max abs error {view["total_loss"].Max(kv => Math.Abs(kv.Value - (float)Value((int)kv.Key, 0))):G3}");
}
catch (Exception e) { Console.WriteLine($"  test reader fails: {e.GetType().Name}: {e.Message}"); }

// Default walltime argument (0) instead of null.
var defDir = Path.Combine(root, "default-walltime");
var w2 = TorchSharp.torch.utils.tensorboard.SummaryWriter(defDir);
w2.add_scalar("loss", 1f, 1);
Console.WriteLine($"  add_scalar with the default walltime argument: wall_time={TensorBoardEventReader.ReadEvents(Directory.GetFiles(defDir).Single())[1].WallTime}");

// add_scalars: where does it write?
var msDir = Path.Combine(root, "add_scalars");
var w3 = TorchSharp.torch.utils.tensorboard.SummaryWriter(msDir);
w3.add_scalars("loss", new Dictionary<string, float> { ["generator"] = 1f, ["critic"] = 2f }, 1, walltime: null);
foreach (var f in Directory.GetFiles(msDir, "*", SearchOption.AllDirectories).Order())
{
    var ev = TensorBoardEventReader.ReadEvents(f);
    Console.WriteLine($"  add_scalars wrote {Path.GetRelativePath(msDir, f)}: {string.Join("; ", ev.Skip(1).Select(e => string.Join(",", e.Scalars)))}");
}

// 2. FastVideo's TensorBoardTracker: one event per step with every metric, flushed per step.
var trDir = Path.Combine(root, "tracker");
sw.Restart();
using (var t = new TensorBoardTracker(trDir))
    for (int s = 1; s <= steps; s++)
        t.Log(s, tags.Select((k, i) => new KeyValuePair<string, double>(k, Value(s, i))).ToDictionary());
double trSeconds = sw.Elapsed.TotalSeconds;
var trFile = Directory.GetFiles(Path.Combine(trDir, TensorBoardTracker.SubDir)).Single();
Console.WriteLine($"TensorBoardTracker: {trSeconds * 1000 / steps:0.000} ms per step, file {new FileInfo(trFile).Length / 1024.0:0.0} KiB, name {Path.GetFileName(trFile)}");

// 3. Images and video.
foreach (var (what, act) in new (string, Action)[]
{
    ("add_img [3,8,8]", () => writer.add_img("val/image", rand(3, 8, 8), 1, walltime: null)),
    ("add_video [1,4,3,8,8]", () => writer.add_video("val/video", rand([1, 4, 3, 8, 8]), 1, fps: 4, walltime: null)),
    // add_text writes a tensor summary (Summary.Value field 8) that the tests' reader rejects: keep it apart.
    ("add_text (own folder)", () => TorchSharp.torch.utils.tensorboard.SummaryWriter(Path.Combine(root, "text")).add_text("note", "hello", 1, walltime: null)),
})
{
    try { act(); Console.WriteLine($"{what}: ok"); }
    catch (Exception e)
    {
        var inner = e; while (inner.InnerException is not null) inner = inner.InnerException;
        Console.WriteLine($"{what}: {e.GetType().Name}: {e.Message.Split('\n')[0]} / innermost {inner.GetType().Name}: {inner.Message.Split('\n')[0]}");
    }
}
try
{
    var events = TensorBoardEventReader.ReadEvents(swFile);
    Console.WriteLine($"  test reader after image/video/text: {events.Count} events");
    foreach (var im in events.SelectMany(e => e.Images.Select(i => (e.Step, i))))
        Console.WriteLine($"  image at step {im.Step}: tag {im.i.Tag}, {im.i.Width}x{im.i.Height}, colorspace {im.i.Colorspace}, " +
                          $"{im.i.Encoded.Length} bytes starting '{System.Text.Encoding.ASCII.GetString(im.i.Encoded, 0, 6).Replace('\0', '.')}'");
}
catch (Exception e) { Console.WriteLine($"  test reader after image/video/text: {e.GetType().Name}: {e.Message}"); }

// 4. The same clip through FastVideo's writer: the GIF that validation writes, as an image event.
var clip = rand([3, 4, 8, 8]) * 2 - 1;   // [C, T, H, W] in [-1, 1], as validation's identity-VAE samples
var gifPath = Path.Combine(root, "clip.gif");
FastVideo.Data.GifWriter.Write(gifPath, clip, fps: 4, scale: 16);
var imDir = Path.Combine(root, "tracker-images");
using (var t = new TensorBoardTracker(imDir))
    t.LogImages(1, [TrackedImage.FromGif("val/clip", File.ReadAllBytes(gifPath))]);
var ours = TensorBoardEventReader.ReadEvents(Directory.GetFiles(Path.Combine(imDir, TensorBoardTracker.SubDir)).Single())[^1].Images.Single();
Console.WriteLine($"TensorBoardTracker.LogImages: tag {ours.Tag}, {ours.Width}x{ours.Height}, {ours.Encoded.Length} bytes starting " +
                  $"'{System.Text.Encoding.ASCII.GetString(ours.Encoded, 0, 6)}', equal to the file: {ours.Encoded.SequenceEqual(File.ReadAllBytes(gifPath))}");
Directory.Delete(root, true);

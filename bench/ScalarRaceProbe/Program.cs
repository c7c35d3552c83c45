// Measures TorchSharp's Scalar race and what the Scalar guard costs. Each run does tiny tensor ops (each makes a
// Scalar: `a + b` carries a hidden alpha = 1) for a fixed time, optionally with a second thread forcing gen-0 GCs
// so that Scalar finalizers run while ops are in flight. Run it with FASTVIDEO_SCALAR_GUARD=off and without to
// compare: errors counts the "toFloat" failures, ops/s the throughput.
//   dotnet run -c Release --project bench/ScalarRaceProbe -- SECONDS [hammer|plain]
using System.Diagnostics;
using FastVideo.Native;
using static TorchSharp.torch;

TorchSharpLoader.EnsureLoaded();
double seconds = args.Length > 0 ? double.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 10;
bool hammer = args.Length < 2 || args[1] == "hammer";
var a = randn(8, 8); var b = randn(8, 8);
bool stop = false;
long gcs = 0;
var gcThread = new Thread(() =>
{
    while (!Volatile.Read(ref stop))
    {
        GC.Collect(0, GCCollectionMode.Forced, blocking: false);
        Thread.SpinWait(20000);
        Interlocked.Increment(ref gcs);
    }
});
if (hammer) gcThread.Start();
long ops = 0, errors = 0; string? first = null;
var sw = Stopwatch.StartNew();
while (sw.Elapsed.TotalSeconds < seconds)
{
    using var scope = NewDisposeScope();
    for (int i = 0; i < 1000; i++)
    {
        try { var c = a + b; c = c.add(b, 0.5); c = c * 2.0; ops += 3; }
        catch (Exception e) { errors++; first ??= e.Message.Split('\n')[0]; }
    }
}
double elapsed = sw.Elapsed.TotalSeconds;
Volatile.Write(ref stop, true);
if (hammer) gcThread.Join();
var (parked, freed, waiting) = ScalarGuard.Stats();
Console.WriteLine($"guard {(ScalarGuard.IsActive ? "on" : "off (" + ScalarGuard.InactiveReason + ")")}, mode {(hammer ? "hammer" : "plain")}: " +
    $"{ops} ops in {elapsed:F1} s ({ops / elapsed / 1000:F0}k ops/s), forced GCs {gcs}, errors {errors}; " +
    $"scalars parked {parked}, freed {freed}, waiting {waiting}{(first is null ? "" : "; first error: " + first)}");

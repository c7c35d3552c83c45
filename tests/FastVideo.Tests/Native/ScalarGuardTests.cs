using Xunit;
using FastVideo.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Tests.Native;

public class ScalarGuardTests
{
    [SkippableFact]
    public void GuardIsBuiltAndBoundOnLinux()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the guard is built on Linux only");
        Skip.If(Environment.GetEnvironmentVariable("FASTVIDEO_SCALAR_GUARD") == "off", "FASTVIDEO_SCALAR_GUARD=off");
        Assert.True(ScalarGuard.IsActive, ScalarGuard.InactiveReason);
    }

    [Fact]
    public void AChainedResolverSendsTorchSharpsWrapperToTheGuardAndEverythingElseToTheEarlierResolver()
    {
        var asked = new List<string>();
        var chained = ScalarGuard.Chain(new IntPtr(0x1234), (name, _, _) => { asked.Add(name); return new IntPtr(0x5678); });
        Assert.Equal(new IntPtr(0x1234), chained("LibTorchSharp", typeof(ScalarGuardTests).Assembly, null));
        Assert.Equal(new IntPtr(0x5678), chained("libmpich", typeof(ScalarGuardTests).Assembly, null));
        Assert.Equal(["libmpich"], asked);
    }

    [Fact]
    public void BindChainsInFrontOfAResolverThatTookTheSlotFirst()
    {
        // A fresh assembly whose slot another component has already taken.
        var context = new System.Runtime.Loader.AssemblyLoadContext("fv_resolver_probe", isCollectible: true);
        var assembly = context.LoadFromAssemblyPath(typeof(Xunit.SkippableFactAttribute).Assembly.Location);   // a private copy
        System.Runtime.InteropServices.NativeLibrary.SetDllImportResolver(assembly, (name, _, _) => name == "other" ? new IntPtr(7) : IntPtr.Zero);
        Assert.True(ScalarGuard.Bind(assembly, new IntPtr(0x1234), out var reason), reason);
        var table = (System.Runtime.CompilerServices.ConditionalWeakTable<System.Reflection.Assembly, System.Runtime.InteropServices.DllImportResolver>)
            typeof(System.Runtime.InteropServices.NativeLibrary).GetField("s_nativeDllResolveMap",
                System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!.GetValue(null)!;
        Assert.True(table.TryGetValue(assembly, out var now));
        Assert.Equal(new IntPtr(0x1234), now!("LibTorchSharp", assembly, null));
        Assert.Equal(new IntPtr(7), now("other", assembly, null));
    }

    [SkippableFact]
    public void DisposedScalarIsParkedThenFreedAfterTheGracePeriod()
    {
        Skip.IfNot(ScalarGuard.IsActive, $"the Scalar guard is off: {ScalarGuard.InactiveReason}");
        var before = ScalarGuard.Stats();
        var s = 3.5.ToScalar();
        using (var t = ones(2).mul(s)) Assert.Equal(3.5f, t[1].item<float>());
        s.Dispose();
        var parked = ScalarGuard.Stats();
        Assert.True(parked.Parked > before.Parked, $"parked {parked.Parked}, before {before.Parked}");
        // Expired entries are released on a later disposal, once the 0.5 s grace period has passed.
        Thread.Sleep(700);
        1.0.ToScalar().Dispose();
        var after = ScalarGuard.Stats();
        Assert.True(after.Freed >= parked.Parked, $"freed {after.Freed}, parked earlier {parked.Parked}");
    }

    [SkippableFact]
    public void TinyOpsSurviveGarbageCollectionsOnAnotherThread()
    {
        // Without the guard this loop fails a few times per second here ("Expected false to be true" from
        // Scalar::toFloat, bench/ScalarRaceProbe): the forced GCs finalize the hidden alpha Scalar of `a + b`
        // while libtorch reads it.
        Skip.IfNot(ScalarGuard.IsActive, $"the Scalar guard is off: {ScalarGuard.InactiveReason}");
        using var a = randn(8, 8);
        using var b = randn(8, 8);
        var stop = false;
        var gcThread = new Thread(() =>
        {
            while (!Volatile.Read(ref stop)) { GC.Collect(0, GCCollectionMode.Forced, blocking: false); Thread.SpinWait(20000); }
        });
        gcThread.Start();
        long ops = 0, errors = 0;
        string? first = null;
        var until = DateTime.UtcNow.AddSeconds(3);
        try
        {
            while (DateTime.UtcNow < until)
            {
                using var scope = NewDisposeScope();
                for (int i = 0; i < 500; i++)
                {
                    try { var c = (a + b).add(b, 0.5) * 2.0; ops++; }
                    catch (Exception e) { errors++; first ??= e.Message; }
                }
            }
        }
        finally { Volatile.Write(ref stop, true); gcThread.Join(); }
        Assert.True(errors == 0, $"{errors} errors in {ops} op chains; first: {first}");
    }
}

using FastVideo.Configs;
using FastVideo.Train;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Methods;
using FastVideo.Train.Models.Wan;
using FastVideo.Train.Tracking;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>Recipes and runs for the causal methods' tests: a wan_causal student on the tiny Wan fixture.</summary>
internal static class CausalMethodFixture
{
    public static readonly string Model = TestPaths.Fixture("wan_tiny");

    /// <summary>
    /// A run of <paramref name="method"/> with a wan_causal student (<paramref name="framesPerBlock"/>) and, for each of
    /// <paramref name="otherRoles"/>, a wan role on the same weights (frozen "teacher", trainable others); clips of
    /// <paramref name="frames"/> latent frames; fp32 compute; grad clipping at 1.
    /// </summary>
    public static RunConfig Config(string dir, string method, IReadOnlyDictionary<string, object?> options, int maxSteps = 3, int accum = 1,
        int saveSteps = 0, int frames = 4, int framesPerBlock = 2, string[]? otherRoles = null, int? localAttnSize = null)
    {
        var type = MethodRegistry.Default.OptionsType(method);
        var bound = (MethodOptions)RecipeLoader.BindOptions(type, options, "method");
        var cfg = TrainFixture.Config(dir, maxSteps: maxSteps, accum: accum, saveSteps: saveSteps, method: bound,
            callbacks: [TrainFixture.Callback("grad_clip", ("max_grad_norm", 1.0))]);
        var roles = new Dictionary<string, RoleConfig>
        {
            ["student"] = new WanCausalRoleConfig { InitFrom = Model, NumFramesPerBlock = framesPerBlock, LocalAttnSize = localAttnSize, Family = "wan_causal" },
        };
        foreach (var role in otherRoles ?? [])
            roles[role] = new RoleConfig { InitFrom = Model, Trainable = role != "teacher", Family = "wan" };
        return cfg with
        {
            Recipe = new RecipeSection { Family = "wan_causal", Method = method },
            Roles = roles,
            Training = cfg.Training with { Data = cfg.Training.Data with { NumLatentT = frames } },
        };
    }

    /// <summary>Builds and trains <paramref name="cfg"/> (stopping after <paramref name="stopAfter"/>) and returns each step's metrics.</summary>
    public static List<IReadOnlyDictionary<string, double>> Run(RunConfig cfg, int? stopAfter, Func<IBatchSource> data)
    {
        using var method = TrainingBuilder.Build(cfg);
        var memory = new MemoryTracker();
        using var source = data();
        using var trainer = new Trainer(method, source, trackers: [memory], console: TextWriter.Null);
        trainer.Run(stopAfter);
        return memory.Entries.Select(e => (IReadOnlyDictionary<string, double>)e.Metrics).ToList();
    }

    /// <summary>
    /// Four steps straight against two steps, a checkpoint, a fresh build resumed from it and two more: every metric
    /// in <paramref name="keys"/> equal to the bit. <paramref name="config"/> makes the run in a folder.
    /// </summary>
    public static List<IReadOnlyDictionary<string, double>> AssertResumesBitForBit(Func<string, RunConfig> config, string[] keys, Func<IBatchSource> data)
    {
        var straight = Run(config(TestPaths.TempDir("straight")), null, data);
        var dir = TestPaths.TempDir("resume");
        var first = config(dir);
        var part1 = Run(first, 2, data);
        Assert.Equal([2], CheckpointManager.List(dir).Select(c => c.Step));
        var second = first with { Training = first.Training with { Checkpoint = first.Training.Checkpoint with { ResumeFromCheckpoint = "latest" } } };
        var resumed = part1.Concat(Run(second, null, data)).ToList();
        Assert.Equal(straight.Count, resumed.Count);
        for (int i = 0; i < straight.Count; i++)
            foreach (var key in keys)
                Assert.True(BitConverter.DoubleToInt64Bits(straight[i][key]) == BitConverter.DoubleToInt64Bits(resumed[i][key]),
                    $"step {i + 1} {key}: {straight[i][key]:R} straight, {resumed[i][key]:R} resumed");
        return straight;
    }

    /// <summary>Clones of every trainable parameter's gradient of <paramref name="module"/> (zeros where none).</summary>
    public static List<Tensor> Grads(nn.Module module) =>
        module.parameters().Where(p => p.requires_grad).Select(p => p.grad is null ? zeros_like(p) : p.grad.detach().clone()).ToList();

    public static void ZeroGrads(nn.Module module)
    {
        foreach (var p in module.parameters()) p.grad = null;
    }

    /// <summary>Asserts two gradient lists agree to <paramref name="rtol"/> of the largest value of each.</summary>
    public static void AssertGradsClose(IReadOnlyList<Tensor> expected, IReadOnlyList<Tensor> actual, double rtol = 1e-4)
    {
        Assert.Equal(expected.Count, actual.Count);
        bool anyNonZero = false;
        for (int i = 0; i < expected.Count; i++)
        {
            double scale = expected[i].abs().max().item<float>();
            anyNonZero |= scale > 0;
            double err = (expected[i] - actual[i]).abs().max().item<float>();
            Assert.True(err <= rtol * Math.Max(scale, 1e-8), $"gradient {i}: max abs difference {err:E2}, largest value {scale:E2}");
        }
        Assert.True(anyNonZero, "every gradient is zero: the comparison says nothing");
    }
}

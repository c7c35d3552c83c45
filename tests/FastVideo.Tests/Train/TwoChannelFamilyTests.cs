using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Schedulers;
using FastVideo.Models.Vae;
using FastVideo.Train;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Tracking;
using FastVideo.Train.Utils;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>
/// A family whose conditioning is laid out differently from Wan's (text tokens plus a pooled vector, as
/// HunyuanVideo's LLaMA + CLIP) goes through the generic trainer, finetune and DMD2 with no change to generic code:
/// the seams carry named channels, and everything else the methods need comes through the plugin contract.
/// </summary>
public class TwoChannelFamilyTests
{
    private const int Channels = 4, TextDim = 6, PooledDim = 5;

    /// <summary>v = per-pixel linear over channels + (mean text token, pooled vector, timestep) broadcast over pixels.</summary>
    private sealed class PooledDiT : nn.Module<Tensor, Tensor, Tensor, Tensor, Tensor>
    {
        private readonly Linear proj_in, text_proj, pooled_proj, time_proj;

        public PooledDiT(ulong seed) : base(nameof(PooledDiT))
        {
            proj_in = nn.Linear(Channels, Channels);
            text_proj = nn.Linear(TextDim, Channels);
            pooled_proj = nn.Linear(PooledDim, Channels);
            time_proj = nn.Linear(1, Channels);
            RegisterComponents();
            using var g = new Generator(seed, CPU);
            using var _ = no_grad();
            foreach (var p in parameters()) p.copy_(randn(p.shape, generator: g) * 0.3);
        }

        /// <param name="x">[B,C,T,H,W]</param>
        public override Tensor forward(Tensor x, Tensor t, Tensor text, Tensor pooled)
        {
            var pixels = proj_in.forward(x.permute(0, 2, 3, 4, 1));                                       // [B,T,H,W,C]
            var cond = text_proj.forward(text.mean([1L])) + pooled_proj.forward(pooled) + time_proj.forward(t.reshape(-1, 1) / 1000.0);
            return (pixels + cond.reshape([-1, 1, 1, 1, Channels])).permute(0, 4, 1, 2, 3);              // [B,C,T,H,W]
        }
    }

    private sealed class PooledModel : ModelBase
    {
        private readonly PooledDiT _dit;
        private readonly FlowMatchEulerDiscreteScheduler _scheduler = new(3.0);

        public PooledModel(ModelBuildContext context) : base(context)
        {
            _dit = new PooledDiT(context.Role == "teacher" ? 2UL : 1UL);
            foreach (var p in _dit.parameters()) p.requires_grad = Trainable;
        }

        public override nn.Module Transformer => _dit;
        public override INoiseScheduler NoiseScheduler => _scheduler;
        public override VaeConfig Vae { get; } = new() { LatentChannels = Channels, ScalingFactor = 1.0 };
        public override JsonObject TransformerConfig { get; } = new() { ["channels"] = Channels };

        public override TrainingBatch PrepareBatch(RawBatch raw, Generator generator, LatentsSource latentsSource = LatentsSource.Data)
        {
            using var scope = NewDisposeScope();
            var latents = latentsSource == LatentsSource.Zeros ? zeros_like(raw.VaeLatent!) : raw.VaeLatent!.alias();
            var noise = randn(latents.shape, generator: generator);
            var u = TimestepSampling.Density(WeightingScheme.Uniform, latents.shape[0], generator);
            var t = FlowMatch.GridTimesteps(_scheduler, u);
            var sigmas = FlowMatch.GetSigmas(_scheduler, t, 5, ScalarType.Float32);
            return new TrainingBatch
            {
                Latents = latents.permute(0, 2, 1, 3, 4).contiguous().MoveToOuterDisposeScope(),
                RawLatentShape = latents.shape,
                NoisyModelInput = ((1.0 - sigmas) * latents + sigmas * noise).MoveToOuterDisposeScope(),
                Noise = noise.MoveToOuterDisposeScope(),
                Timesteps = t.MoveToOuterDisposeScope(),
                Sigmas = sigmas.MoveToOuterDisposeScope(),
                // Both channels are this family's; the unconditional side zeroes both.
                Conditional = raw.Conditioning.Map(x => x.clone()).MoveToOuterDisposeScope(),
                Unconditional = raw.Conditioning.Map(x => zeros_like(x)).MoveToOuterDisposeScope(),
            };
        }

        public override Tensor AddNoise(Tensor cleanLatents, Tensor noise, Tensor timestep)
        {
            using var scope = NewDisposeScope();
            long b = cleanLatents.shape[0], f = cleanLatents.shape[1];
            var noisy = _scheduler.AddNoise(cleanLatents.flatten(0, 1), noise.flatten(0, 1), PerFrameTimesteps(timestep, b, f));
            return noisy.unflatten(0, [b, f]).MoveToOuterDisposeScope();
        }

        public override Tensor PredictNoise(Tensor noisyLatents, Tensor timestep, TrainingBatch batch, bool conditional,
            CfgUncondPolicy? cfgUncond = null, AttnKind attnKind = AttnKind.Dense)
        {
            using var scope = NewDisposeScope();
            var c = conditional ? batch.Conditional : batch.Unconditional!;
            long b = noisyLatents.shape[0];
            var t = timestep.numel() == 1 ? timestep.reshape(1).expand(b) : timestep;
            var v = _dit.forward(noisyLatents.permute(0, 2, 1, 3, 4), t, c[Conditioning.Text].Values, c[Conditioning.PooledText].Values);
            return v.permute(0, 2, 1, 3, 4).MoveToOuterDisposeScope();
        }

        public override void Backward(Tensor loss, object? context, int gradAccumRounds)
        {
            using var scaled = loss / Math.Max(1, gradAccumRounds);
            scaled.backward();
        }
    }

    /// <summary>Batches with both channels: text [1,3,D] + mask, and a pooled vector [1,P].</summary>
    private sealed class TwoChannelSource : IBatchSource
    {
        public long Position { get; private set; }
        public RawBatch Next()
        {
            using var g = new Generator((ulong)(17 + Position++), CPU);
            return new RawBatch
            {
                VaeLatent = randn([1, Channels, 2, 4, 4], generator: g),
                Conditioning = new Conditioning([
                    new(Conditioning.Text, new ConditioningChannel(randn([1, 3, TextDim], generator: g), ones(1, 3))),
                    new(Conditioning.PooledText, new ConditioningChannel(randn([1, PooledDim], generator: g))),
                ]),
            };
        }
        public JsonNode? GetState() => new JsonObject { ["position"] = Position };
        public void Restore(JsonNode? state) => Position = (long)state!["position"]!;
        public void Dispose() { }
    }

    private static ModelFamilyRegistry Families()
    {
        var r = new ModelFamilyRegistry();
        r.Register(new ModelFamily("pooled_test", "text tokens + a pooled vector (test family)", typeof(RoleConfig), "test-latents",
            new FamilyDefaults(3.0, 3, new VaeConfig { LatentChannels = Channels, ScalingFactor = 1.0 }), ctx => new PooledModel(ctx)));
        return r;
    }

    private static List<double> Train(RunConfig cfg, string lossKey)
    {
        using var method = TrainingBuilder.Build(cfg, Families());
        var memory = new MemoryTracker();
        using var trainer = new Trainer(method, new TwoChannelSource(), trackers: [memory], console: TextWriter.Null);
        trainer.Run();
        return memory.Entries.Select(e => e.Metrics[lossKey]).ToList();
    }

    private static RunConfig Base(string dir, string method, MethodOptions options, params string[] roles)
    {
        var cfg = TrainFixture.Config(dir, maxSteps: 3, method: options);
        return cfg with
        {
            Recipe = new RecipeSection { Family = "pooled_test", Method = method },
            Roles = roles.ToDictionary(r => r, r => new RoleConfig { InitFrom = "random", Trainable = r != "teacher" }),
        };
    }

    [Fact]
    public void FinetuneRunsAFamilyWithTwoConditioningChannels()
    {
        var losses = Train(Base(TestPaths.TempDir("two-ft"), "finetune", new FastVideo.Train.Methods.FineTuning.FineTuneOptions(), "student"), "finetune_loss");
        Assert.Equal(3, losses.Count);
        Assert.All(losses, l => Assert.True(double.IsFinite(l) && l > 0));
    }

    [Fact]
    public void Dmd2RunsAFamilyWithTwoConditioningChannels()
    {
        var options = RecipeLoader.BindOptions<FastVideo.Train.Methods.DistributionMatching.DMD2Options>(
            DMD2MethodTests.MethodOptions(guidance: 2.0), "method");
        var losses = Train(Base(TestPaths.TempDir("two-dmd"), "dmd2", options, "student", "teacher", "critic"), "fake_score_loss");
        Assert.Equal(3, losses.Count);
        Assert.All(losses, l => Assert.True(double.IsFinite(l) && l > 0));
    }

    [Fact]
    public void AFamilyThatDoesNotApplyCheckpointingRefusesTheKey()
    {
        // The recipe accepts enable_gradient_checkpointing_type; a family that cannot apply it refuses it rather than
        // train with every activation kept. A frozen role is not asked (upstream applies it to trainable roles only).
        var cfg = Base(TestPaths.TempDir("two-ckpt"), "finetune", new FastVideo.Train.Methods.FineTuning.FineTuneOptions(), "student");
        var asked = cfg with { Training = cfg.Training with { Model = cfg.Training.Model with { EnableGradientCheckpointingType = "full" } } };
        var e = Assert.Throws<UserError>(() => TrainingBuilder.Build(asked, Families()).Dispose());
        Assert.StartsWith("training.model.enable_gradient_checkpointing_type: the pooled_test family does not implement activation checkpointing", e.Message);
        var onRole = cfg with { Roles = cfg.Roles.ToDictionary(r => r.Key, r => r.Value with { EnableGradientCheckpointingType = "ops" }) };
        e = Assert.Throws<UserError>(() => TrainingBuilder.Build(onRole, Families()).Dispose());
        Assert.StartsWith("roles.student.enable_gradient_checkpointing_type:", e.Message);
    }

    [Fact]
    public void ThePooledChannelReachesThePrediction()
    {
        var cfg = Base(TestPaths.TempDir("two-pred"), "finetune", new FastVideo.Train.Methods.FineTuning.FineTuneOptions(), "student");
        using var method = TrainingBuilder.Build(cfg, Families());
        using var raw = new TwoChannelSource().Next();
        using var g = new Generator(1, CPU);
        using var tb = method.Student.PrepareBatch(raw, g);
        using var ng = no_grad();
        var x = tb.Latents;
        var a = method.Student.PredictNoise(x, tb.Timesteps, tb, conditional: true);
        var b = method.Student.PredictNoise(x, tb.Timesteps, tb, conditional: false);   // both channels zeroed
        tb.Conditional[Conditioning.PooledText].Values.add_(1.0);
        var c = method.Student.PredictNoise(x, tb.Timesteps, tb, conditional: true);
        Assert.False(a.allclose(b));
        Assert.False(a.allclose(c));
    }
}

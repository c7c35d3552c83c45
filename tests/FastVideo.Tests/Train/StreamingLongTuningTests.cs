using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.DistributionMatching;
using FastVideo.Train.Models;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>
/// streaming_long_tuning: a stream continued across steps, checked against a rollout written out with the streaming
/// primitives (the stream's context re-written into a cache, the new frames, the scored window with the previous
/// chunk's last frame, the masked losses and their gradients); the stage schedule; option errors; resume bit for bit
/// with a stream that spans the checkpoint.
/// </summary>
public class StreamingLongTuningTests
{
    private static readonly float[] Steps = [1000, 750, 500, 250];

    private static Dictionary<string, object?> Options(double guidance = 2.0, long interval = 1, object? schedule = null)
    {
        var o = DMD2MethodTests.MethodOptions(guidance: guidance, interval: interval);
        o["chunk_size"] = 1L;
        o["streaming_chunk_size"] = 2L;
        o["streaming_max_length"] = 4L;
        o["streaming_fixed_overlap_latents"] = 1L;
        o["streaming_reencode_overlap_anchor"] = false;
        if (schedule is not null) o["multi_phased_distill_schedule"] = schedule;
        return o;
    }

    /// <summary>A wan_causal student (blocks of 1 frame), wan teacher and critic on the tiny fixture, 4-frame data, flow_shift 1.</summary>
    private static RunConfig Config(string dir, Dictionary<string, object?> options, int maxSteps = 3, int accum = 1, int saveSteps = 0, int frames = 4)
    {
        var cfg = CausalMethodFixture.Config(dir, "streaming_long_tuning", options, maxSteps, accum, saveSteps, frames: frames, framesPerBlock: 1, otherRoles: ["teacher", "critic"]);
        return cfg with { Pipeline = cfg.Pipeline with { FlowShift = 1.0 } };
    }

    private static StreamingLongTuningMethod Build(Dictionary<string, object?> options)
    {
        var m = (StreamingLongTuningMethod)TrainingBuilder.Build(Config(TestPaths.TempDir("slt"), options));
        m.OnTrainStart();
        using (no_grad())
        using (var drift = new Generator(11, CPU))
            foreach (var p in m.Critic.TrainableParameters()) p.add_(randn(p.shape, generator: drift) * 0.05);
        return m;
    }

    private static double Sigma(double t) => t / 1000;   // on-grid timesteps at shift 1

    /// <summary>
    /// One chunk by hand: the context frames written into the cache "hand" (clean, timestep 0), then
    /// <paramref name="newFrames"/> one-frame blocks, each from its noise through the 4-step schedule to its drawn exit
    /// step (SDE re-noising), committed clean. Grad only on the exit steps. Draws: noise, exits, re-noising.
    /// </summary>
    private static List<Tensor> HandChunk(StreamingLongTuningMethod m, TrainingBatch tb, List<Tensor> context, int newFrames, Generator g)
    {
        m.Causal.ClearCaches("hand");
        int frame = 0;
        long b = tb.Latents.shape[0];
        using (no_grad())
            foreach (var c in context)
                m.Causal.PredictNoiseStreaming(c, zeros([b, 1]), tb, true, "hand", storeKv: true, curStartFrame: frame++, cfgUncond: m.CfgUncond);
        var noise = randn([b, newFrames, 4, 8, 8], generator: g);
        var exits = randint(0, 4, [newFrames], dtype: ScalarType.Int64, generator: g).data<long>().Select(e => (int)e).ToArray();
        var outputs = new List<Tensor>();
        for (int j = 0; j < newFrames; j++)
        {
            var x = noise.narrow(1, j, 1);
            Tensor x0 = null!;
            for (int i = 0; i <= exits[j]; i++)
            {
                using (i == exits[j] ? enable_grad() : no_grad())
                    x0 = x - Sigma(Steps[i]) * m.Causal.PredictNoiseStreaming(x, full([b, 1], Steps[i]), tb, true, "hand", curStartFrame: frame, cfgUncond: m.CfgUncond)!;
                if (i == exits[j]) break;
                x = (1 - Sigma(Steps[i + 1])) * x0 + Sigma(Steps[i + 1]) * randn(x0.shape, generator: g);
            }
            using (no_grad()) m.Causal.PredictNoiseStreaming(x0.detach(), zeros([b, 1]), tb, true, "hand", storeKv: true, curStartFrame: frame++, cfgUncond: m.CfgUncond);
            outputs.Add(x0);
            context.Add(x0.detach());
        }
        return outputs;
    }

    /// <summary>The scored window's losses by hand: DMD (CFG 2 real score; a timestep and a normaliser per sample) and
    /// the critic's flow matching (a timestep per sample), both over the new frames only.</summary>
    private static (Tensor Generator, double Critic) HandLosses(StreamingLongTuningMethod m, TrainingBatch tb, Tensor window, int overlap, Generator g)
    {
        long n = window.shape[1] - overlap, b = window.shape[0];
        var t = m.Student.ShiftAndClampTimestep(randint(0, 1000, [b], ScalarType.Int64, generator: g).to_type(ScalarType.Float32));
        var sigma = m.Sf.SigmasForTimesteps(t).to_type(ScalarType.Float32).reshape(b, 1, 1, 1, 1);
        Tensor grad;
        using (no_grad())
        {
            var xt = (1 - sigma) * window.detach() + sigma * randn(window.shape, generator: g);
            Tensor X0(ModelBase model, bool conditional) => xt - sigma * model.PredictNoise(xt, t, tb, conditional, m.CfgUncond);
            var real = X0(m.Teacher, false) + 2.0 * (X0(m.Teacher, true) - X0(m.Teacher, false));
            grad = (X0(m.Critic, true) - real) / (window.detach() - real).abs().mean([1, 2, 3, 4], keepdim: true);
        }
        var generatorLoss = 0.5 * (window.narrow(1, overlap, n) - (window.narrow(1, overlap, n).detach() - grad.narrow(1, overlap, n))).pow(2).mean();

        var tc = m.Student.ShiftAndClampTimestep(randint(0, 1000, [b], ScalarType.Int64, generator: g).to_type(ScalarType.Float32));
        var sc = m.Sf.SigmasForTimesteps(tc).to_type(ScalarType.Float32).reshape(b, 1, 1, 1, 1);
        using var noGrad = no_grad();
        var x = window.detach();
        var eps = randn(x.shape, generator: g);
        var v = m.Critic.PredictNoise((1 - sc) * x + sc * eps, tc, tb, conditional: true, m.CfgUncond);
        double critic = (v - (eps - x)).narrow(1, overlap, n).pow(2).mean().item<float>();
        return (generatorLoss, critic);
    }

    private static RawBatch TwoSamples(RandomBatchSource source)
    {
        using var a = source.Next();
        using var b = source.Next();
        var (ta, tb) = (a.Conditioning[Conditioning.Text], b.Conditioning[Conditioning.Text]);
        return new RawBatch
        {
            VaeLatent = cat([a.VaeLatent!, b.VaeLatent!], 0),
            Conditioning = Conditioning.FromText(cat([ta.Values, tb.Values], 0), cat([ta.Mask!, tb.Mask!], 0)),
        };
    }

    [Fact]
    public void TwoStreamingStepsMatchTheHandComputation()
    {
        using var scope = NewDisposeScope();
        using var m = Build(Options());
        // Two samples per batch, so the per-sample timesteps and normalisers differ from batch-wide ones.
        var source = new RandomBatchSource(frames: 4);
        using var batch1 = TwoSamples(source);
        using var batch2 = TwoSamples(source);
        using var start = m.Generator.get_state();
        var r1 = m.SingleTrainStep(batch1, 1);
        var r2 = m.SingleTrainStep(batch2, 2);
        m.Backward(r2, 1);
        var grads = CausalMethodFixture.Grads(m.Student.Transformer);
        CausalMethodFixture.ZeroGrads(m.Student.Transformer);
        Assert.Equal(2.0, r1.Metrics["streaming_current_length"].item<float>());
        Assert.Equal(3.0, r2.Metrics["streaming_current_length"].item<float>());

        // By hand, from the same generator state. The stream keeps batch 1's prompts; its prepare_batch draws nothing.
        m.Generator.set_state(start);
        var g = m.Generator;
        using var unused = new Generator(0, CPU);
        using var tb = m.Student.PrepareBatch(batch1, unused, LatentsSource.Zeros);
        var context = new List<Tensor>();
        // Step 1: the stream's first chunk, 2 new frames, all scored.
        var first = HandChunk(m, tb, context, 2, g);
        var w1 = cat(first.ToArray(), 1);
        var (gen1, critic1) = HandLosses(m, tb, w1, 0, g);
        Assert.Equal(gen1.item<float>(), r1.Losses["generator_loss"].item<float>(), 1e-4 * gen1.item<float>());
        Assert.Equal(critic1, r1.Losses["fake_score_loss"].item<float>(), 1e-4 * critic1);
        // Step 2: 1 new frame after the 2 of step 1; the window is [step 1's last frame (fixed), the new frame].
        var second = HandChunk(m, tb, context, 1, g);
        var w2 = cat([w1.detach().narrow(1, 1, 1), second[0]], 1);
        var (gen2, critic2) = HandLosses(m, tb, w2, 1, g);
        Assert.Equal(gen2.item<float>(), r2.Losses["generator_loss"].item<float>(), 1e-4 * gen2.item<float>());
        Assert.Equal(critic2, r2.Losses["fake_score_loss"].item<float>(), 1e-4 * critic2);
        Assert.True(gen2.item<float>() > 1e-6, "fake and real scores must differ for the check to bite");
        // The student's gradient reaches it through the new frame's exit step only.
        gen2.backward();
        CausalMethodFixture.AssertGradsClose(CausalMethodFixture.Grads(m.Student.Transformer), grads);
    }

    [Fact]
    public void StreamsRestartAtTheirLengthAndStagesFollowTheSchedule()
    {
        using var scope = NewDisposeScope();
        var schedule = new List<object?>
        {
            new Dictionary<string, object?> { ["stage"] = "self_forcing", ["end_step"] = 3L, ["num_latent_t"] = 2L },
            new Dictionary<string, object?> { ["stage"] = "streaming_long", ["num_latent_t"] = 4L },
        };
        using var m = Build(Options(interval: 2, schedule: schedule));
        Assert.Equal(new (int, int?, bool, int)[] { (0, 3, false, 2), (3, null, true, 4) }, m.Stages.Select(s => (s.StartStep, s.EndStep, s.Streaming, s.NumLatentT)));
        var source = new RandomBatchSource(frames: 4);
        var seen = new List<(float Stage, float Length, float Update)>();
        for (int i = 1; i <= 8; i++)
        {
            using var b = source.Next();
            var r = m.SingleTrainStep(b, i);
            seen.Add((r.Metrics["distill_stage_index"].item<float>(), r.Metrics["streaming_current_length"].item<float>(), r.Metrics["update_student"].item<float>()));
            m.Backward(r, 1);
            m.OptimizersZeroGrad(i);
        }
        // Steps 1-2: short rollouts of 2 frames. From step 3: streams of 4 frames, 2 then 1 new frame per step.
        Assert.Equal([(0f, 2f), (0f, 2f), (1f, 2f), (1f, 3f), (1f, 4f), (1f, 2f), (1f, 3f), (1f, 4f)], seen.Select(s => (s.Stage, s.Length)));
        Assert.Equal([0f, 1f, 0f, 1f, 0f, 1f, 0f, 1f], seen.Select(s => s.Update));
    }

    [Fact]
    public void BadOptionsAreRefused()
    {
        var dir = TestPaths.TempDir("slt-bad");
        var o = Options(); o["streaming_reencode_overlap_anchor"] = true;
        Assert.Contains("method.streaming_reencode_overlap_anchor: true re-encodes the overlap's first frame through the VAE",
            Assert.Throws<RecipeError>(() => Config(dir, o)).Message);
        o = Options(); o.Remove("streaming_reencode_overlap_anchor");   // FastVideo's default is true
        Assert.Contains("streaming_reencode_overlap_anchor", Assert.Throws<RecipeError>(() => Config(dir, o)).Message);
        o = Options(); o["streaming_fixed_overlap_latents"] = 2L;
        Assert.Contains("method.streaming_fixed_overlap_latents: (2) must be in [0, streaming_chunk_size = 2)",
            Assert.Throws<UserError>(() => TrainingBuilder.Build(Config(dir, o))).Message);
        o = Options(); o["start_gradient_frame"] = 1L;
        Assert.Contains("method.start_gradient_frame: (1) applies to short Self-Forcing stages only",
            Assert.Throws<UserError>(() => TrainingBuilder.Build(Config(dir, o))).Message);
        o = Options(); o["streaming_max_length"] = 6L;
        Assert.Contains("training.data.num_latent_t: (4) must be at least the longest stage horizon",
            Assert.Throws<UserError>(() => TrainingBuilder.Build(Config(dir, o))).Message);
        var overlapping = new List<object?>
        {
            new Dictionary<string, object?> { ["stage"] = "self_forcing", ["end_step"] = 10L, ["num_latent_t"] = 2L },
            new Dictionary<string, object?> { ["stage"] = "streaming_long", ["start_step"] = 5L },
        };
        Assert.Contains("method.multi_phased_distill_schedule[1].start_step: (5) overlaps the stage before",
            Assert.Throws<UserError>(() => TrainingBuilder.Build(Config(dir, Options(schedule: overlapping)))).Message);
        var unknown = new List<object?> { new Dictionary<string, object?> { ["stage"] = "streaming_long", ["window"] = 3L } };
        Assert.Contains("multi_phased_distill_schedule[0]", Assert.Throws<RecipeError>(() => Config(dir, Options(schedule: unknown))).Message);
        var bidirectional = Config(dir, Options());
        bidirectional = bidirectional with { Roles = new Dictionary<string, RoleConfig>(bidirectional.Roles) { ["student"] = new RoleConfig { InitFrom = CausalMethodFixture.Model, Family = "wan" } } };
        Assert.Contains("roles.student: streaming_long_tuning needs a causal student", Assert.Throws<UserError>(() => TrainingBuilder.Build(bidirectional)).Message);
    }

    [Fact]
    public void ResumesBitForBitWithAStreamAcrossTheCheckpoint()
    {
        // Accumulation 2: every micro-step adds to the stream, so the checkpoint after step 2 falls inside a stream
        // (short stage at step 1, then streams of 4 frames: lengths 2, 3 | 4, 2 | 3, 4).
        var schedule = new List<object?>
        {
            new Dictionary<string, object?> { ["stage"] = "self_forcing", ["end_step"] = 2L, ["num_latent_t"] = 2L },
            new Dictionary<string, object?> { ["stage"] = "streaming_long" },
        };
        var straight = CausalMethodFixture.AssertResumesBitForBit(
            dir => Config(dir, Options(interval: 2, schedule: schedule), maxSteps: 4, accum: 2, saveSteps: 2),
            ["generator_loss", "fake_score_loss", "grad_norm/critic", "update_student", "streaming_current_length"], () => new RandomBatchSource(frames: 4));
        Assert.True(straight[3]["generator_loss"] > 0);
    }
}

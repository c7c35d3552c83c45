using System.ComponentModel;
using System.Globalization;
using FastVideo.Configs;
using FastVideo.Models.Schedulers;
using FastVideo.Sampling;
using FastVideo.Train.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.DistributionMatching;

/// <summary>How a Self-Forcing rollout moves a block from one denoising step to the next.</summary>
public enum StudentSampleType
{
    /// <summary>Re-noise the predicted x0 to the next timestep with a fresh draw.</summary>
    Sde,
    /// <summary>Move deterministically along the noise the prediction implies (DDIM).</summary>
    Ode,
}

/// <summary>The <c>method:</c> options of self_forcing: DMD2's and the streaming rollout's (spec 6.4).</summary>
public record SelfForcingOptions : DMD2Options
{
    [Description("latent frames per rollout block (the first block also takes the T mod chunk_size left-over frames)")]
    public int ChunkSize { get; init; } = 3;

    [Description("how a block moves between denoising steps: sde (re-noise the x0 with a fresh draw) or ode (deterministic)")]
    public StudentSampleType StudentSampleType { get; init; } = StudentSampleType.Sde;

    [Description("every block stops at the same randomly drawn step (else one draw per block)")]
    public bool SameStepAcrossBlocks { get; init; }

    [Description("every block runs all its steps (no random exit step)")]
    public bool LastStepOnly { get; init; }

    [Description("timestep (0..1000) a finished block is re-noised to before it is cached as context; 0 = its clean x0")]
    public double ContextNoise { get; init; }

    [Description("the exit step of each block runs with autograd (the student's only gradient path; false is refused)")]
    public bool EnableGradientInRollout { get; init; } = true;

    [Description("blocks starting before this latent frame get no gradient")]
    public int StartGradientFrame { get; init; }

    public override IEnumerable<OptionProblem> Check()
    {
        foreach (var p in base.Check()) yield return p;
        if (RolloutMode != RolloutMode.Simulate)
            yield return new("rollout_mode", "self_forcing generates its samples itself: only simulate is supported");
        if (ChunkSize < 1) yield return new("chunk_size", $"must be > 0, got {ChunkSize}");
        if (!(ContextNoise is >= 0 and <= 1000))
            yield return new("context_noise", $"must be a timestep in [0, 1000], got {ContextNoise.ToString(CultureInfo.InvariantCulture)}");
        if (StartGradientFrame < 0) yield return new("start_gradient_frame", $"must be >= 0, got {StartGradientFrame}");
        // Upstream accepts false and then fails in backward: the generator loss has no gradient at all.
        if (!EnableGradientInRollout)
            yield return new("enable_gradient_in_rollout", "false leaves the student without any gradient (its exit steps are its only gradient path); set it to true");
    }
}

/// <summary>
/// Self-Forcing (spec 6.4): DMD2 whose student is a causal model that generates its samples the way it will at
/// inference, block after block through its KV cache, each block conditioned on the student's own earlier blocks.
/// Each block starts from its frames of one noise draw and runs the few-step schedule up to a random exit step, whose
/// prediction (with autograd) is the block's sample; the block's x0 is then written to the cache as the clean (or
/// <c>context_noise</c>-noised) context of the later blocks. The DMD and critic losses are DMD2's, with every forward
/// process and x0 conversion on the Self-Forcing scheduler (spec 3.2). Every draw (initial noise, exit steps, SDE and
/// context noise) comes from the method's generator, where upstream takes some from the global one.
/// </summary>
public class SelfForcingMethod : DMD2Method
{
    public static new MethodDescriptor Descriptor { get; } = MethodDescriptor.Of<SelfForcingOptions>("self_forcing",
        "Self-Forcing: DMD2 on a causal student that generates its samples block by block through its KV cache, as at inference (roles: causal student, frozen teacher, trainable critic)",
        cfg => CheckRoles(cfg, "self_forcing"), (cfg, options, roles) => new SelfForcingMethod(cfg, options, roles)) with
    {
        ClassPaths = ["fastvideo.train.methods.distribution_matching.self_forcing.SelfForcingMethod",
            "fastvideo.train.methods.distribution_matching.SelfForcingMethod", "fastvideo.train.methods.SelfForcingMethod"],
    };

    public const string CacheTag = "pos";

    public SelfForcingMethod(RunConfig config, SelfForcingOptions options, IReadOnlyDictionary<string, ModelBase> roles)
        : this(config, options, roles, "self_forcing") { }

    /// <param name="name">The method's name, for errors (methods built on Self-Forcing's rollout).</param>
    protected SelfForcingMethod(RunConfig config, SelfForcingOptions options, IReadOnlyDictionary<string, ModelBase> roles, string name)
        : base(config, options, roles, name, Scheduler(config, roles))
    {
        Options = options;
        Sf = (SelfForcingFlowMatchScheduler)ScoreScheduler!;
        Causal = Student as ICausalModel ?? throw new UserError(
            $"roles.student: {name} needs a causal student (a streaming forward with a KV cache), got the {Student.Context.Family.Name} family (use wan_causal)");
        int frames = Training.Data.NumLatentT;
        if (frames > 0 && Blocks(frames, options.ChunkSize) is var blocks && blocks[^1].Start < options.StartGradientFrame)
            throw new UserError($"method.start_gradient_frame: ({options.StartGradientFrame}) is after the start of the last block (frame {blocks[^1].Start} of " +
                                $"{frames}), so the student would get no gradient");
    }

    /// <summary>The Self-Forcing scheduler with pipeline.flow_shift (upstream: 0 when unset, a degenerate grid; here the family default).</summary>
    private static SelfForcingFlowMatchScheduler Scheduler(RunConfig config, IReadOnlyDictionary<string, ModelBase> roles)
    {
        var student = roles.TryGetValue("student", out var s) ? s : throw new UserError("roles.student: every method needs a 'student' role");
        double shift = config.Pipeline.FlowShift ?? student.Context.Family.Defaults.FlowShift;
        return SelfForcingFlowMatchScheduler.ForTraining(shift, student.NumTrainTimesteps, training: true);
    }

    public new SelfForcingOptions Options { get; }
    public SelfForcingFlowMatchScheduler Sf { get; }
    public ICausalModel Causal { get; }

    /// <summary>
    /// The rollout's blocks (spec 6.4): nb = T / c whole blocks of c frames, the first one also taking the T mod c
    /// left-over frames (one block of T frames when T &lt; c).
    /// </summary>
    public static IReadOnlyList<(long Start, long End)> Blocks(long frames, int chunk)
    {
        long count = frames / chunk, rest = frames % chunk;
        if (count == 0) (count, rest) = (1, frames);
        var blocks = new List<(long, long)>();
        for (long b = 0; b < count; b++)
        {
            long start = b == 0 ? 0 : rest + b * chunk;
            long end = Math.Min(frames, b == 0 ? (rest > 0 ? rest + chunk : chunk) : rest + (b + 1) * chunk);
            if (start < end) blocks.Add((start, end));
        }
        return blocks;
    }

    /// <summary>Each block's exit step in [0, K): K-1 with last_step_only, else drawn (once for all blocks with same_step_across_blocks).</summary>
    public int[] ExitSteps(int blocks)
    {
        int k = DenoisingSteps.Length;
        if (Options.LastStepOnly) return Enumerable.Repeat(k - 1, blocks).ToArray();
        using var draw = randint(0, k, [Options.SameStepAcrossBlocks ? 1 : blocks], dtype: ScalarType.Int64, device: Student.Device, generator: Generator);
        var drawn = draw.cpu().data<long>().Select(i => (int)i).ToArray();
        return Options.SameStepAcrossBlocks ? Enumerable.Repeat(drawn[0], blocks).ToArray() : drawn;
    }

    /// <summary>
    /// The streaming rollout (<see cref="StreamingSampling"/> with this method's blocks, exit steps, context noise and
    /// scheduler): a sample x0 [B,T,C,H,W] built block by block (see the class summary), with autograd on each block's
    /// exit step when <paramref name="withGrad"/> and grad mode allow it and the block starts at or after
    /// start_gradient_frame. <paramref name="chosenTimestep"/> is the mean exit timestep. Draws in order: the noise of
    /// the whole clip, the exit steps, then per block its re-noising (sde) and its context noise.
    /// </summary>
    public override Tensor StudentRollout(TrainingBatch tb, bool withGrad, out float chosenTimestep)
    {
        long frames = tb.Latents.shape[1];   // the latents are zeros [B,T,C,H,W]: only the shape counts
        using var noise = Draw(tb.Latents);
        var blocks = Blocks(frames, Options.ChunkSize).Select((b, i) => new StreamBlock(i, b.Start, b.End - b.Start)).ToList();
        var exits = ExitSteps(blocks.Count);
        chosenTimestep = (float)exits.Average(e => DenoisingSteps[e]);
        var schedule = new StreamingSchedule(DenoisingSteps.Select(t => (double)t).ToArray())
        {
            Blocks = blocks,
            ExitStep = block => exits[block.Index],
            GradOnExit = withGrad && Options.EnableGradientInRollout && is_grad_enabled(),
            GradFromFrame = Options.StartGradientFrame,
            Deterministic = Options.StudentSampleType == StudentSampleType.Ode,
            ContextTimestep = Options.ContextNoise,
        };
        using var stream = new CausalStream(Student, tb, new CausalStreamOptions { CfgUncond = CfgUncond, Scheduler = Sf, CacheTag = CacheTag, AttnKind = AttnKind.Vsa });
        return StreamingSampling.Generate(stream, noise, schedule, Draw);
    }

    protected Tensor Draw(Tensor like) => randn(like.shape, dtype: like.dtype, device: Student.Device, generator: Generator);
}

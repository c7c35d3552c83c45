using System.ComponentModel;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Sampling;
using FastVideo.Train.Models;
using FastVideo.Train.State;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.DistributionMatching;

/// <summary>One entry of <c>method.multi_phased_distill_schedule</c> as written (resolved into a <see cref="DistillStage"/>).</summary>
public sealed record DistillStageOptions
{
    [Description("the stage's name; without streaming_training, streaming_long / long / streaming make it a streaming stage, anything else a short Self-Forcing stage")]
    public string? Stage { get; init; }

    [Description("the stage's name, when stage is not given")]
    public string? Name { get; init; }

    [Description("first training step of the stage (default: the previous stage's end_step, or 0)")]
    public int? StartStep { get; init; }

    [Description("the step the stage ends before; unset = to the end of the run")]
    public int? EndStep { get; init; }

    [Description("latent frames of the stage: a short stage's rollout length; a streaming stage's stream length unless streaming_max_length is given")]
    public int? NumLatentT { get; init; }

    [Description("alias of num_latent_t (read when num_latent_t and streaming_max_length are absent)")]
    public int? MaxLength { get; init; }

    [Description("whether the stage streams (true) or runs short Self-Forcing rollouts (false); unset = from the stage name")]
    public bool? StreamingTraining { get; init; }

    [Description("this stage's method.streaming_chunk_size")]
    public int? StreamingChunkSize { get; init; }

    [Description("latent frames of the stream before a new one starts (default: num_latent_t)")]
    public int? StreamingMaxLength { get; init; }

    [Description("this stage's method.streaming_min_new_frame")]
    public int? StreamingMinNewFrame { get; init; }

    [Description("this stage's method.streaming_fixed_overlap_latents")]
    public int? StreamingFixedOverlapLatents { get; init; }
}

/// <summary>A stage of the run, steps [StartStep, EndStep) (EndStep null: to the end).</summary>
public sealed record DistillStage(int Index, string Name, int StartStep, int? EndStep, int NumLatentT, bool Streaming,
    int? ChunkSize, int? MaxLength, int? MinNewFrame, int? FixedOverlap)
{
    /// <summary>Frames of a stream before a new one starts.</summary>
    public int StreamLength => MaxLength ?? NumLatentT;
}

/// <summary>The <c>method:</c> options of streaming_long_tuning: Self-Forcing's, the stream's and the stage schedule.</summary>
public sealed record StreamingLongTuningOptions : SelfForcingOptions
{
    [Description("without multi_phased_distill_schedule: the whole run streams (true) or runs short Self-Forcing rollouts (false)")]
    public bool StreamingTraining { get; init; } = true;

    [Description("latent frames the teacher and critic score per step: the overlap with the previous chunk plus the new frames (default: chunk_size)")]
    public int? StreamingChunkSize { get; init; }

    [Description("latent frames of a stream before a new one starts (default: training.data.num_latent_t)")]
    public int? StreamingMaxLength { get; init; }

    [Description("fewest new frames per chunk; new-frame counts are drawn from [min, chunk) in steps of chunk_size (default: streaming_chunk_size, i.e. no overlap)")]
    public int? StreamingMinNewFrame { get; init; }

    [Description("a fixed overlap: every chunk after a stream's first re-scores this many of the previous chunk's frames and adds the rest as new frames")]
    public int? StreamingFixedOverlapLatents { get; init; }

    [Description("re-encode the overlap's first frame through the VAE as an image anchor (image-to-video); needs a VAE, which this build does not have: set false")]
    public bool StreamingReencodeOverlapAnchor { get; init; } = true;

    [Description("frames the anchor re-encoding replaces (with streaming_reencode_overlap_anchor), >= 1")]
    public int StreamingAnchorInjectK { get; init; } = 1;

    [Description("refuse a chunk whose new frames are not whole rollout blocks (a multiple of chunk_size)")]
    public bool StreamingRequireFullBlocks { get; init; }

    [Description("the teacher's real score with classifier-free guidance at real_score_guidance_scale (false: the conditional teacher alone)")]
    public bool RealScoreCfg { get; init; } = true;

    [Description("stages by step, e.g. [{stage: self_forcing, end_step: 600, num_latent_t: 4}, {stage: streaming_long, num_latent_t: 8}]; unset = one stage (streaming_training)")]
    public IReadOnlyList<DistillStageOptions>? MultiPhasedDistillSchedule { get; init; }

    public override IEnumerable<OptionProblem> Check()
    {
        foreach (var p in base.Check()) yield return p;
        if (StreamingReencodeOverlapAnchor)
            yield return new("streaming_reencode_overlap_anchor", "true re-encodes the overlap's first frame through the VAE (an image-to-video anchor); " +
                                                                  "this build has no VAE, so set it to false (text-to-video needs no anchor)");
        if (StreamingAnchorInjectK < 1) yield return new("streaming_anchor_inject_k", $"must be >= 1, got {StreamingAnchorInjectK}");
        if (StreamingChunkSize is < 1) yield return new("streaming_chunk_size", $"must be > 0, got {StreamingChunkSize}");
        if (StreamingMaxLength is < 1) yield return new("streaming_max_length", $"must be > 0, got {StreamingMaxLength}");
        if (StreamingMinNewFrame is < 1) yield return new("streaming_min_new_frame", $"must be > 0, got {StreamingMinNewFrame}");
        if (StreamingFixedOverlapLatents is < 0) yield return new("streaming_fixed_overlap_latents", $"must be >= 0, got {StreamingFixedOverlapLatents}");
        if (MultiPhasedDistillSchedule is { Count: 0 }) yield return new("multi_phased_distill_schedule", "lists no stage (leave it out for one stage)");
    }
}

/// <summary>
/// Streaming long tuning (FastVideo's StreamingLongTuningMethod, after LongLive): Self-Forcing whose student learns to
/// keep going past the teacher's horizon. A streaming stage keeps one stream across training steps: each step the
/// causal student adds a chunk of new frames after the frames it already generated, and the teacher and critic score
/// a window of streaming_chunk_size frames (the teacher's horizon): the last frames of the previous chunk (fixed)
/// followed by the new ones. Only the new frames carry loss. When the stream reaches its length a new one starts with
/// the current batch's prompts (the batches in between are not used). A short stage is plain Self-Forcing on
/// num_latent_t frames. Both use FastVideo's losses for this method: DMD normalised per sample, a score timestep per
/// sample, mean over the new frames.
/// <para>Unlike FastVideo, the stream's earlier frames are written into the student's KV cache again at each step,
/// with its current weights, from the stored context latents (FastVideo keeps the keys and values computed by the
/// weights of the step that made them). The checkpoint then holds the stream as latents, and a resumed run continues
/// it bit for bit. The VAE anchor re-encoding (image-to-video) is refused: there is no VAE here.</para>
/// </summary>
public sealed class StreamingLongTuningMethod : SelfForcingMethod
{
    public static new MethodDescriptor Descriptor { get; } = MethodDescriptor.Of<StreamingLongTuningOptions>("streaming_long_tuning",
        "Streaming long tuning (LongLive-style): Self-Forcing on a stream continued across steps, each step's new frames scored with the previous chunk's last frames (roles: causal student, frozen teacher, trainable critic)",
        cfg => CheckRoles(cfg, "streaming_long_tuning"), (cfg, options, roles) => new StreamingLongTuningMethod(cfg, options, roles)) with
    {
        ClassPaths = ["fastvideo.train.methods.distribution_matching.streaming_long_tuning.StreamingLongTuningMethod",
            "fastvideo.train.methods.distribution_matching.StreamingLongTuningMethod", "fastvideo.train.methods.StreamingLongTuningMethod"],
    };

    /// <summary>The stream between steps: its prompts, its committed context blocks and the last chunk's frames.</summary>
    private sealed class Stream : IDisposable
    {
        public required DistillStage Stage;
        public required Conditioning Prompts;           // the raw conditioning of the batch that started it (CPU copies)
        public readonly List<Tensor> Context = [];      // committed blocks [B,n,C,H,W], as written to the cache
        public Tensor? Previous;                        // the last chunk's x0, up to streaming_chunk_size frames
        public int Length => Context.Sum(c => (int)c.shape[1]);

        public void Dispose()
        {
            Prompts.Dispose();
            foreach (var c in Context) c.Dispose();
            Context.Clear();
            Previous?.Dispose();
        }
    }

    private Stream? _stream;

    public StreamingLongTuningMethod(RunConfig config, StreamingLongTuningOptions options, IReadOnlyDictionary<string, ModelBase> roles)
        : base(config, options, roles, "streaming_long_tuning")
    {
        Options = options;
        Stages = ResolveStages(options, Training.Data.NumLatentT);
        // FastVideo reads start_gradient_frame only in short stages; a stream's chunks all take their gradient.
        if (options.StartGradientFrame > 0 && Stages.Any(s => s.Streaming))
            throw new UserError($"method.start_gradient_frame: ({options.StartGradientFrame}) applies to short Self-Forcing stages only; the streaming stages' " +
                                "new frames always take the gradient. Set it to 0, or use a schedule without streaming stages");
        int longest = Stages.Max(s => Math.Max(s.NumLatentT, s.Streaming ? s.StreamLength : 0));
        if (longest > Training.Data.NumLatentT)
            throw new UserError($"training.data.num_latent_t: ({Training.Data.NumLatentT}) must be at least the longest stage horizon of " +
                                $"method.multi_phased_distill_schedule / streaming_max_length ({longest})");
    }

    public new StreamingLongTuningOptions Options { get; }
    public IReadOnlyList<DistillStage> Stages { get; }

    /// <summary>The stages in order, checked as FastVideo checks them (errors name the schedule entry).</summary>
    public static IReadOnlyList<DistillStage> ResolveStages(StreamingLongTuningOptions o, int dataFrames)
    {
        const string key = "method.multi_phased_distill_schedule";
        var stages = new List<DistillStage>();
        if (o.MultiPhasedDistillSchedule is null)
        {
            int n = o.StreamingMaxLength ?? dataFrames;
            stages.Add(new(0, o.StreamingTraining ? "streaming_long" : "self_forcing", 0, null, n, o.StreamingTraining,
                o.StreamingChunkSize, n, null, null));
        }
        else
        {
            int previousEnd = 0;
            foreach (var (e, i) in o.MultiPhasedDistillSchedule.Select((e, i) => (e, i)))
            {
                string name = (e.Stage ?? e.Name ?? "").Trim();
                bool streaming = e.StreamingTraining ?? name is "streaming_long" or "long" or "streaming";
                if (name.Length == 0) name = streaming ? "streaming_long" : "self_forcing";
                int n = e.NumLatentT ?? e.StreamingMaxLength ?? e.MaxLength ?? dataFrames;
                stages.Add(new(i, name, e.StartStep ?? previousEnd, e.EndStep, n, streaming, e.StreamingChunkSize, e.StreamingMaxLength,
                    e.StreamingMinNewFrame, e.StreamingFixedOverlapLatents));
                if (e.EndStep is { } end) previousEnd = end;
            }
        }
        int last = 0;
        foreach (var s in stages)
        {
            string at = o.MultiPhasedDistillSchedule is null ? "method" : $"{key}[{s.Index}]";
            if (s.StartStep < last) throw new UserError($"{at}.start_step: ({s.StartStep}) overlaps the stage before (stages must be in order, not overlapping)");
            if (s.EndStep is { } end && end <= s.StartStep) throw new UserError($"{at}.end_step: ({end}) must be > start_step ({s.StartStep})");
            if (s.NumLatentT <= 0) throw new UserError($"{at}.num_latent_t: must be > 0, got {s.NumLatentT}");
            if (s.Streaming)
            {
                int chunk = s.ChunkSize ?? o.StreamingChunkSize ?? o.ChunkSize;
                if (s.StreamLength <= 0) throw new UserError($"{at}.streaming_max_length: must be > 0, got {s.StreamLength}");
                if (chunk <= 0) throw new UserError($"{at}.streaming_chunk_size: must be > 0, got {chunk}");
                if ((s.FixedOverlap ?? o.StreamingFixedOverlapLatents) is { } overlap && (overlap < 0 || overlap >= chunk))
                    throw new UserError($"{at}.streaming_fixed_overlap_latents: ({overlap}) must be in [0, streaming_chunk_size = {chunk})");
            }
            if (s.EndStep is { } e2) last = e2;
        }
        return stages;
    }

    /// <summary>The stage of <paramref name="iteration"/> (the last one after every stage's end).</summary>
    public DistillStage StageAt(int iteration) =>
        Stages.FirstOrDefault(s => iteration >= s.StartStep && (s.EndStep is null || iteration < s.EndStep)) ?? Stages[^1];

    private int ChunkFrames(DistillStage s) => s.ChunkSize ?? Options.StreamingChunkSize ?? Options.ChunkSize;

    public override StepResult SingleTrainStep(RawBatch batch, int iteration)
    {
        var stage = StageAt(iteration);
        if (!stage.Streaming)
        {
            EndStream();
            return ShortStep(batch, iteration, stage);
        }
        return StreamingStep(batch, iteration, stage);
    }

    /// <summary>A short stage: Self-Forcing's two rollouts (student with grad, critic without) on num_latent_t frames.</summary>
    private StepResult ShortStep(RawBatch batch, int iteration, DistillStage stage)
    {
        var tb = Student.PrepareBatch(batch, Generator, LatentsSource.Zeros);
        KeepFrames(tb, stage.NumLatentT);
        bool update = UpdatesStudent(iteration);
        var metrics = Metrics(update, stage, stage.NumLatentT);
        var generatorLoss = zeros([], dtype: ScalarType.Float32, device: Student.Device);
        if (update)
        {
            var xGen = StudentRollout(tb, withGrad: true, out var genT);
            metrics["generator_timestep"] = tensor(genT);
            generatorLoss = MaskedDmdLoss(xGen, tb, null, metrics);
        }
        Tensor xCritic;
        using (no_grad()) xCritic = StudentRollout(tb, withGrad: false, out _);
        var criticLoss = MaskedCriticLoss(xCritic, tb, null);
        return StepOf(update, tb, generatorLoss, criticLoss, metrics);
    }

    /// <summary>A streaming stage: one chunk of the stream, its new frames scored with the previous chunk's last frames.</summary>
    private StepResult StreamingStep(RawBatch batch, int iteration, DistillStage stage)
    {
        if (_stream is null || _stream.Stage != stage || _stream.Length >= stage.StreamLength)
        {
            EndStream();
            _stream = new Stream { Stage = stage, Prompts = batch.Conditioning.Map(t => t.detach().cpu().clone()).DetachFromDisposeScope() };
        }
        var s = _stream;
        var tb = StreamBatch(s);
        bool update = UpdatesStudent(iteration);
        var (chunk, mask) = NextChunk(s, tb, withGrad: update);
        var metrics = Metrics(update, stage, s.Length);
        var generatorLoss = update ? MaskedDmdLoss(chunk, tb, mask, metrics) : zeros([], dtype: ScalarType.Float32, device: Student.Device);
        var criticLoss = MaskedCriticLoss(chunk.detach(), tb, mask);
        return StepOf(update, tb, generatorLoss, criticLoss, metrics);
    }

    private static Dictionary<string, Tensor> Metrics(bool update, DistillStage stage, int length) => new()
    {
        ["update_student"] = tensor(update ? 1f : 0f),
        ["distill_stage_index"] = tensor((float)stage.Index),
        ["streaming_current_length"] = tensor((float)length),
    };

    /// <summary>The stream's conditioning for this step, from its stored prompts (no draws from the method's generator).</summary>
    private TrainingBatch StreamBatch(Stream s)
    {
        using var raw = new RawBatch { Conditioning = s.Prompts.Map(t => t.alias()) };
        using var unused = new Generator(0, Student.Device);   // PrepareBatch's noise and timestep draws are not used
        var tb = Student.PrepareBatch(raw, unused, LatentsSource.Zeros);
        KeepFrames(tb, s.Stage.StreamLength);
        return tb;
    }

    /// <summary>Cuts the batch's (zero) latents to their first <paramref name="frames"/> frames: the rollout's length.</summary>
    private static void KeepFrames(TrainingBatch tb, long frames)
    {
        if (tb.Latents.shape[1] <= frames) return;
        var cut = tb.Latents.narrow(1, 0, frames);
        tb.Latents.Dispose();
        tb.Latents = cut;
    }

    /// <summary>
    /// The next chunk of the stream (FastVideo's order of draws: the new-frame count, the chunk's noise, the exit
    /// steps, then per block its re-noising and context draws): the stream's context written into a fresh cache,
    /// the new frames rolled out after it, block by block, with grad on each block's exit step when
    /// <paramref name="withGrad"/>. Returns [previous chunk's last frames | new frames] and the mask of the new ones.
    /// </summary>
    private (Tensor Chunk, Tensor Mask) NextChunk(Stream s, TrainingBatch tb, bool withGrad)
    {
        int chunkFrames = ChunkFrames(s.Stage), current = s.Length, remaining = s.Stage.StreamLength - current;
        int newFrames, overlap;
        if (s.Previous is null) (newFrames, overlap) = (Math.Min(chunkFrames, remaining), 0);
        else
        {
            newFrames = NewFrameCount(s.Stage, remaining, chunkFrames);
            overlap = Math.Min(chunkFrames - newFrames, (int)s.Previous.shape[1]);
        }
        int block = Options.ChunkSize;
        if (Options.StreamingRequireFullBlocks && newFrames % block != 0)
            throw new UserError($"method.streaming_require_full_blocks: a chunk of {newFrames} new frames is not whole blocks of chunk_size {block}");

        var shape = tb.Latents.shape;
        using var noise = randn([shape[0], newFrames, shape[2], shape[3], shape[4]], dtype: tb.Latents.dtype, device: Student.Device, generator: Generator);
        var blocks = StreamingSampling.Blocks(newFrames, block);
        var exits = ExitSteps(blocks.Count);
        var schedule = new StreamingSchedule(DenoisingSteps.Select(t => (double)t).ToArray())
        {
            Blocks = blocks,
            ExitStep = b => exits[b.Index],
            GradOnExit = withGrad && Options.EnableGradientInRollout && is_grad_enabled(),
            Deterministic = Options.StudentSampleType == StudentSampleType.Ode,
            ContextTimestep = Options.ContextNoise,
        };
        using var stream = new CausalStream(Student, tb, new CausalStreamOptions { CfgUncond = CfgUncond, Scheduler = Sf, CacheTag = CacheTag, AttnKind = AttnKind.Vsa });
        foreach (var context in s.Context)
        {
            using var t = full([context.shape[0]], Options.ContextNoise, dtype: ScalarType.Float32);
            stream.Commit(context, t);
        }
        var committed = new List<Tensor>();
        var x0 = StreamingSampling.Continue(stream, noise, schedule, Draw, onCommit: (_, c) => committed.Add(c.detach().clone().DetachFromDisposeScope()));
        s.Context.AddRange(committed);

        var chunk = x0;
        if (overlap > 0)
        {
            using var kept = s.Previous!.narrow(1, s.Previous.shape[1] - overlap, overlap).to(x0.device).to_type(x0.dtype);
            chunk = cat([kept, x0], 1);
        }
        var mask = ones([shape[0], chunk.shape[1], 1, 1, 1], dtype: ScalarType.Bool, device: x0.device);
        mask.narrow(1, 0, overlap).fill_(false);   // the kept frames carry no loss
        var previous = chunk.detach().narrow(1, Math.Max(0, chunk.shape[1] - chunkFrames), Math.Min(chunkFrames, chunk.shape[1])).clone().DetachFromDisposeScope();
        s.Previous?.Dispose();
        s.Previous = previous;
        return (chunk, mask);
    }

    /// <summary>
    /// New frames of a chunk after the stream's first: chunk - fixed overlap; else one of [min_new, min(chunk,
    /// remaining)) in steps of chunk_size, drawn (FastVideo's choice, after LongLive).
    /// </summary>
    private int NewFrameCount(DistillStage stage, int remaining, int chunkFrames)
    {
        if ((stage.FixedOverlap ?? Options.StreamingFixedOverlapLatents) is { } fixedOverlap)
            return Math.Min(chunkFrames - fixedOverlap, remaining);
        int minNew = Math.Max(1, stage.MinNewFrame ?? Options.StreamingMinNewFrame ?? chunkFrames);
        int maxNew = Math.Min(chunkFrames, remaining);
        if (maxNew <= minNew) return maxNew;
        var choices = new List<int>();
        for (int n = minNew; n < maxNew; n += Options.ChunkSize) choices.Add(n);
        using var draw = randint(0, choices.Count, [1], dtype: ScalarType.Int64, device: Student.Device, generator: Generator);
        return choices[(int)draw.item<long>()];
    }

    /// <summary>Mean of <paramref name="values"/> over the elements of the masked frames (all when <paramref name="mask"/> is null).</summary>
    private static Tensor MaskedMean(Tensor values, Tensor? mask)
    {
        if (mask is null) return values.mean();
        using var scope = NewDisposeScope();
        var m = mask.to_type(values.dtype).expand_as(values);
        return ((values * m).sum() / m.sum().clamp_min(1.0)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// DMD on the scored frames: g = (fake x0 - real x0) / mean|x - real x0| per sample (clamped at 1e-6), loss the
    /// masked mean of 0.5 (x - sg(x - g))^2, so the new frames get g / (their element count). Internal for tests.
    /// </summary>
    internal Tensor MaskedDmdLoss(Tensor x, TrainingBatch tb, Tensor? mask, Dictionary<string, Tensor> metrics)
    {
        Tensor grad;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var t = ScoreTimestep(x.shape[0], roundBounds: true);
            var xt = AddScoreNoise(x.detach(), Draw(x), t);
            var fake = ScoreX0(Critic, xt, t, tb, conditional: true);
            var real = Options.RealScoreCfg
                ? Guidance.Guide(Options.RealScoreGuidanceScale, c => ScoreX0(Teacher, xt, t, tb, conditional: c))
                : ScoreX0(Teacher, xt, t, tb, conditional: true);
            var denom = (x.detach().to_type(ScalarType.Float32) - real.to_type(ScalarType.Float32)).abs().mean([1, 2, 3, 4], keepdim: true).clamp_min(1e-6);
            grad = ((fake.to_type(ScalarType.Float32) - real.to_type(ScalarType.Float32)) / denom).nan_to_num().MoveToOuterDisposeScope();
            metrics["dmd_timestep"] = t.to_type(ScalarType.Float32).mean().cpu().MoveToOuterDisposeScope();
        }
        using var xf = x.to_type(ScalarType.Float32);
        using var target = (xf.detach() - grad).detach();
        grad.Dispose();
        using var sq = 0.5 * (xf - target).pow(2);
        return MaskedMean(sq, mask);
    }

    /// <summary>The critic's flow matching on the detached sample: masked mean of (v - (eps - x))^2, a timestep per sample.</summary>
    internal Tensor MaskedCriticLoss(Tensor x, TrainingBatch tb, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        var x0 = x.detach();
        var t = ScoreTimestep(x0.shape[0], roundBounds: true);
        var eps = Draw(x0);
        var v = Critic.PredictNoise(AddScoreNoise(x0, eps, t), t, tb, conditional: true, CfgUncond, AttnKind.Dense);
        var err = (v.to_type(ScalarType.Float32) - (eps - x0).to_type(ScalarType.Float32)).pow(2);
        return MaskedMean(err, mask).MoveToOuterDisposeScope();
    }

    private void EndStream()
    {
        _stream?.Dispose();
        _stream = null;
    }

    /// <summary>The stream as latents: its stage, prompts, committed context blocks and last chunk.</summary>
    public override void SaveState(StateScope s)
    {
        base.SaveState(s);
        var st = s.Scope("stream");
        st.PutValue("active", _stream is not null);
        if (_stream is null) return;
        st.PutValue("stage", _stream.Stage.Index);
        st.PutValue("context_blocks", _stream.Context.Count);
        for (int i = 0; i < _stream.Context.Count; i++) st.PutTensor($"context.{i}", _stream.Context[i]);
        if (_stream.Previous is not null) st.PutTensor("previous", _stream.Previous);
        var names = _stream.Prompts.Names.ToList();
        st.PutValue("channels", names);
        foreach (var n in names)
        {
            var c = _stream.Prompts[n];
            st.PutTensor($"prompts.{n}.values", c.Values);
            if (c.Mask is not null) st.PutTensor($"prompts.{n}.mask", c.Mask);
        }
    }

    public override void LoadState(StateScope s)
    {
        base.LoadState(s);
        EndStream();
        var st = s.Scope("stream");
        if (!st.HasValue("active") || !st.GetValue<bool>("active")) return;
        int stage = st.GetValue<int>("stage");
        if (stage < 0 || stage >= Stages.Count)
            throw new UserError($"checkpoint '{s.State.Source}': its stream belongs to stage {stage}, but the recipe's schedule has {Stages.Count} stage(s)");
        var channels = st.GetValue<List<string>>("channels").Select(n => KeyValuePair.Create(n, new ConditioningChannel(
            st.GetTensor($"prompts.{n}.values").clone().DetachFromDisposeScope(),
            st.HasTensor($"prompts.{n}.mask") ? st.GetTensor($"prompts.{n}.mask").clone().DetachFromDisposeScope() : null)));
        var stream = new Stream { Stage = Stages[stage], Prompts = new Conditioning(channels) };
        var device = Student.Device;
        for (int i = 0, n = st.GetValue<int>("context_blocks"); i < n; i++)
            stream.Context.Add(st.GetTensor($"context.{i}").to(device).clone().DetachFromDisposeScope());
        if (st.HasTensor("previous")) stream.Previous = st.GetTensor("previous").to(device).clone().DetachFromDisposeScope();
        _stream = stream;
    }

    public override void Dispose()
    {
        EndStream();
        base.Dispose();
    }
}

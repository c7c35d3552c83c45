using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Sampling;

/// <summary>Latent frames [Start, Start + Frames) that a stream denoises together; the Index-th block of the clip.</summary>
public readonly record struct StreamBlock(int Index, long Start, long Frames);

/// <summary>A finished block: its x0 [B,n,C,H,W] as it goes into the clip (valid during the call: clone what you keep), and the
/// seconds it took (its commit included).</summary>
public delegate void BlockDone(StreamBlock block, Tensor x0, double seconds);

/// <summary>How each block of a streaming rollout is denoised.</summary>
/// <param name="Timesteps">The few-step schedule t_0 &gt; t_1 &gt; ... of every block (e.g. 1000, 750, 500, 250).</param>
public sealed record StreamingSchedule(IReadOnlyList<double> Timesteps)
{
    /// <summary>The blocks, in order, tiling the clip from frame 0; null = blocks of the model's num_frames_per_block
    /// (<see cref="StreamingSampling.Blocks"/>).</summary>
    public IReadOnlyList<StreamBlock>? Blocks { get; init; }

    /// <summary>The step whose prediction is the block's x0 (an index into <see cref="Timesteps"/>; the block stops
    /// there, as Self-Forcing's random exit step); null = the last step.</summary>
    public Func<StreamBlock, int>? ExitStep { get; init; }

    /// <summary>Run the exit step with autograd and every earlier step without (a training rollout); false leaves the
    /// caller's grad mode alone.</summary>
    public bool GradOnExit { get; init; }

    /// <summary>With <see cref="GradOnExit"/>: blocks that start before this frame run without autograd (Self-Forcing's
    /// start_gradient_frame).</summary>
    public long GradFromFrame { get; init; }

    /// <summary>Move between steps deterministically (re-noise x0 with the noise the step's input implies: the ODE
    /// sampler) instead of with a fresh draw (SDE).</summary>
    public bool Deterministic { get; init; }

    /// <summary>The timestep the finished block is committed at: 0 = its clean x0; above 0 it is first re-noised to
    /// that timestep with a fresh draw (upstream's context_noise).</summary>
    public double ContextTimestep { get; init; }
}

/// <summary>
/// Streaming generation with a causal model (spec 6.4, upstream's CausalDMDDenoisingStage): the clip is produced
/// block by block. Each block starts from its frames of the initial noise and runs the few-step schedule
/// (<see cref="FewStepSampler"/>: predict x0 at t_i, re-noise to t_{i+1} with a fresh draw, ...), attending to the
/// blocks before it; its x0 is then committed as their clean context (a no-grad pass at timestep 0) and handed to
/// the caller at once. Every draw comes from the given noise source in block, then step order, so a seed fixes the
/// clip, with or without a KV cache.
/// </summary>
public static class StreamingSampling
{
    /// <summary>Blocks of <paramref name="framesPerBlock"/> frames from frame 0 (the training forward's blocks); the last may be shorter.</summary>
    public static IReadOnlyList<StreamBlock> Blocks(long frames, int framesPerBlock)
    {
        if (framesPerBlock < 1) throw new ArgumentOutOfRangeException(nameof(framesPerBlock), "a block needs at least one frame");
        var blocks = new List<StreamBlock>();
        for (long s = 0; s < frames; s += framesPerBlock) blocks.Add(new(blocks.Count, s, Math.Min(framesPerBlock, frames - s)));
        return blocks;
    }

    /// <param name="stream">A fresh stream (nothing committed).</param>
    /// <param name="initialNoise">The clip's noise [B,T,C,H,W]; block b starts from its frames. Not modified.</param>
    /// <param name="drawNoise">The re-noising draws (e.g. <see cref="FewStepSampler.StandardNoise"/> of a seeded generator).</param>
    /// <param name="onBlock">Called as soon as each block is finished, before the next one starts.</param>
    /// <returns>The clip's x0 [B,T,C,H,W]: the blocks' predictions, concatenated.</returns>
    public static Tensor Generate(CausalStream stream, Tensor initialNoise, StreamingSchedule schedule, NoiseDraw drawNoise,
        BlockDone? onBlock = null)
    {
        if (stream.Frames != 0) throw new ArgumentException($"the stream already holds {stream.Frames} frames; start a clip with a fresh stream");
        return Continue(stream, initialNoise, schedule, drawNoise, onBlock);
    }

    /// <summary>
    /// As <see cref="Generate"/>, but after the frames the stream already holds (a long stream produced chunk by
    /// chunk). Block starts, and <see cref="StreamingSchedule.GradFromFrame"/>, count from the first new frame.
    /// </summary>
    /// <param name="onCommit">Called with each block's committed context (its x0, or the re-noised x0 with a context
    /// timestep) before it is written to the stream: valid during the call, clone what you keep.</param>
    public static Tensor Continue(CausalStream stream, Tensor initialNoise, StreamingSchedule schedule, NoiseDraw drawNoise,
        BlockDone? onBlock = null, Action<StreamBlock, Tensor>? onCommit = null)
    {
        FewStepSampler.Validate(schedule.Timesteps);
        long frames = initialNoise.shape[1];
        var blocks = schedule.Blocks ?? Blocks(frames, stream.NumFramesPerBlock);
        long next = 0;
        foreach (var block in blocks)
        {
            if (block.Start != next || block.Frames < 1)
                throw new ArgumentException($"block {block.Index} covers frames [{block.Start}, {block.Start + block.Frames}): blocks must tile the clip in order, this one should start at {next}");
            next += block.Frames;
        }
        if (next != frames) throw new ArgumentException($"the blocks cover {next} frames, the noise has {frames}");

        var outputs = new List<Tensor>();
        try
        {
            foreach (var block in blocks)
            {
                var sw = Stopwatch.StartNew();
                outputs.Add(Block(stream, initialNoise.narrow(1, block.Start, block.Frames), block, schedule, drawNoise, onCommit));
                // Outside the block's dispose scope: what the callback keeps is its own.
                onBlock?.Invoke(block, outputs[^1], sw.Elapsed.TotalSeconds);
            }
            return cat(outputs, 1);
        }
        finally
        {
            foreach (var o in outputs) o.Dispose();
        }
    }

    /// <summary>One block: its few-step schedule up to the exit step, then its commit; returns its x0.</summary>
    private static Tensor Block(CausalStream stream, Tensor noise, StreamBlock block, StreamingSchedule schedule, NoiseDraw drawNoise,
        Action<StreamBlock, Tensor>? onCommit)
    {
        using var scope = NewDisposeScope();
        int exit = schedule.ExitStep?.Invoke(block) ?? schedule.Timesteps.Count - 1;
        if (exit < 0 || exit >= schedule.Timesteps.Count)
            throw new ArgumentException($"block {block.Index}: exit step {exit} is outside [0, {schedule.Timesteps.Count})");
        bool grad = schedule.GradOnExit && block.Start >= schedule.GradFromFrame;
        Tensor x0;
        using (schedule.GradOnExit && !grad ? no_grad() : null)
            x0 = FewStepSampler.Sample(stream.PredictX0, stream.AddNoise, noise, schedule.Timesteps.Take(exit + 1).ToArray(),
                drawNoise, grad, stepNoise: schedule.Deterministic ? stream.ImpliedNoise : null);
        var context = x0.detach();
        var t = full([noise.shape[0]], schedule.ContextTimestep, dtype: ScalarType.Float32);
        if (schedule.ContextTimestep > 0) context = stream.AddNoise(context, drawNoise(context), t.to(context.device));
        onCommit?.Invoke(block, context);
        stream.Commit(context, t);
        return x0.MoveToOuterDisposeScope();
    }
}

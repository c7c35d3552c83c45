using System.ComponentModel;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Train.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.KnowledgeDistillation;

/// <summary>The <c>method:</c> options of kd_causal: kd's and the block size of its per-frame step draws.</summary>
public sealed record KDCausalOptions : KDOptions
{
    [Description("frames sharing one student step in a draw (null = the student's num_frames_per_block; upstream's default is 3)")]
    public int? NumFramesPerBlock { get; init; }

    public override IEnumerable<OptionProblem> Check()
    {
        foreach (var p in base.Check()) yield return p;
        if (NumFramesPerBlock is < 1) yield return new("num_frames_per_block", $"must be >= 1, got {NumFramesPerBlock}");
    }
}

/// <summary>
/// KD for a causal student (spec 6.6, KDCausalMethod): as <see cref="KDMethod"/>, but each block of
/// num_frames_per_block frames draws its own student step, so frame f starts from the teacher's state at
/// t_list[idx[b,f]] and the block-causal training forward sees per-frame timesteps.
/// </summary>
public sealed class KDCausalMethod : KDMethod
{
    public static new MethodDescriptor Descriptor { get; } = MethodDescriptor.Of<KDCausalOptions>("kd_causal",
        "knowledge distillation (ODE init) of a causal student: kd with one random student step per block of frames (roles as kd)",
        cfg => CheckRoles(cfg, "kd_causal"), (cfg, options, roles) => new KDCausalMethod(cfg, options, roles)) with
    {
        ClassPaths = ["fastvideo.train.methods.knowledge_distillation.kd.KDCausalMethod",
            "fastvideo.train.methods.knowledge_distillation.KDCausalMethod"],
    };

    public KDCausalMethod(RunConfig config, KDCausalOptions options, IReadOnlyDictionary<string, ModelBase> roles)
        : base(config, options, roles, "kd_causal")
    {
        var causal = Student as ICausalModel;
        if (options.NumFramesPerBlock is null && causal is null)
            throw new UserError($"method.num_frames_per_block: kd_causal needs it for a student of the non-causal {Student.Context.Family.Name} family (or use kd)");
        FramesPerBlock = options.NumFramesPerBlock ?? causal!.NumFramesPerBlock;
    }

    /// <summary>Frames that share one drawn student step.</summary>
    public int FramesPerBlock { get; }

    /// <summary>Student step indices [B,T] in [0, K): one draw per block of <see cref="FramesPerBlock"/> frames, repeated over its frames.</summary>
    public Tensor SampleStepIndices(long batch, long frames)
    {
        using var scope = NewDisposeScope();
        long c = FramesPerBlock;
        var blocks = randint(0, Steps, [batch, (frames + c - 1) / c], dtype: ScalarType.Int64, device: Student.Device, generator: Generator);
        return blocks.repeat_interleave(c, 1).narrow(1, 0, frames).MoveToOuterDisposeScope();
    }

    public override StepResult SingleTrainStep(RawBatch batch, int iteration)
    {
        var trajectory = batch.Extras["trajectory_latents"].to(Student.Device);   // [B,S,T,C,H,W]
        long b = trajectory.shape[0], frames = trajectory.shape[2];
        var idx = SampleStepIndices(b, frames);                                   // [B,T]
        // The K trajectory states of t_list[:-1], then frame f of sample b from state idx[b,f].
        var relevant = trajectory.index_select(1, tensor(Enumerable.Range(0, Steps).Select(i => (long)TrajectoryIndex(Options.TList[i])).ToArray(), device: Student.Device));
        var gather = idx.reshape(b, 1, frames, 1, 1, 1).expand(b, 1, frames, trajectory.shape[3], trajectory.shape[4], trajectory.shape[5]);
        var xt = relevant.gather(1, gather).squeeze(1);                           // [B,T,C,H,W]
        var tList = tensor(Options.TList.Take(Steps).Select(t => (float)t).ToArray(), device: Student.Device);
        var timesteps = tList.index_select(0, idx.reshape(-1)).reshape(b, frames);   // [B,T]
        var loss = StudentLoss(batch, xt, timesteps);
        return Result(loss, timesteps, new Dictionary<string, Tensor> { ["kd_mean_step_idx"] = idx.to_type(ScalarType.Float32).mean().cpu() });
    }
}

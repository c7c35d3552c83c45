using FastVideo.Configs;
using FastVideo.Train.Models;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.FineTuning;

/// <summary>
/// Teacher-forcing SFT (FastVideo's tfsft.py, after 9a8bbe18f): diffusion-forcing SFT in which every block is denoised
/// with the <em>clean</em> frames of the earlier blocks as its causal context (the student's teacher-forcing forward,
/// <see cref="ICausalModel.PredictNoiseTeacherForcing"/>), not their noisy versions. Options, draws and loss are dfsft's.
/// </summary>
public sealed class TeacherForcingSFTMethod : DiffusionForcingSFTMethod
{
    public static new MethodDescriptor Descriptor { get; } = MethodDescriptor.Of<DiffusionForcingSFTOptions>("tfsft",
        "teacher-forcing SFT of a causal student: dfsft with each block conditioned on the clean frames of the earlier blocks",
        cfg => CheckRoles(cfg, "tfsft"), (cfg, options, roles) => new TeacherForcingSFTMethod(cfg, options, roles)) with
    {
        ClassPaths = ["fastvideo.train.methods.fine_tuning.tfsft.TeacherForcingSFTMethod",
            "fastvideo.train.methods.fine_tuning.TeacherForcingSFTMethod", "fastvideo.train.methods.TeacherForcingSFTMethod"],
    };

    public TeacherForcingSFTMethod(RunConfig config, DiffusionForcingSFTOptions options, IReadOnlyDictionary<string, ModelBase> roles)
        : base(config, options, roles, "tfsft") { }

    protected override Tensor Predict(Tensor xt, Tensor t, TrainingBatch tb, Tensor x0) =>
        Causal.PredictNoiseTeacherForcing(xt, t, tb, x0, conditional: true, attnKind: AttnKind);
}

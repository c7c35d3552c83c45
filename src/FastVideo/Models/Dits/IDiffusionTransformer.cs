using FastVideo.Models.Layers;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

/// <summary>What a model plugin sets on its DiT whatever the architecture: activation checkpointing and the compute dtype.</summary>
public interface IDiffusionTransformer
{
    /// <summary>
    /// Activation checkpointing of the blocks (null: none), set by the model plugin for a trainable role. Applies only
    /// when grad mode is on; sampling and frozen forwards run plainly.
    /// </summary>
    CheckpointingPolicy? GradientCheckpointing { get; set; }

    /// <summary>dtype of the parameters (the masters); outputs are returned in it.</summary>
    ScalarType ParamDtype { get; }

    /// <summary>
    /// The dtype activations are computed in; null = <see cref="ParamDtype"/>. With bf16 over fp32 parameters the
    /// weights are cast per use and gradients reach the fp32 masters (FastVideo's bf16 autocast / FSDP mixed
    /// precision); norms and modulation stay in fp32.
    /// </summary>
    ScalarType? ComputeDtype { get; set; }
}

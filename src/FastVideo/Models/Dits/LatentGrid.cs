using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FastVideo.Models.Dits;

/// <summary>Sizes of a [B,C,T,H,W] latent input and of its token grid (frames F', rows H', columns W') after patching.</summary>
public readonly record struct LatentGrid(long Batch, long Frames, long Height, long Width, long GridFrames, long GridHeight, long GridWidth)
{
    /// <summary>Checks a [B,C,T,H,W] input against a model's <paramref name="channels"/> and patch (t, h, w) and returns its sizes.</summary>
    public static LatentGrid Of(Tensor hiddenStates, long channels, int pt, int ph, int pw)
    {
        string Shape(Tensor x) => "[" + string.Join(",", x.shape) + "]";
        if (hiddenStates.dim() != 5) throw new ArgumentException($"hidden_states must be [B,C,T,H,W], got {Shape(hiddenStates)}");
        long b = hiddenStates.shape[0], t = hiddenStates.shape[2], h = hiddenStates.shape[3], w = hiddenStates.shape[4];
        if (hiddenStates.shape[1] != channels)
            throw new ArgumentException($"hidden_states has {hiddenStates.shape[1]} channels, the model expects {channels}");
        if (t % pt != 0 || h % ph != 0 || w % pw != 0)
            throw new ArgumentException($"latent size {t}x{h}x{w} is not divisible by the patch size [{pt},{ph},{pw}]");
        return new LatentGrid(b, t, h, w, t / pt, h / ph, w / pw);
    }

    /// <summary>
    /// Patch embedding by a Conv3d whose kernel equals its stride: [B,C,T,H,W] -> [B,S,D] tokens ordered (frame, row,
    /// column), computed in <paramref name="dtype"/> with the weights cast per use.
    /// </summary>
    public static Tensor EmbedPatches(Conv3d conv, Tensor hiddenStates, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var w = conv.weight!;
        var patches = w.dtype == dtype
            ? conv.forward(hiddenStates.to_type(dtype))
            : nn.functional.conv3d(hiddenStates.to_type(dtype), w.to_type(dtype), conv.bias!.to_type(dtype), strides: w.shape[2..]);
        return patches.flatten(2).transpose(1, 2).MoveToOuterDisposeScope();
    }

    /// <summary>Tokens per latent frame (H'·W').</summary>
    public long FrameTokens => GridHeight * GridWidth;
    public long Tokens => GridFrames * FrameTokens;
}

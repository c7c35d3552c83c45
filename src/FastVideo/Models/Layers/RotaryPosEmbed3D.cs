using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>
/// 3-axis rotary position embedding over a (frames, height, width) token grid: the head dim d splits into per-axis
/// dims d_t + d_h + d_w (Wan: d_t = d - 4 floor(d/6), d_h = d_w = 2 floor(d/6); HunyuanVideo: rope_axes_dim); each axis
/// uses angles p * theta^(-2j/d_a). Rotation acts on consecutive pairs (x[2j], x[2j+1]).
/// </summary>
public static class RotaryPosEmbed3D
{
    public static (int T, int H, int W) AxisDims(int headDim)
    {
        int hw = 2 * (headDim / 6);
        return (headDim - 2 * hw, hw, hw);
    }

    /// <summary>
    /// cos and sin tables of shape [S, d/2] (one angle per pair), float32, for the grid (frames, height, width) with
    /// the frame index starting at <paramref name="startFrame"/>. Token order: frame, then row, then column. Wan's
    /// split of the head dim (<see cref="AxisDims"/>), angles computed in float64.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) Tables(int headDim, long frames, long height, long width, double theta = 10000.0,
        long startFrame = 0, Device? device = null)
    {
        var (dt, dh, dw) = AxisDims(headDim);
        return Tables([dt, dh, dw], frames, height, width, theta, ScalarType.Float64, startFrame, device);
    }

    /// <summary>
    /// The same for explicit per-axis dims (even, summing to the head dim; HunyuanVideo's rope_axes_dim), with the
    /// positions, frequencies and angles computed in <paramref name="angleDtype"/> (Diffusers' HunyuanVideo: float32).
    /// </summary>
    public static (Tensor Cos, Tensor Sin) Tables(IReadOnlyList<int> axisDims, long frames, long height, long width, double theta,
        ScalarType angleDtype, long startFrame = 0, Device? device = null)
    {
        if (axisDims.Count != 3 || axisDims.Any(d => d < 2 || d % 2 != 0))
            throw new ArgumentException($"RoPE needs 3 even axis dims, got [{string.Join(",", axisDims)}]");
        using var scope = NewDisposeScope();
        var ft = AxisAngles(axisDims[0], arange(startFrame, startFrame + frames, dtype: angleDtype), theta); // [F, dt/2]
        var fh = AxisAngles(axisDims[1], arange(0, height, dtype: angleDtype), theta);
        var fw = AxisAngles(axisDims[2], arange(0, width, dtype: angleDtype), theta);
        long n = frames * height * width;
        var angles = cat([
            ft.reshape(frames, 1, 1, -1).expand(frames, height, width, -1),
            fh.reshape(1, height, 1, -1).expand(frames, height, width, -1),
            fw.reshape(1, 1, width, -1).expand(frames, height, width, -1),
        ], 3).reshape(n, axisDims.Sum() / 2);
        var cosT = angles.cos().to_type(ScalarType.Float32);
        var sinT = angles.sin().to_type(ScalarType.Float32);
        if (device is not null) { cosT = cosT.to(device); sinT = sinT.to(device); }
        return (cosT.MoveToOuterDisposeScope(), sinT.MoveToOuterDisposeScope());
    }

    private static Tensor AxisAngles(int dim, Tensor positions, double theta)
    {
        var j = arange(0, dim, 2, dtype: positions.dtype);
        var inv = 1.0 / pow(theta, j / dim);
        return outer(positions, inv); // [P, dim/2]
    }

    /// <summary>
    /// Rotates x [B, S, heads, d] by the tables [S, d/2]; computed in float32, returned in x's dtype. Each pair is one
    /// complex number times e^(i angle), as Diffusers writes it: one complex multiply forward and one backward instead
    /// of the dozen real ops of the expanded form (a third of the time, and fewer bf16/fp32 casts' worth of memory).
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var shape = x.shape;
        var pairs = view_as_complex(x.to_type(ScalarType.Float32).contiguous().view(shape[0], shape[1], shape[2], shape[3] / 2, 2));
        var rotation = view_as_complex(stack([cos, sin], -1)).reshape(1, shape[1], 1, shape[3] / 2);
        return view_as_real(pairs * rotation).view(shape).to_type(x.dtype).MoveToOuterDisposeScope();
    }
}

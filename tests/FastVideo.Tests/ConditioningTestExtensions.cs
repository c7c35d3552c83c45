using FastVideo.Data;
using FastVideo.Train.Models;
using static TorchSharp.torch;

namespace FastVideo.Tests;

/// <summary>Short names for the text channel in tests.</summary>
internal static class ConditioningTestExtensions
{
    public static Tensor TextEmbedding(this RawBatch b) => b.Conditioning[Conditioning.Text].Values;
    public static Tensor TextAttentionMask(this RawBatch b) => b.Conditioning[Conditioning.Text].Mask!;
    public static Tensor TextEmbedding(this Conditioning c) => c[Conditioning.Text].Values;
    public static Tensor TextAttentionMask(this Conditioning c) => c[Conditioning.Text].Mask!;

    public static RawBatch TextBatch(Tensor latent, Tensor text, Tensor mask) =>
        new() { VaeLatent = latent, Conditioning = Conditioning.FromText(text, mask) };
}

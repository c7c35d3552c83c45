using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Data;

// PLACEHOLDER until the data layer lands (branch data); replaced by its RawBatch.
public sealed class RawBatch : IDisposable
{
    public Tensor? VaeLatent { get; init; }
    public required Tensor TextEmbedding { get; init; }
    public required Tensor TextAttentionMask { get; init; }
    public IReadOnlyList<IReadOnlyDictionary<string, object?>> InfoList { get; init; } = [];
    public IReadOnlyList<string> Captions { get; init; } = [];
    public IReadOnlyList<long> SampleIndices { get; init; } = [];
    public void Dispose() { VaeLatent?.Dispose(); TextEmbedding.Dispose(); TextAttentionMask.Dispose(); }
}

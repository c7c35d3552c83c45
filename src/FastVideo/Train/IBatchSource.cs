using System.Text.Json.Nodes;
using FastVideo.Data;

namespace FastVideo.Train;

/// <summary>
/// An endless stream of loader batches with a restorable position. The trainer owns each batch it takes (and
/// disposes it); <see cref="GetState"/> is saved with every checkpoint and handed to <see cref="Restore"/> on resume.
/// </summary>
public interface IBatchSource
{
    RawBatch Next();
    JsonNode? GetState();
    void Restore(JsonNode? state);
}

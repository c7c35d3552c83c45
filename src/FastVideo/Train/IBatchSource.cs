using System.Text.Json.Nodes;
using FastVideo.Data;

namespace FastVideo.Train;

/// <summary>
/// An endless stream of loader batches with a restorable position. The trainer owns each batch it takes (and
/// disposes it); <see cref="GetState"/> is saved with every checkpoint and handed to <see cref="Restore"/> on resume.
/// Whoever creates a source disposes it (the trainer only borrows it): a loader's files, prefetch thread and
/// prefetched batches are freed then.
/// </summary>
public interface IBatchSource : IDisposable
{
    RawBatch Next();
    JsonNode? GetState();
    void Restore(JsonNode? state);
}

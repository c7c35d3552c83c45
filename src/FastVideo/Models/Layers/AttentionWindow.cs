using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>
/// Which earlier tokens a chunk of queries attends to besides its own: every earlier token (<see cref="Global"/>), or
/// the first <see cref="SinkTokens"/> tokens of the sequence (attention sinks) and the last <see cref="RecentTokens"/>
/// tokens up to the chunk's end. The causal training forward and the streaming caches both read it, so that they
/// attend to the same keys.
/// </summary>
public sealed record AttentionWindow(long SinkTokens = 0, long? RecentTokens = null)
{
    public static AttentionWindow Global { get; } = new();

    /// <summary>
    /// The keys a chunk ending at token <paramref name="end"/> (exclusive) sees: [0, SinkEnd) and [RecentStart, end);
    /// (0, 0) when that is all of [0, end).
    /// </summary>
    public (long SinkEnd, long RecentStart) Visible(long end)
    {
        if (RecentTokens is not { } recent) return (0, 0);
        long recentStart = Math.Max(0, end - recent);
        return recentStart <= SinkTokens ? (0, 0) : (SinkTokens, recentStart);
    }

    /// <summary>The visible part of a whole sequence <paramref name="tokens"/> [B,H,S,d] for a chunk ending at <paramref name="end"/>.</summary>
    public Tensor Select(Tensor tokens, long end)
    {
        var (sinkEnd, recentStart) = Visible(end);
        if (recentStart == 0) return tokens.narrow(2, 0, end);
        var recent = tokens.narrow(2, recentStart, end - recentStart);
        return sinkEnd == 0 ? recent : cat([tokens.narrow(2, 0, sinkEnd), recent], 2);
    }
}

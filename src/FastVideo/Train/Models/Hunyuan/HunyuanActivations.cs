using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using static TorchSharp.torch;

namespace FastVideo.Train.Models.Hunyuan;

/// <summary>
/// Rough activations a trainable HunyuanVideo transformer keeps for backward on one micro-batch, for the dry-run
/// plan, for N video tokens and L = text_len - 1 text tokens (row 0 of FastVideo's packed text is the pooled vector),
/// in the compute dtype: a dual-stream block about (N + L)·(12·D + 2·F) values (two norms and modulations, q/k/v,
/// attention output and projection, the MLP's input, hidden and activation); a single-stream block
/// (N + L)·(8·D + 3·F) (norm, q/k/v, attention output, MLP hidden and activation, the concatenation, projection).
/// Attention is SDPA with a key mask, flash-style on the CPU: no (N + L)² matrix. With activation checkpointing a
/// checkpointed block keeps its input ((N + L)·D) instead and backward holds one block's activations while it
/// recomputes; ops keeps about half of a block's values. The refiner (L tokens, 2 layers) is left out. Not walked
/// tensor by tensor as Wan's, and not measured against RSS; the allocator's share is <see cref="AllocatorRetention"/>'s
/// rule on these tensors (those below its mmap threshold).
/// </summary>
public static class HunyuanActivations
{
    public static ActivationEstimate Estimate(ActivationQuery q)
    {
        var c = HunyuanVideoTransformerConfig.FromJson(q.TransformerConfig, "transformer config");
        var s = q.Shape;
        long bytes = q.ComputeDtype == ScalarType.Float32 ? 4 : 2;
        long image = s.Frames / c.PatchSizeT * (s.Height / c.PatchSize) * (s.Width / c.PatchSize);
        long n = s.Batch * (image + Math.Max(0, s.TextTokens - 1));
        long dim = c.InnerDim, f = c.MlpDim;
        // Per block: [n, D] and [n, F] tensors (dual: 12 and 2, single: 8 and 3), and the share of them small enough
        // for the allocator's heap (bigger ones are mapped and unmapped on their own).
        var dual = new Block(n * dim * bytes, 12, n * f * bytes, 2);
        var single = new Block(n * dim * bytes, 8, n * f * bytes, 3);
        var blocks = Enumerable.Repeat(dual, c.NumLayers).Concat(Enumerable.Repeat(single, c.NumSingleLayers)).ToList();
        long largest = blocks.Count == 0 ? 0 : blocks.Max(b => b.Bytes);
        long largestHeap = blocks.Count == 0 ? 0 : blocks.Max(b => b.Heap);
        const string attention = "SDPA with a key mask (flash-style on CPU: no N x N matrix); rough per-block counts";
        if (!q.Role.Options.Trainable) return new ActivationEstimate(0, largest / 2, 0, $"forward without grad: one block's working set; {attention}");
        var policy = CheckpointingPolicy.FromRecipe(q.Checkpointing);
        if (policy is null)
        {
            long all = blocks.Sum(b => b.Bytes);
            return new ActivationEstimate(all, all + largest / 2, AllocatorRetention.Plain(blocks.Sum(b => b.Heap)),
                $"{blocks.Count} blocks keep everything; {attention}");
        }
        long input = n * dim * bytes;
        long kept = policy.Mode == CheckpointingMode.Ops
            ? blocks.Sum(b => input + b.Bytes / 2)
            : blocks.Select((b, i) => policy.Checkpoints(i) ? input : b.Bytes).Sum();
        int checkpointed = Enumerable.Range(0, blocks.Count).Count(policy.Checkpoints);
        return new ActivationEstimate(kept, kept + largest + largest / 2, AllocatorRetention.Checkpointed(checkpointed, largestHeap),
            $"{policy} checkpointing: {checkpointed} of {blocks.Count} blocks recomputed in backward; {attention}");
    }

    /// <summary>A block's kept tensors: Hidden tensors of DBytes each ([n, D]) and Mlp of FBytes each ([n, F]).</summary>
    private sealed record Block(long DBytes, int Hidden, long FBytes, int Mlp)
    {
        public long Bytes => Hidden * DBytes + Mlp * FBytes;
        public long Heap => (DBytes < AllocatorRetention.MmapThreshold ? Hidden * DBytes : 0) + (FBytes < AllocatorRetention.MmapThreshold ? Mlp * FBytes : 0);
    }
}

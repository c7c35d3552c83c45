using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using static TorchSharp.torch;

namespace FastVideo.Train.Models.Hunyuan;

/// <summary>
/// The activation memory of a trainable HunyuanVideo transformer for one micro-batch, for the dry-run plan, for N
/// image tokens and L = text_len - 1 text tokens (row 0 of FastVideo's packed text is the pooled vector), counted per
/// block from how <see cref="HunyuanVideoTransformerBlock"/> and <see cref="HunyuanVideoSingleTransformerBlock"/> run:
/// <list type="bullet">
/// <item>a modulation keeps its fp32 LayerNorm input and normalised value, a gate its fp32 branch output, a q/k
/// RMSNorm its fp32 input; the modulated linear inputs, v, the joint q/k/v, the attention output and the MLP's hidden
/// value and GELU output are kept in the compute dtype (a single-stream block also the [attention ; MLP] concat);</item>
/// <item>attention is SDPA with a key mask, flash-style on the CPU: no (N + L)² matrix (under bf16 compute over at
/// least <see cref="Bf16Attention.MinKeys"/> keys <see cref="Bf16Attention"/>, which also keeps a bf16 shift per query
/// and head);</item>
/// <item>with bf16 compute over fp32 masters every linear keeps its bf16 weight copy;</item>
/// <item>backward holds one block's gradients at a time (as <see cref="Wan.WanActivations"/> counts them).</item>
/// </list>
/// Checkpointing keeps a checkpointed block's input instead (ops: also about half of its values) and recomputes one
/// block at a time. A LoRA role is counted as one that trains its base (an over-estimate: a frozen linear keeps no
/// input); the token refiner (L tokens) is left out. Measured against RSS: bench/results/memory-plan-2026-12-04.md.
/// </summary>
public static class HunyuanActivations
{
    public static ActivationEstimate Estimate(ActivationQuery q)
    {
        var c = HunyuanVideoTransformerConfig.FromJson(q.TransformerConfig, "transformer config");
        var s = q.Shape;
        long cb = Bytes(q.ComputeDtype);
        long image = s.Batch * (s.Frames / c.PatchSizeT) * (s.Height / c.PatchSize) * (s.Width / c.PatchSize);
        long text = s.Batch * Math.Max(0, s.TextTokens - 1);
        long n = image + text, d = c.InnerDim, f = c.MlpDim;
        bool casts = q.ComputeDtype != q.MasterDtype;
        bool bf16Kernel = Bf16Attention.AppliesTo(q.ComputeDtype, n / Math.Max(1, s.Batch));   // joint keys per sample
        long rowStats = Bf16Attention.RowStatBytes(bf16Kernel) * n * c.NumAttentionHeads;   // log-sum-exp, the kernel's shift

        var dual = new Block();
        foreach (long t in new[] { image, text })
        {
            if (casts)
            {
                dual.Add(4, cb * d * d);   // bf16 weight copies: q, k, v, out
                dual.Add(1, cb * 6 * d * d);   // the 6-way modulation
                dual.Add(2, cb * d * f);   // the MLP
            }
            dual.Add(8, 4 * t * d);    // fp32: 2 modulations x (input, normalised), 2 gates, q/k RMSNorm inputs
            dual.Add(3, cb * t * d);   // modulated attention and MLP inputs, v
            dual.Add(2, cb * t * f);   // MLP hidden value and its GELU
        }
        dual.Add(4, cb * n * d);       // joint q, k, v and the attention output
        dual.Add(1, rowStats);
        var single = new Block();
        if (casts)
        {
            single.Add(3, cb * d * d);   // bf16 weight copies: q, k, v
            single.Add(1, cb * 3 * d * d);   // the 3-way modulation
            single.Add(1, cb * d * f);   // proj_mlp
            single.Add(1, cb * (d + f) * d);   // proj_out
        }
        single.Add(5, 4 * n * d);      // fp32: modulation (input, normalised), gate, q/k RMSNorm inputs
        single.Add(5, cb * n * d);     // the modulated input, q, k, v, attention output
        single.Add(2, cb * n * f);     // MLP hidden value and its GELU
        single.Add(1, cb * n * (d + f));   // [attention ; MLP], proj_out's input
        single.Add(1, rowStats);

        var backward = new Block();   // the MLP's two [n, F] gradients, q/k/v's, fp32 norm temporaries, a weight gradient
        backward.Add(2, cb * n * f);
        backward.Add(3, cb * n * d);
        backward.Add(3, 4 * n * d);
        if (q.TrainsBase) { backward.Add(1, cb * d * f); backward.Add(1, 4 * d * f); }
        // Outside the blocks: the patch embedding's input, the output head's norm, modulation and input, the loss terms.
        long outside = cb * s.LatentValues + (4 + 4 + cb) * image * d + 6L * 4 * s.LatentValues;

        var blocks = Enumerable.Repeat(dual, c.NumLayers).Concat(Enumerable.Repeat(single, c.NumSingleLayers)).ToList();
        var largest = blocks.Count == 0 ? new Block() : blocks.MaxBy(b => b.Bytes)!;
        string attention = $"{(bf16Kernel ? "bf16 attention kernel" : "SDPA")} with a key mask (flash-style on CPU: no N x N matrix)";
        if (!q.Role.Options.Trainable)
            return new ActivationEstimate(0, largest.Bytes / 2, 0, $"forward without grad: one block's working set; {attention}");
        var policy = CheckpointingPolicy.FromRecipe(q.Checkpointing);
        if (policy is null)
        {
            long kept = blocks.Sum(b => b.Bytes) + outside;
            return new ActivationEstimate(kept, kept + backward.Bytes, AllocatorRetention.Plain(blocks.Sum(b => b.Heap)),
                $"{blocks.Count} blocks keep everything; {attention}");
        }
        long input = cb * n * d;
        long keptCkpt = blocks.Select((b, i) => !policy.Checkpoints(i) ? b.Bytes : policy.Selective ? input + b.Bytes / 2 : input).Sum() + outside;
        int checkpointed = Enumerable.Range(0, blocks.Count).Count(policy.Checkpoints);
        return new ActivationEstimate(keptCkpt, keptCkpt + largest.Bytes + backward.Bytes,
            AllocatorRetention.Checkpointed(checkpointed, largest.Heap + backward.Heap),
            $"{policy} checkpointing: {checkpointed} of {blocks.Count} blocks recomputed in backward; {attention}");
    }

    /// <summary>A block's kept tensors (and weight copies): total bytes, and those in tensors small enough for the
    /// allocator's heap (below <see cref="AllocatorRetention.MmapThreshold"/>; bigger ones are mapped on their own).</summary>
    private sealed class Block
    {
        public long Bytes { get; private set; }
        public long Heap { get; private set; }
        public void Add(int count, long bytesEach)
        {
            Bytes += count * bytesEach;
            if (bytesEach < AllocatorRetention.MmapThreshold) Heap += count * bytesEach;
        }
    }

    private static long Bytes(ScalarType t) => t == ScalarType.Float32 ? 4 : 2;
}

using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using static TorchSharp.torch;

namespace FastVideo.Train.Models.Wan;

/// <summary>
/// The activation memory of a Wan transformer (bidirectional or block-causal) for one micro-batch, for the dry-run
/// plan. It walks one block's forward as <see cref="WanTransformerBlock"/> runs it and counts the tensors autograd
/// keeps for backward, each once (a tensor several ops keep is one tensor):
/// <list type="bullet">
/// <item>norms, modulation and RoPE run in fp32, the linears and attention in the compute dtype; a layer_norm keeps
/// its fp32 input, RMSNorm its fp32 input (and its normalised value when its weight trains), RoPE nothing but its
/// tables, an fp32 copy of a compute-dtype tensor is a new tensor;</item>
/// <item>a linear keeps its input only when its weight trains (a frozen base keeps only the weight, to pass the
/// gradient on); a LoRA adapter keeps an fp32 copy of the input (the input itself in fp32 compute) and its rank-r
/// hidden value; with bf16 compute over fp32 masters every linear keeps its bf16 weight copy;</item>
/// <item>attention is SDPA, which on the CPU runs flash-attention style: it keeps q, k, v, the output and a
/// log-sum-exp per query and head, never the N x N probability matrix; under bf16 compute over at least
/// <see cref="Bf16Attention.MinKeys"/> keys it is <see cref="Bf16Attention"/>, which keeps the same plus a bf16 shift
/// per query and head (the ops policy keeps its log-sum-exp and shifts with its output) and holds a block of scores at
/// a time;</item>
/// <item>activation checkpointing keeps a checkpointed block's input (ops: also every other linear output and both
/// attention outputs), and backward recomputes one block at a time.</item>
/// </list>
/// Peak = kept + (with checkpointing) one recomputed block + one block's backward (the gradients flowing through it,
/// a weight gradient in the compute dtype and its conversion). A frozen role (forward without grad) holds one
/// block's working set. Checked against measured memory by bench/MemoryPlanBench (probe).
/// </summary>
public static class WanActivations
{
    /// <param name="q">The role, its transformer config, the data shape and dtypes.</param>
    /// <param name="causal">The block-causal attention settings of a wan_causal role (null: bidirectional).</param>
    public static ActivationEstimate Estimate(ActivationQuery q, CausalAttentionConfig? causal = null)
    {
        var c = WanTransformerConfig.FromJson(q.TransformerConfig, "transformer config");
        var s = q.Shape;
        var p = c.PatchSize;
        long frameTokens = s.Height / p[1] * (s.Width / p[2]);
        var z = new Sizes(
            N: s.Batch * (s.Frames / p[0]) * frameTokens, Text: s.Batch * s.TextTokens, D: c.InnerDim, F: c.FfnDim,
            Heads: c.NumAttentionHeads, C: Bytes(q.ComputeDtype), M: Bytes(q.MasterDtype), Rank: q.Lora?.Rank ?? 0,
            SelfKernel: Bf16Attention.AppliesTo(q.ComputeDtype, (s.Frames / p[0]) * frameTokens),
            CrossKernel: Bf16Attention.AppliesTo(q.ComputeDtype, s.TextTokens));
        var adapted = AdaptedLayers(q, c);
        string kernel = z.SelfKernel ? "bf16 attention kernel" : "SDPA";
        string attention = causal is null ? $"{kernel} (flash-style on CPU: no N x N matrix)" : $"block-causal {kernel} per block of frames (flash-style: no N x N matrix)";
        if (!q.Role.Options.Trainable)
            return new ActivationEstimate(0, ForwardWorkingSet(z), 0, $"forward without grad: one block's working set; {attention}");

        var shared = new Tally();
        var block = Block(z, q.TrainsBase, adapted, shared, CausalBlockBytes(causal, z, s, frameTokens, p[0]));
        var casts = q.ComputeDtype != q.MasterDtype ? BlockLinearCasts(c, z.C) : new Tally();
        long outside = Outside(z, s, q.TrainsBase, adapted, shared);
        var backward = Backward(z, q.TrainsBase);
        // A block run with grad: what it keeps, its weight casts and its backward (the unit the allocator sees).
        long blockBytes = block.Total + casts.Total, workingSetHeap = block.Heap + casts.Heap + backward.Heap;
        var policy = CheckpointingPolicy.FromRecipe(q.Checkpointing);
        long layers = c.NumLayers;
        long kept, peak, retained;
        string how;
        if (policy is null)
        {
            kept = layers * blockBytes + shared.Total + outside;
            peak = kept + backward.Total;
            retained = AllocatorRetention.Plain(layers * (block.Heap + casts.Heap));
            how = $"{layers} blocks keep everything";
        }
        else
        {
            // A checkpointed block keeps its input; ops also the outputs of to_q, to_v (self and cross), the FFN's
            // up-projection and both attentions. The context is an input of every node.
            long keptPerCheckpointed = policy.Selective ? z.C * (6 * z.N * z.D + z.N * z.F + z.Text * z.D) : z.C * z.N * z.D;
            if (policy.Selective)   // the bf16 kernel's row statistics, kept with its output
                keptPerCheckpointed += (z.SelfKernel ? z.RowStats(true) : 0) + (z.CrossKernel ? z.RowStats(true) : 0);
            long checkpointed = Enumerable.Range(0, c.NumLayers).Count(policy.Checkpoints);
            shared.Keep("ctx", z.C * z.Text * z.D);
            kept = checkpointed * keptPerCheckpointed + (layers - checkpointed) * blockBytes + shared.Total + outside;
            peak = kept + blockBytes + backward.Total;
            retained = AllocatorRetention.Checkpointed(checkpointed, workingSetHeap);
            how = $"{policy} checkpointing: {checkpointed} of {layers} blocks recomputed in backward";
        }
        return new ActivationEstimate(kept, peak, retained, $"{how}; {attention}");
    }

    private sealed record Sizes(long N, long Text, long D, long F, long Heads, long C, long M, int Rank, bool SelfKernel, bool CrossKernel)
    {
        /// <summary>What one attention keeps per query and head besides its output: the log-sum-exp (fp32), with the
        /// bf16 kernel also its shift (bf16).</summary>
        public long RowStats(bool kernel) => Bf16Attention.RowStatBytes(kernel) * N * Heads;
    }

    /// <summary>
    /// Tensors, each counted once by its name: <see cref="Total"/> bytes, of which <see cref="Heap"/> in tensors small
    /// enough for the allocator's heap (below <see cref="AllocatorRetention.MmapThreshold"/>; bigger ones are mapped
    /// and unmapped on their own).
    /// </summary>
    private sealed class Tally
    {
        private readonly Dictionary<string, long> _kept = new(StringComparer.Ordinal);
        public void Keep(string name, long bytes) => _kept.TryAdd(name, bytes);
        public long Total => _kept.Values.Sum();
        public long Heap => _kept.Values.Where(b => b < AllocatorRetention.MmapThreshold).Sum();
    }

    /// <summary>One block's kept tensors (without weight casts); the text context goes into <paramref name="shared"/>
    /// (one tensor for every block).</summary>
    private static Tally Block(Sizes z, bool trainsBase, Func<string, bool> adapted, Tally shared, long causalExtra)
    {
        var t = new Tally();
        long nd = z.N * z.D, ld = z.Text * z.D;
        string F32(string name) => z.C == 4 ? name : name + ".f32";   // an fp32 view of a compute-dtype tensor

        // A linear on `input` ([tokens, in] in the compute dtype): its input when the weight trains, the adapter's
        // fp32 input and rank-r hidden value with LoRA.
        void Linear(Tally into, string input, long tokens, long inDim, string layer)
        {
            if (trainsBase) into.Keep(input, z.C * tokens * inDim);
            if (!adapted(layer)) return;
            if (z.C == 4) into.Keep(input, 4 * tokens * inDim);               // the input itself
            else t.Keep($"{input}.f32.{layer}", 4 * tokens * inDim);          // each adapter casts its own copy
            t.Keep($"{layer}.lora_hidden", 4 * tokens * z.Rank);
        }
        // Projections normalised across heads by RMSNorm (fp32); the normalised value when its weight trains; the
        // result (rotated or not) as attention's input.
        void NormedProjection(string name, long tokens)
        {
            t.Keep(F32(name), 4 * tokens * z.D);
            if (trainsBase) t.Keep(name + ".normed", z.C * tokens * z.D);
            t.Keep(name + ".attn_in", z.C * tokens * z.D);
        }

        // 1. norm1 (fp32 layer_norm) and modulation; the modulation's product keeps the norm when shift/scale train.
        t.Keep(F32("x"), 4 * nd);
        if (trainsBase) t.Keep("norm1", 4 * nd);
        // 2. self-attention: q and k normalised and rotated, v, the output and its log-sum-exp (per query and head).
        foreach (var l in new[] { "attn1.to_q", "attn1.to_k", "attn1.to_v" }) Linear(t, "y1", z.N, z.D, l);
        NormedProjection("q1", z.N);
        NormedProjection("k1", z.N);
        t.Keep("v1", z.C * nd);
        t.Keep("o1", z.C * nd);
        t.Keep("lse1", z.RowStats(z.SelfKernel));
        Linear(t, "o1", z.N, z.D, "attn1.to_out.0");
        if (trainsBase) t.Keep("attn1.out", z.C * nd);   // kept by the gate's product for the gate's gradient
        // 3. norm2 (fp32, affine) on the residual, cross-attention to the text.
        t.Keep(F32("x1"), 4 * nd);
        Linear(t, "y2", z.N, z.D, "attn2.to_q");
        NormedProjection("q2", z.N);
        Linear(shared, "ctx", z.Text, z.D, "attn2.to_k");
        Linear(shared, "ctx", z.Text, z.D, "attn2.to_v");
        NormedProjection("k2", z.Text);
        t.Keep("v2", z.C * ld);
        t.Keep("o2", z.C * nd);
        t.Keep("lse2", z.RowStats(z.CrossKernel));
        Linear(t, "o2", z.N, z.D, "attn2.to_out.0");
        // 4. norm3 and modulation, the feed-forward (GELU keeps its input), the gated residual.
        t.Keep(F32("x2"), 4 * nd);
        if (trainsBase) t.Keep("norm3", 4 * nd);
        Linear(t, "y3", z.N, z.D, "ffn.net.0.proj");
        t.Keep("h", z.C * z.N * z.F);
        Linear(t, "gelu", z.N, z.F, "ffn.net.2");
        if (trainsBase) t.Keep("ffn.out.f32", 4 * nd);
        if (causalExtra > 0) t.Keep("causal", causalExtra);
        return t;
    }

    /// <summary>What the transformer keeps outside its blocks: patch embedding, the text embedder (master dtype),
    /// the output head, the loss's latent-sized tensors.</summary>
    private static long Outside(Sizes z, DataShape s, bool trainsBase, Func<string, bool> adapted, Tally shared)
    {
        long bytes = 0;
        if (trainsBase)
        {
            bytes += z.C * s.LatentValues;                                     // the patch embedding's input
            bytes += z.M * z.Text * (s.TextDim + 2L * z.D);                    // text embedder: input, GELU in and out
            shared.Keep("ctx", z.C * z.Text * z.D);
        }
        long nd = z.N * z.D;
        bytes += 4 * nd + (trainsBase ? 4 * nd : 0);                           // head: norm input, modulation
        if (trainsBase) bytes += z.C * nd;                                      // proj_out's input
        if (adapted("proj_out")) bytes += 4 * nd + 4 * z.N * z.Rank;
        bytes += 6L * 4 * s.LatentValues;                                      // prediction, target, loss terms
        return bytes;
    }

    /// <summary>
    /// One block's backward at its worst: the FFN's two [N, F] gradients, the attention's q/k/v gradients and a few
    /// fp32 [N, D] temporaries of the norms, plus (when the weights train) the largest weight gradient in the compute
    /// dtype and in fp32.
    /// </summary>
    private static Tally Backward(Sizes z, bool trainsBase)
    {
        var t = new Tally();
        long nd = z.N * z.D, nf = z.N * z.F, df = z.D * z.F;
        t.Keep("d_gelu", z.C * nf);
        t.Keep("d_h", z.C * nf);
        foreach (var g in new[] { "d_q", "d_k", "d_v" }) t.Keep(g, z.C * nd);
        foreach (var g in new[] { "d_norm_a", "d_norm_b", "d_norm_c" }) t.Keep(g, 4 * nd);
        if (!trainsBase) return t;
        t.Keep("d_w", z.C * df);
        t.Keep("d_w.f32", 4 * df);
        return t;
    }

    /// <summary>A block forward without grad: the FFN's hidden values, a few fp32 [N, D] tensors and a weight cast.</summary>
    private static long ForwardWorkingSet(Sizes z) =>
        2 * z.C * z.N * z.F + 16 * z.N * z.D + z.C * z.D * z.F;

    /// <summary>The compute-dtype copies of one block's linear weights and biases that bf16 compute over fp32 masters
    /// casts per use and keeps for backward.</summary>
    private static Tally BlockLinearCasts(WanTransformerConfig c, long bytes)
    {
        var t = new Tally();
        long d = c.InnerDim, f = c.FfnDim;
        for (int i = 0; i < 8; i++) t.Keep($"attn.{i}", bytes * (d * d + d));
        t.Keep("ffn.up", bytes * (d * f + f));
        t.Keep("ffn.down", bytes * (f * d + d));
        return t;
    }

    /// <summary>
    /// What the block-causal forward keeps besides the bidirectional one: the attention outputs of its chunks are
    /// concatenated (a second [N, D] tensor), and with attention sinks and a local window each chunk's keys and values
    /// are gathered into new tensors (sinks + window).
    /// </summary>
    private static long CausalBlockBytes(CausalAttentionConfig? causal, Sizes z, DataShape s, long frameTokens, int patchFrames)
    {
        if (causal is null) return 0;
        long bytes = z.C * z.N * z.D;
        var window = causal.Window(frameTokens);
        long total = s.Frames / patchFrames * frameTokens, blockTokens = causal.NumFramesPerBlock * frameTokens;
        for (long start = 0; start < total; start += blockTokens)
        {
            long end = Math.Min(start + blockTokens, total);
            var (sinkEnd, recentStart) = window.Visible(end);
            if (sinkEnd > 0 && recentStart > 0) bytes += 2 * z.C * s.Batch * (sinkEnd + end - recentStart) * z.D;
        }
        return bytes;
    }

    /// <summary>Which layers (names without the block prefix, or proj_out) carry a LoRA adapter.</summary>
    private static Func<string, bool> AdaptedLayers(ActivationQuery q, WanTransformerConfig c)
    {
        if (q.Lora is not { } lora) return _ => false;
        string[] blockLayers = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"];
        var names = blockLayers.Select(l => "blocks.0." + l).Append("proj_out").ToList();
        var chosen = LoraAdapters.SelectTargets(names, lora, $"roles.{q.Role.Role}.lora")
            .Select(n => n.StartsWith("blocks.0.", StringComparison.Ordinal) ? n["blocks.0.".Length..] : n).ToHashSet(StringComparer.Ordinal);
        return chosen.Contains;
    }

    private static long Bytes(ScalarType t) => t == ScalarType.Float32 ? 4 : 2;
}

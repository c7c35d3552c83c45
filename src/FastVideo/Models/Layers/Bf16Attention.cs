using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>
/// Exact attention softmax(q kᵀ / sqrt(d)) v over bf16 [B,H,S,d] q and [B,H,L,d] k/v with bf16 matmuls and the
/// softmax in fp32, one head and block of queries at a time, in buffers reused across calls (no more than one block's
/// scores exist).
/// <para>LibTorch's CPU flash attention keeps its scores in fp32 and costs the same in bf16 as in fp32; a bf16 matmul
/// rounds its output to bf16, whose absolute error grows with the logits (at logits of std 6 that doubles the
/// attention's error). Here each score product carries one extra column that subtracts a per-row shift inside the
/// matmul's fp32 accumulator: [q, −m]·[k, 1]ᵀ = q·kᵀ − m with m a bf16 row maximum, so what is rounded is the distance
/// to the row's maximum, small exactly where the softmax is sensitive. The same holds for dO·vᵀ − D in backward.</para>
/// <para>Forward keeps q, k, v, the output, the fp32 log-sum-exp and the bf16 shift per row; backward recomputes the
/// probabilities per block (flash attention's recurrence: D = rowsum(dO∘O), dS = P∘(dP − D)).</para>
/// </summary>
public static class Bf16Attention
{
    /// <summary>Score values per block (4 MiB in fp32).</summary>
    public static long BlockValues { get; set; } = 1L << 20;

    /// <summary>
    /// The fewest keys for which the model's attention uses this kernel rather than LibTorch's SDPA. Measured at 1024
    /// queries, 8 heads of 64 (`Bf16Probe --attn-speed`): forward + backward 42-46 ms against SDPA's 45-49 at 1024 keys,
    /// but 10-17 ms against 5-7 at 64 keys (the text) and 46 against 15 at 256: a fused kernel wins while the scores
    /// are small, this one's many eager ops only on large ones.
    /// </summary>
    public static long MinKeys => MinKeysOnThread ?? 512;

    /// <summary>Tests lower <see cref="MinKeys"/> on their own thread (other tests run in parallel).</summary>
    [ThreadStatic] internal static long? MinKeysOnThread;

    /// <summary>Whether attention over <paramref name="keys"/> keys under <paramref name="computeDtype"/> runs this kernel
    /// (the model's routing and the memory plan both ask here).</summary>
    public static bool AppliesTo(ScalarType computeDtype, long keys) => computeDtype == ScalarType.BFloat16 && keys >= MinKeys;

    /// <summary>Bytes an attention keeps per query and head besides its output: SDPA's fp32 log-sum-exp, and with this
    /// kernel also its bf16 shift.</summary>
    public static long RowStatBytes(bool kernel) => kernel ? 4 + 2 : 4;

    /// <summary>o [B,H,S,dv] (bf16), the log-sum-exp of the scaled scores [B,H,S] (fp32) and the rows' shifts [B,H,S]
    /// (bf16: maxima of the unscaled scores, which backward subtracts again; the log-sum-exp would not do, as it lies up
    /// to ln L above the maximum and the rounding error grows with the distance).</summary>
    public static (Tensor Output, Tensor LogSumExp, Tensor Shift) Forward(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        using var ng = no_grad();
        var g = Geometry.Of(q, k, v, mask);
        var f32 = ScalarType.Float32;
        var (q3, v3) = (g.Flat(q), g.Flat(v));
        var kaT = Augmented(g.Flat(k));
        var o3 = empty(g.Bh, g.S, g.Dv, dtype: q.dtype);
        var lse = empty(g.Bh, g.S, 1, dtype: f32);
        var shifts = empty(g.Bh, g.S, 1, dtype: q.dtype);
        var ws = Workspace.For(g.Rows, g.L, g.D, g.Dv, q.dtype);
        foreach (var (i, start, n) in g.Blocks())
        {
            using var step = NewDisposeScope();
            var qc = q3.narrow(0, i, 1).narrow(1, start, n);                      // [1,n,d]
            var kT = kaT.narrow(0, i, 1);                                         // [1,W,L]
            var hidden = g.Hidden(i, start, n);
            // The shift: bf16 row maxima of the rounded scores.
            var sf = Convert(Gemm(qc, kT.narrow(1, 0, g.D), ws.Sb.narrow(1, 0, n)), ws.Sf.narrow(1, 0, n));
            if (hidden is not null) sf.masked_fill_(hidden, double.NegativeInfinity);
            var shift = sf.amax([-1], keepdim: true).to_type(q.dtype);            // [1,n,1]
            shifts.narrow(0, i, 1).narrow(1, start, n).copy_(shift);
            // exp(scale·(q·kᵀ − shift)): at most 1 up to a rounding, so no further maximum is needed.
            var scores = Gemm(Augment(qc, shift, ws.Qa.narrow(1, 0, n)), kT, ws.Sb.narrow(1, 0, n));
            sf = Convert(scores, ws.Sf.narrow(1, 0, n)).mul_(g.Scale);
            if (hidden is not null) sf.masked_fill_(hidden, double.NegativeInfinity);
            sf.exp_();
            var l = sf.sum(-1, keepdim: true);
            // Normalised before the rounding (after the product, the bf16 output would be rounded twice).
            var p = Convert(sf.div_(l), ws.Sb.narrow(1, 0, n));
            o3.narrow(0, i, 1).narrow(1, start, n).copy_(p.bmm(v3.narrow(0, i, 1)));
            lse.narrow(0, i, 1).narrow(1, start, n).copy_(l.log_().add_(shift.to_type(f32).mul_(g.Scale)));
        }
        // The output in [B,S,H,dv] memory, as SDPA lays it out: the model's transpose(1, 2).flatten(2) is then a view.
        var o = empty(g.B, g.S, g.H, g.Dv, dtype: q.dtype).permute(0, 2, 1, 3);
        o.copy_(o3.view(g.B, g.H, g.S, g.Dv));
        return (o.MoveToOuterDisposeScope(),
                lse.view(g.B, g.H, g.S).MoveToOuterDisposeScope(),
                shifts.view(g.B, g.H, g.S).MoveToOuterDisposeScope());
    }

    /// <summary>dq, dk, dv (bf16, in their inputs' memory layout) for the upstream gradient <paramref name="dO"/>, from
    /// <see cref="Forward"/>'s results.</summary>
    public static (Tensor Dq, Tensor Dk, Tensor Dv) Backward(Tensor q, Tensor k, Tensor v, Tensor? mask, Tensor o, Tensor lse, Tensor shift, Tensor dO)
    {
        using var scope = NewDisposeScope();
        using var ng = no_grad();
        var g = Geometry.Of(q, k, v, mask);
        var f32 = ScalarType.Float32;
        var (q3, k3, g3) = (g.Flat(q), g.Flat(k), g.Flat(dO.to_type(q.dtype)));
        var lse3 = lse.reshape(g.Bh, g.S, 1);
        var shift3 = shift.reshape(g.Bh, g.S, 1);
        var rowDot = (g3.to_type(f32) * g.Flat(o).to_type(f32)).sum(-1, keepdim: true);   // D = rowsum(dO∘O) [Bh,S,1]
        var rowDotHi = rowDot.to_type(q.dtype);
        var rowDotLo = rowDot - rowDotHi.to_type(f32);
        var kaT = Augmented(k3);
        var vaT = Augmented(g.Flat(v));
        var dq3 = empty(g.Bh, g.S, g.D, dtype: q.dtype);
        var dk3 = zeros(g.Bh, g.L, g.D, dtype: f32);
        var dv3 = zeros(g.Bh, g.L, g.Dv, dtype: f32);
        var ws = Workspace.For(g.Rows, g.L, g.D, g.Dv, q.dtype);
        foreach (var (i, start, n) in g.Blocks())
        {
            using var step = NewDisposeScope();
            Tensor Rows(Tensor t) => t.narrow(0, i, 1).narrow(1, start, n);
            var (qc, gc, lc, sc) = (Rows(q3), Rows(g3), Rows(lse3), Rows(shift3));
            var hidden = g.Hidden(i, start, n);
            var (sb, sf) = (ws.Sb.narrow(1, 0, n), ws.Sf.narrow(1, 0, n));
            // P = exp(scale·(q·kᵀ − shift) − (lse − scale·shift))
            var scores = Gemm(Augment(qc, sc, ws.Qa.narrow(1, 0, n)), kaT.narrow(0, i, 1), sb);
            var p = Convert(scores, sf).mul_(g.Scale).sub_(lc - sc.to_type(f32).mul_(g.Scale));
            if (hidden is not null) p.masked_fill_(hidden, double.NegativeInfinity);
            p.exp_();
            var pb = Convert(p, sb);
            // dV += Pᵀ dO (bf16 products converted before they are accumulated: a mixed-dtype add_ is many times slower)
            dv3.narrow(0, i, 1).add_(Convert(Gemm(pb.transpose(1, 2), gc, ws.Vb), ws.Vf));
            // dP − D = [dO, −bf16(D)]·[v, 1]ᵀ − (D − bf16(D))
            var dp = Gemm(Augment(gc, Rows(rowDotHi), ws.Ga.narrow(1, 0, n)), vaT.narrow(0, i, 1), sb);
            var dpd = Convert(dp, ws.Sf2.narrow(1, 0, n)).sub_(Rows(rowDotLo));
            var ds = Convert(p.mul_(dpd).mul_(g.Scale), sb);                // dS·scale = P∘(dP − D)·scale
            Rows(dq3).copy_(ds.bmm(k3.narrow(0, i, 1)));                             // dQ = dS K · scale
            dk3.narrow(0, i, 1).add_(Convert(Gemm(ds.transpose(1, 2), qc, ws.Kb), ws.Kf));   // dK += dSᵀ Q · scale
        }
        Tensor Out(Tensor like, Tensor t) => empty_like(like).copy_(t.view(like.shape)).MoveToOuterDisposeScope();
        return (Out(q, dq3), Out(k, dk3), Out(v, dv3));
    }

    /// <summary>a·b for [1,n,K] a and [1,K,L] b, in place into a [1,n,L] buffer (no fresh allocation: a multi-MiB
    /// one would be mapped and faulted in on every call).</summary>
    private static Tensor Gemm(Tensor a, Tensor b, Tensor into)
    {
        into[0].addmm_(a[0], b[0], beta: 0, alpha: 1);
        return into;
    }

    /// <summary><paramref name="x"/> converted into <paramref name="into"/>'s dtype.</summary>
    private static Tensor Convert(Tensor x, Tensor into) => into.copy_(x);

    /// <summary>[a, −shift, 0...] ([1,n,d] a, [1,n,1] shift) to the width of <see cref="Augmented"/>, in a buffer whose
    /// padding is zero.</summary>
    private static Tensor Augment(Tensor a, Tensor shift, Tensor into)
    {
        long d = a.shape[2];
        into.narrow(2, 0, d).copy_(a);
        into.narrow(2, d, 1).copy_(shift).neg_();
        return into;
    }

    /// <summary>[Bh,L,d] -> [Bh,W,L]: transposed, a row of ones after the d rows, zero rows up to W (a multiple of 16:
    /// bf16 kernels work on pairs and blocks of the inner dimension).</summary>
    private static Tensor Augmented(Tensor x)
    {
        long d = x.shape[2];
        var a = zeros(x.shape[0], Width(d), x.shape[1], dtype: x.dtype);
        a.narrow(1, 0, d).copy_(x.transpose(1, 2));
        a.narrow(1, d, 1).fill_(1);
        return a;
    }

    private static long Width(long d) => (d + 1 + 15) / 16 * 16;

    /// <summary>
    /// Per-thread buffers of one block shape, kept across calls: fresh multi-MiB buffers per call would be mapped and
    /// faulted in again and again (glibc hands sizes above its mmap threshold to the kernel). The 4 most recent shapes
    /// are kept, about 10 MiB each for a block of 1M scores.
    /// </summary>
    private sealed class Workspace : IDisposable
    {
        [ThreadStatic] private static List<Workspace>? _recent;
        private const int Kept = 4;

        private readonly (long, long, long, long, ScalarType) _key;
        public Tensor Sb { get; }       // [1, rows, L] bf16 scores / probabilities
        public Tensor Sf { get; }       // [1, rows, L] fp32
        public Tensor Sf2 { get; }      // [1, rows, L] fp32 (backward: dP − D)
        public Tensor Qa { get; }       // [1, rows, W(d)] augmented left operand of q·kᵀ (zero padding beyond d + 1)
        public Tensor Ga { get; }       // [1, rows, W(dv)] augmented left operand of dO·vᵀ
        public Tensor Kb { get; }       // [1, L, d] bf16 product (dSᵀ Q)
        public Tensor Kf { get; }       // [1, L, d] fp32 copy of it
        public Tensor Vb { get; }       // [1, L, dv] bf16 product (Pᵀ dO)
        public Tensor Vf { get; }       // [1, L, dv] fp32 copy of it

        private Workspace((long Rows, long L, long D, long Dv, ScalarType Dtype) key)
        {
            _key = key;
            var (rows, l, d, dv, dt) = key;
            Sb = empty(1, rows, l, dtype: dt).DetachFromDisposeScope();
            Sf = empty(1, rows, l, dtype: ScalarType.Float32).DetachFromDisposeScope();
            Sf2 = empty(1, rows, l, dtype: ScalarType.Float32).DetachFromDisposeScope();
            Qa = zeros(1, rows, Width(d), dtype: dt).DetachFromDisposeScope();
            Ga = zeros(1, rows, Width(dv), dtype: dt).DetachFromDisposeScope();
            Kb = empty(1, l, d, dtype: dt).DetachFromDisposeScope();
            Kf = empty(1, l, d, dtype: ScalarType.Float32).DetachFromDisposeScope();
            Vb = empty(1, l, dv, dtype: dt).DetachFromDisposeScope();
            Vf = empty(1, l, dv, dtype: ScalarType.Float32).DetachFromDisposeScope();
        }

        /// <summary>The buffers for blocks of <paramref name="rows"/> x <paramref name="l"/> scores, heads of widths
        /// <paramref name="d"/> (q, k) and <paramref name="dv"/> (v).</summary>
        public static Workspace For(long rows, long l, long d, long dv, ScalarType dtype)
        {
            _recent ??= [];
            var key = (rows, l, d, dv, dtype);
            int at = _recent.FindIndex(x => x._key == key);
            Workspace ws;
            if (at >= 0) { ws = _recent[at]; _recent.RemoveAt(at); }
            else ws = new Workspace(key);
            _recent.Insert(0, ws);
            while (_recent.Count > Kept) { _recent[^1].Dispose(); _recent.RemoveAt(_recent.Count - 1); }
            return ws;
        }

        public void Dispose()
        {
            foreach (var t in new[] { Sb, Sf, Sf2, Qa, Ga, Kb, Kf, Vb, Vf }) t.Dispose();
        }
    }

    /// <summary>Shapes of one call: q [B,H,S,d], k [B,H,L,d], v [B,H,L,dv], a boolean mask broadcastable to [B,H,S,L];
    /// blocks of one (batch·head) pair and <see cref="Rows"/> query rows.</summary>
    private sealed record Geometry(long B, long H, long S, long L, long D, long Dv, long Rows, double Scale, Tensor? Hiding)
    {
        public long Bh => B * H;

        public static Geometry Of(Tensor q, Tensor k, Tensor v, Tensor? mask)
        {
            if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
                throw new ArgumentException("bf16 attention takes [B,H,S,d] q and [B,H,L,d] k, v");
            long b = q.shape[0], h = q.shape[1], s = q.shape[2], l = k.shape[2];
            long rows = Math.Clamp(BlockValues / Math.Max(1, l), 1, s);
            Tensor? hiding = null;
            if (mask is not null)
            {
                var m = mask;
                while (m.dim() < 4) m = m.unsqueeze(0);
                // [B·H, 1 or S, L]: the keys each query may not see.
                long maskRows = m.shape[2] == 1 ? 1 : s;
                hiding = m.expand(b, h, maskRows, l).reshape(b * h, maskRows, l).logical_not();
            }
            return new Geometry(b, h, s, l, q.shape[3], v.shape[3], rows, 1.0 / Math.Sqrt(q.shape[3]), hiding);
        }

        /// <summary>The blocks, one (batch·head) pair each: its index, first query row, row count.</summary>
        public IEnumerable<(long I, long Start, long N)> Blocks()
        {
            for (long i = 0; i < Bh; i++)
                for (long start = 0; start < S; start += Rows)
                    yield return (i, start, Math.Min(Rows, S - start));
        }

        /// <summary>[B,H,N,d] -> contiguous [B·H,N,d] (the model passes transposed views of [B,N,H,d]).</summary>
        public Tensor Flat(Tensor t) => t.reshape(Bh, t.shape[2], t.shape[3]).contiguous();

        /// <summary>The hidden entries of a block ([1, n or 1, L]), or null without a mask.</summary>
        public Tensor? Hidden(long i, long start, long n)
        {
            if (Hiding is null) return null;
            var m = Hiding.narrow(0, i, 1);
            return m.shape[1] == 1 ? m : m.narrow(1, start, n);
        }
    }
}

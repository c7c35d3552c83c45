using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>
/// Exact attention softmax(q kᵀ / sqrt(d)) v over bf16 [B,H,S,d] q and [B,H,L,d] k/v with bf16 matmuls, one head and
/// block of queries at a time (no more than one block's [n, L] scores exist), the softmax in fp32.
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
    /// <summary>Score values per block (4 MiB in fp32): a head's queries are split when S·L exceeds it.</summary>
    public static long BlockValues { get; set; } = 1L << 20;

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
        // The output in [B,S,H,dv] memory, as SDPA lays it out: the model's transpose(1, 2).flatten(2) is then a view.
        var o = empty(g.B, g.S, g.H, g.Dv, dtype: q.dtype).permute(0, 2, 1, 3);
        var lse = empty(g.Bh, g.S, 1, dtype: f32);
        var shifts = empty(g.Bh, g.S, 1, dtype: q.dtype);
        var ws = Workspace.For(g.Rows, g.L, g.D, g.Dv, q.dtype);
        for (long i = 0; i < g.Bh; i++)
            for (long start = 0; start < g.S; start += g.Rows)
            {
                using var step = NewDisposeScope();
                long n = Math.Min(g.Rows, g.S - start);
                var (sb, sf, qa) = (ws.Sb.narrow(0, 0, n), ws.Sf.narrow(0, 0, n), ws.Qa.narrow(0, 0, n));
                var qc = q3[i].narrow(0, start, n);
                var hidden = g.Hidden(i, start, n);
                // The shift: bf16 row maxima of the rounded scores.
                sb.addmm_(qc, kaT[i].narrow(0, 0, g.D), beta: 0, alpha: 1);
                sf.copy_(sb);
                if (hidden is not null) sf.masked_fill_(hidden, double.NegativeInfinity);
                var shift = sf.amax([-1], keepdim: true).to_type(q.dtype);          // [n,1]
                shifts[i].narrow(0, start, n).copy_(shift);
                // exp(scale·(q·kᵀ − shift)): at most 1 up to a rounding, so no further maximum is needed.
                qa.narrow(1, 0, g.D).copy_(qc);
                qa.narrow(1, g.D, 1).copy_(shift).neg_();
                sb.addmm_(qa, kaT[i], beta: 0, alpha: 1);
                sf.copy_(sb).mul_(g.Scale);
                if (hidden is not null) sf.masked_fill_(hidden, double.NegativeInfinity);
                sf.exp_();
                var l = sf.sum(-1, keepdim: true);
                // Normalised before the rounding (after the product, the bf16 output would be rounded twice).
                sb.copy_(sf.div_(l));
                g.Slice(o, i).narrow(0, start, n).copy_(sb.mm(v3[i]));
                lse[i].narrow(0, start, n).copy_(l.log_().add_(shift.to_type(f32).mul_(g.Scale)));
            }
        return (o.MoveToOuterDisposeScope(),
                lse.view(g.OutShape[..^1]).MoveToOuterDisposeScope(),
                shifts.view(g.OutShape[..^1]).MoveToOuterDisposeScope());
    }

    /// <summary>dq, dk, dv (bf16) for the upstream gradient <paramref name="dO"/>, from <see cref="Forward"/>'s results.</summary>
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
        // Gradients in their inputs' memory layout (the model's q, k, v are transposed views of [B,N,H,d]).
        var dq = empty_like(q);
        var dk = zeros_like(k, dtype: f32);
        var dv = zeros_like(v, dtype: f32);
        var ws = Workspace.For(g.Rows, g.L, g.D, g.Dv, q.dtype);
        for (long i = 0; i < g.Bh; i++)
            for (long start = 0; start < g.S; start += g.Rows)
            {
                using var step = NewDisposeScope();
                long n = Math.Min(g.Rows, g.S - start);
                var (sb, sf, sf2, qa, ga) = (ws.Sb.narrow(0, 0, n), ws.Sf.narrow(0, 0, n), ws.Sf2.narrow(0, 0, n), ws.Qa.narrow(0, 0, n), ws.Ga.narrow(0, 0, n));
                var (qc, gc) = (q3[i].narrow(0, start, n), g3[i].narrow(0, start, n));
                var (lc, sc) = (lse3[i].narrow(0, start, n), shift3[i].narrow(0, start, n));
                var hidden = g.Hidden(i, start, n);
                // P = exp(scale·(q·kᵀ − shift) − (lse − scale·shift))
                qa.narrow(1, 0, g.D).copy_(qc);
                qa.narrow(1, g.D, 1).copy_(sc).neg_();
                sb.addmm_(qa, kaT[i], beta: 0, alpha: 1);
                sf.copy_(sb).mul_(g.Scale).sub_(lc - sc.to_type(f32).mul_(g.Scale));
                if (hidden is not null) sf.masked_fill_(hidden, double.NegativeInfinity);
                sf.exp_();
                sb.copy_(sf);
                ws.Vb.addmm_(sb.t(), gc, beta: 0, alpha: 1);                        // Pᵀ dO [L,dv]
                g.Slice(dv, i).add_(ws.Vf.copy_(ws.Vb));                                     // (a mixed-dtype add_ is many times slower)
                // dP − D = [dO, −bf16(D)]·[v, 1]ᵀ − (D − bf16(D))
                ga.narrow(1, 0, g.Dv).copy_(gc);
                ga.narrow(1, g.Dv, 1).copy_(rowDotHi[i].narrow(0, start, n)).neg_();
                sb.addmm_(ga, vaT[i], beta: 0, alpha: 1);
                sf2.copy_(sb).sub_(rowDotLo[i].narrow(0, start, n));
                sb.copy_(sf.mul_(sf2).mul_(g.Scale));                              // dS·scale = P∘(dP − D)·scale
                g.Slice(dq, i).narrow(0, start, n).copy_(sb.mm(k3[i]));                      // dQ = dS K · scale
                ws.Kb.addmm_(sb.t(), qc, beta: 0, alpha: 1);                        // dSᵀ Q · scale [L,d]
                g.Slice(dk, i).add_(ws.Kf.copy_(ws.Kb));
            }
        return (dq.MoveToOuterDisposeScope(), dk.to_type(k.dtype).MoveToOuterDisposeScope(), dv.to_type(v.dtype).MoveToOuterDisposeScope());
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
    /// faulted in again and again (glibc hands sizes above its mmap threshold to the kernel). The 4 most recent shapes are
    /// kept (self- and cross-attention alternate), about 10 MiB each for a block of 1M scores.
    /// </summary>
    private sealed class Workspace : IDisposable
    {
        [ThreadStatic] private static List<Workspace>? _recent;
        private const int Kept = 4;

        private readonly (long, long, long, long, ScalarType) _key;
        public Tensor Sb { get; }       // [rows, L] bf16 scores / probabilities
        public Tensor Sf { get; }       // [rows, L] fp32
        public Tensor Sf2 { get; }      // [rows, L] fp32 (backward: dP − D)
        public Tensor Qa { get; }       // [rows, W(d)] augmented left operand of q·kᵀ (zero padding beyond d + 1)
        public Tensor Ga { get; }       // [rows, W(dv)] augmented left operand of dO·vᵀ
        public Tensor Kb { get; }       // [L, d] bf16 product (dSᵀ Q)
        public Tensor Kf { get; }       // [L, d] fp32 copy of it
        public Tensor Vb { get; }       // [L, dv] bf16 product (Pᵀ dO)
        public Tensor Vf { get; }       // [L, dv] fp32 copy of it

        private Workspace((long Rows, long L, long D, long Dv, ScalarType Dtype) key)
        {
            _key = key;
            var (rows, l, d, dv, dt) = key;
            Sb = empty(rows, l, dtype: dt).DetachFromDisposeScope();
            Sf = empty(rows, l, dtype: ScalarType.Float32).DetachFromDisposeScope();
            Sf2 = empty(rows, l, dtype: ScalarType.Float32).DetachFromDisposeScope();
            Qa = zeros(rows, Width(d), dtype: dt).DetachFromDisposeScope();
            Ga = zeros(rows, Width(dv), dtype: dt).DetachFromDisposeScope();
            Kb = empty(l, d, dtype: dt).DetachFromDisposeScope();
            Kf = empty(l, d, dtype: ScalarType.Float32).DetachFromDisposeScope();
            Vb = empty(l, dv, dtype: dt).DetachFromDisposeScope();
            Vf = empty(l, dv, dtype: ScalarType.Float32).DetachFromDisposeScope();
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

    /// <summary>Shapes of one call: q [B,H,S,d], k [B,H,L,d], v [B,H,L,dv], a boolean mask broadcastable to [B,H,S,L].</summary>
    private sealed record Geometry(long B, long H, long S, long L, long D, long Dv, long Rows, double Scale, Tensor? Hiding)
    {
        public long Bh => B * H;
        public long[] OutShape => [B, H, S, Dv];

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

        /// <summary>(batch·head) <paramref name="i"/>'s [N, d] matrix of a [B,H,N,d] tensor (a view, any layout).</summary>
        public Tensor Slice(Tensor t, long i) => t[i / H][i % H];

        /// <summary>[B,H,N,d] -> contiguous [B·H,N,d] (the model passes transposed views of [B,N,H,d]).</summary>
        public Tensor Flat(Tensor t) => t.reshape(Bh, t.shape[2], t.shape[3]).contiguous();

        /// <summary>The hidden entries of (batch·head) <paramref name="i"/>'s query rows [start, start + n), or null.</summary>
        public Tensor? Hidden(long i, long start, long n) =>
            Hiding is null ? null : Hiding.shape[1] == 1 ? Hiding[i] : Hiding[i].narrow(0, start, n);
    }
}

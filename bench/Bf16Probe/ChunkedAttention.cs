using static TorchSharp.torch;

namespace Bf16Probe;

/// <summary>How <see cref="ChunkedAttention"/> forms the score products q·kᵀ and dO·vᵀ from bf16 inputs.</summary>
public enum ScoreProducts
{
    /// <summary>bf16 matmuls: each product is rounded to bf16 (absolute error grows with the logits' size).</summary>
    Bf16,
    /// <summary>fp32 matmuls on upcast inputs: fp32 scores, as a flash kernel keeps them.</summary>
    Fp32,
    /// <summary>bf16 matmuls with one extra column that subtracts a per-row shift inside the fp32 accumulator (the
    /// row's maximum or log-sum-exp for q·kᵀ, rowsum(dO∘O) for dO·vᵀ): what is rounded to bf16 is the shifted value,
    /// small exactly where the softmax is sensitive.</summary>
    Shifted,
}

/// <summary>
/// The first prototype of the bf16 attention (the probe's candidates; the model uses FastVideo.Models.Layers.Bf16Attention,
/// which is the Shifted form one head at a time with reused buffers).
/// Exact attention over [B,H,S,d] bf16 q and [B,H,L,d] k/v, computed a block of queries at a time (all heads), with the
/// softmax in fp32 and bf16 matmuls. Forward returns the output and the per-row log-sum-exp; backward recomputes the
/// probabilities per block from them (flash attention's recurrence: D = rowsum(dO∘O), dS = P∘(dP − D)). No more than
/// one block's scores exist at a time.
/// </summary>
public static class ChunkedAttention
{
    /// <summary>Score values per block (4 MiB in fp32).</summary>
    public static long BlockValues { get; set; } = 1L << 20;

    /// <summary>o [B,H,S,dv] in q's dtype, the log-sum-exp of the scaled scores [B,H,S] in fp32 and (Shifted only, else
    /// null) the rows' shifts [B,H,S] in q's dtype: bf16 maxima of the unscaled scores, which backward subtracts again
    /// (the log-sum-exp would not do: it lies up to ln L above the maximum, and the rounding error grows with the
    /// distance).</summary>
    public static (Tensor Output, Tensor LogSumExp, Tensor? Shift) Forward(Tensor q, Tensor k, Tensor v, Tensor? mask, ScoreProducts products)
    {
        using var scope = NewDisposeScope();
        var g = Geometry.Of(q, k, v, mask);
        var (q3, k3, v3) = (g.Flat(q), g.Flat(k), g.Flat(v));
        var keys = new Keys(k3, products);
        var o = empty(g.Bh, g.S, g.Dv, dtype: q.dtype);
        var lse = empty(g.Bh, g.S, 1, dtype: ScalarType.Float32);
        var shifts = products == ScoreProducts.Shifted ? empty(g.Bh, g.S, 1, dtype: q.dtype) : null;
        for (long start = 0; start < g.S; start += g.Rows)
        {
            using var step = NewDisposeScope();
            long n = Math.Min(g.Rows, g.S - start);
            var qc = q3.narrow(1, start, n);
            var hidden = g.Hidden(start, n);
            Tensor? shift = null;
            if (products == ScoreProducts.Shifted)
            {
                var rough = qc.matmul(keys.T).to_type(ScalarType.Float32);      // bf16 scores, only for the row maxima
                if (hidden is not null) rough.masked_fill_(hidden, double.NegativeInfinity);
                shift = rough.amax([-1], keepdim: true).to_type(q.dtype);       // [Bh,n,1], exact in the column
                shifts!.narrow(1, start, n).copy_(shift);
            }
            var s = keys.Scores(qc, shift).mul_(g.Scale);                        // fp32 [Bh,n,L], minus scale·shift
            if (hidden is not null) s.masked_fill_(hidden, double.NegativeInfinity);
            // Shifted: the row maximum is already subtracted (up to a rounding), so exp cannot overflow.
            var m = shift is null ? s.amax([-1], keepdim: true) : null;
            var p = (m is null ? s : s.sub_(m)).exp_();
            var l = p.sum(-1, keepdim: true);
            // Normalised after the product (flash attention's order): one division per output row, not per score.
            o.narrow(1, start, n).copy_(p.to_type(q.dtype).matmul(v3).to_type(ScalarType.Float32).div_(l));
            var rowLse = l.log_();
            if (m is not null) rowLse.add_(m);
            if (shift is not null) rowLse.add_(shift.to_type(ScalarType.Float32).mul_(g.Scale));
            lse.narrow(1, start, n).copy_(rowLse);
        }
        return (o.view(g.OutShape).MoveToOuterDisposeScope(), lse.view(g.OutShape[..^1]).MoveToOuterDisposeScope(),
                shifts?.view(g.OutShape[..^1]).MoveToOuterDisposeScope());
    }

    /// <summary>dq, dk, dv (in the inputs' dtype) for the upstream gradient <paramref name="dO"/>.</summary>
    public static (Tensor Dq, Tensor Dk, Tensor Dv) Backward(Tensor q, Tensor k, Tensor v, Tensor? mask, Tensor o, Tensor lse, Tensor? shift, Tensor dO, ScoreProducts products)
    {
        using var scope = NewDisposeScope();
        var g = Geometry.Of(q, k, v, mask);
        var f32 = ScalarType.Float32;
        var (q3, k3, v3, o3, g3) = (g.Flat(q), g.Flat(k), g.Flat(v), g.Flat(o), g.Flat(dO.to_type(q.dtype)));
        var lse3 = lse.reshape(g.Bh, g.S, 1);
        var shift3 = shift?.reshape(g.Bh, g.S, 1);
        var rowDot = (g3.to_type(f32) * o3.to_type(f32)).sum(-1, keepdim: true);   // D = rowsum(dO∘O) [Bh,S,1]
        var keys = new Keys(k3, products);
        var values = new Keys(v3, products);
        var dq = empty(g.Bh, g.S, g.D, dtype: q.dtype);
        var dk = zeros(g.Bh, g.L, g.D, dtype: f32);
        var dv = zeros(g.Bh, g.L, g.Dv, dtype: f32);
        for (long start = 0; start < g.S; start += g.Rows)
        {
            using var step = NewDisposeScope();
            long n = Math.Min(g.Rows, g.S - start);
            var (qc, gc, lc, dc) = (q3.narrow(1, start, n), g3.narrow(1, start, n), lse3.narrow(1, start, n), rowDot.narrow(1, start, n));
            var hidden = g.Hidden(start, n);
            // P = exp(scale·q·kᵀ − lse); the shifted form subtracts the forward's shift inside the product.
            Tensor p;
            if (products == ScoreProducts.Shifted)
            {
                var sc = (shift3 ?? throw new ArgumentException("shifted attention backward needs the forward's shifts")).narrow(1, start, n);
                p = keys.Scores(qc, sc).mul_(g.Scale).sub_(lc - sc.to_type(f32) * g.Scale);
            }
            else p = keys.Scores(qc, null).mul_(g.Scale).sub_(lc);
            if (hidden is not null) p.masked_fill_(hidden, double.NegativeInfinity);
            p.exp_();
            var pb = p.to_type(q.dtype);
            // (bf16 products converted before they are accumulated: a mixed-dtype add_ is many times slower)
            dv.add_(pb.transpose(1, 2).matmul(gc).to_type(f32));                  // dV += Pᵀ dO
            // dP − D, with dP = dO·vᵀ
            Tensor dpd;
            if (products == ScoreProducts.Shifted)
            {
                var dh = dc.to_type(q.dtype);
                dpd = values.Scores(gc, dh).sub_(dc.sub(dh.to_type(f32)));
            }
            else dpd = values.Scores(gc, null).sub_(dc);
            var ds = p.mul_(dpd).mul_(g.Scale).to_type(q.dtype);                 // dS·scale = P∘(dP − D)·scale
            dq.narrow(1, start, n).copy_(ds.matmul(k3));                          // dQ = dS K · scale
            dk.add_(ds.transpose(1, 2).matmul(qc).to_type(f32));                               // dK += dSᵀ Q · scale
        }
        return (dq.view(g.Shape(q)).MoveToOuterDisposeScope(),
                dk.to_type(k.dtype).view(g.Shape(k)).MoveToOuterDisposeScope(),
                dv.to_type(v.dtype).view(g.Shape(v)).MoveToOuterDisposeScope());
    }

    /// <summary>The right-hand side of a score product ([Bh,L,d] keys or values), transposed once per call.</summary>
    private sealed class Keys
    {
        private readonly ScoreProducts _products;
        public Tensor T { get; }            // [Bh,d,L] in the input dtype
        private readonly Tensor? _t32;       // fp32 copy (Fp32)
        private readonly Tensor? _withOnes;  // [Bh,d+pad,L]: a row of ones after d, then zero rows (Shifted)
        private readonly long _d;

        public Keys(Tensor x, ScoreProducts products)
        {
            _products = products;
            _d = x.shape[2];
            T = x.transpose(1, 2).contiguous();
            if (products == ScoreProducts.Fp32) _t32 = T.to_type(ScalarType.Float32);
            if (products == ScoreProducts.Shifted)
            {
                // The inner dimension padded to a multiple of 16 (bf16 kernels work on pairs and blocks of K).
                long width = (_d + 1 + 15) / 16 * 16;
                _withOnes = zeros(x.shape[0], width, x.shape[1], dtype: x.dtype);
                _withOnes.narrow(1, 0, _d).copy_(T);
                _withOnes.narrow(1, _d, 1).fill_(1);
            }
        }

        /// <summary>a·xᵀ in fp32 [Bh,n,L]; with <paramref name="shift"/> ([Bh,n,1] in the input dtype, Shifted only)
        /// a·xᵀ − shift, subtracted before the rounding.</summary>
        public Tensor Scores(Tensor a, Tensor? shift) => _products switch
        {
            ScoreProducts.Bf16 => a.matmul(T).to_type(ScalarType.Float32),
            ScoreProducts.Fp32 => a.to_type(ScalarType.Float32).matmul(_t32!),
            _ => Augment(a, shift!).matmul(_withOnes!).to_type(ScalarType.Float32),
        };

        private Tensor Augment(Tensor a, Tensor shift)
        {
            var wide = zeros(a.shape[0], a.shape[1], _withOnes!.shape[1], dtype: a.dtype);
            wide.narrow(2, 0, _d).copy_(a);
            wide.narrow(2, _d, 1).copy_(shift.neg());
            return wide;
        }
    }

    /// <summary>Shapes of one call: q [B,H,S,d], k [B,H,L,d], v [B,H,L,dv], a boolean mask broadcastable to [B,H,S,L].</summary>
    private sealed record Geometry(long B, long H, long S, long L, long D, long Dv, long Rows, double Scale, Tensor? Mask)
    {
        public long Bh => B * H;
        public long[] OutShape => [B, H, S, Dv];

        public static Geometry Of(Tensor q, Tensor k, Tensor v, Tensor? mask)
        {
            if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
                throw new ArgumentException("chunked attention takes [B,H,S,d] q and [B,H,L,d] k, v");
            long b = q.shape[0], h = q.shape[1], s = q.shape[2], l = k.shape[2];
            long rows = Math.Clamp(BlockValues / Math.Max(1, b * h * l), 1, s);
            Tensor? m = null;
            if (mask is not null)
            {
                m = mask;
                while (m.dim() < 4) m = m.unsqueeze(0);
                // [B·H, 1 or S, L]: which keys each query may see.
                long maskRows = m.shape[2] == 1 ? 1 : s;
                m = m.expand(b, h, maskRows, l).reshape(b * h, maskRows, l);
            }
            return new Geometry(b, h, s, l, q.shape[3], v.shape[3], rows, 1.0 / Math.Sqrt(q.shape[3]), m);
        }

        public Tensor Flat(Tensor t) => t.reshape(Bh, t.shape[2], t.shape[3]);
        public long[] Shape(Tensor t) => t.shape;

        /// <summary>The masked-out entries (true = hidden) of query rows [start, start + n), or null without a mask.</summary>
        public Tensor? Hidden(long start, long n) =>
            Mask is null ? null : (Mask.shape[1] == 1 ? Mask : Mask.narrow(1, start, n)).logical_not();
    }
}

using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace FastVideo.Models.Layers;

/// <summary>Which activations a checkpointed transformer keeps for backward (upstream's three policies).</summary>
public enum CheckpointingMode
{
    /// <summary>Every block keeps only its inputs and is recomputed in backward.</summary>
    Full,
    /// <summary>Blocks 0, n, 2n, ... (index % n == 0) are checkpointed as in <see cref="Full"/>; the others keep everything.</summary>
    BlockSkip,
    /// <summary>Selective: every block keeps its inputs, its attention outputs and every other linear output (the
    /// 1st, 3rd, ... of the block); the rest (norms, modulation, RoPE, activations, the other linears) is recomputed.</summary>
    Ops,
}

/// <summary>
/// An activation checkpointing policy, set on a transformer by its model plugin. <see cref="Every"/> is block_skip's n
/// (upstream's <c>n_layer</c>, which its recipes cannot set and which defaults to 1: block_skip then checkpoints every
/// block, like full).
/// </summary>
public sealed record CheckpointingPolicy(CheckpointingMode Mode, int Every = 1)
{
    public static CheckpointingPolicy Full { get; } = new(CheckpointingMode.Full);
    public static CheckpointingPolicy Ops { get; } = new(CheckpointingMode.Ops);
    public static CheckpointingPolicy BlockSkip(int every = 1) => new(CheckpointingMode.BlockSkip, every);

    /// <summary>The recipe value (<c>enable_gradient_checkpointing_type</c>: full, ops, block_skip) as a policy; null stays null.</summary>
    public static CheckpointingPolicy? FromRecipe(string? type) => type switch
    {
        null => null,
        "full" => Full,
        "ops" => Ops,
        "block_skip" => BlockSkip(),
        _ => throw new UserError($"enable_gradient_checkpointing_type: invalid value '{type}' (expected one of: full, ops, block_skip)"),
    };

    public bool Selective => Mode == CheckpointingMode.Ops;

    /// <summary>Whether block <paramref name="index"/> is checkpointed.</summary>
    public bool Checkpoints(int index) => Mode != CheckpointingMode.BlockSkip || index % Math.Max(1, Every) == 0;

    public override string ToString() => Mode switch
    {
        CheckpointingMode.Full => "full",
        CheckpointingMode.Ops => "ops",
        _ => Every == 1 ? "block_skip" : $"block_skip every {Every}",
    };
}

/// <summary>
/// Activation checkpointing on TorchSharp's custom autograd functions (TorchSharp has no torch.utils.checkpoint).
/// <see cref="Apply"/> runs a function of tensors under no_grad and keeps only its inputs (for the selective policy
/// also the outputs that <see cref="Linear"/> and <see cref="Attention"/> mark as kept); in backward it recomputes the
/// function under enable_grad from detached inputs and backpropagates the incoming gradient through it: the
/// trainable parameters it was given accumulate their gradients there (they are also inputs of the node, so that the
/// node is part of the graph even when no input requires grad), and the node returns the input gradients. The
/// recomputation must see what the forward saw: the function may not draw random numbers (the Wan blocks draw none)
/// nor read state that changes between forward and backward.
/// <para>Errors inside backward cannot cross the native autograd engine, so they are kept and rethrown by
/// <see cref="CompleteBackward"/>, which a plugin's backward calls after <c>loss.backward()</c> (and by the next
/// <see cref="Apply"/> on the thread). Gradients a node hands to the engine must outlive the callback (the engine
/// copies them when it returns), so they are disposed on the next callback or by <see cref="CompleteBackward"/>.</para>
/// </summary>
public static class ActivationCheckpoint
{
    /// <summary>
    /// <paramref name="forward"/>(<paramref name="inputs"/>), checkpointed when grad mode is on and an input or one of
    /// <paramref name="parameters"/> requires grad; otherwise (no_grad, eval sampling, frozen roles) a plain call.
    /// <paramref name="parameters"/> must hold every parameter the function uses that may require grad.
    /// </summary>
    public static Tensor Apply(Func<Tensor[], Tensor> forward, Tensor[] inputs, IEnumerable<Parameter> parameters, bool selective = false)
    {
        ThrowIfFailed();
        if (!is_grad_enabled()) return forward(inputs);
        var trainable = parameters.Where(p => p.requires_grad).ToArray();
        var requiresGrad = inputs.Select(t => t.requires_grad).ToArray();
        if (trainable.Length == 0 && !requiresGrad.Any(r => r)) return forward(inputs);

        CheckpointedOnThread++;
        var call = new Call(forward, requiresGrad, trainable.Length, selective, Environment.CurrentManagedThreadId);
        var vars = new object[1 + inputs.Length + trainable.Length];
        vars[0] = call;
        inputs.CopyTo(vars, 1);
        trainable.CopyTo(vars, 1 + inputs.Length);
        try
        {
            // TorchSharp's apply also leaves an empty_like of the output per node (used only to materialise undefined
            // gradients, which this node does not ask for): a scope of its own frees it now rather than at the caller's.
            using var scope = NewDisposeScope();
            return CheckpointFunction.apply(vars).MoveToOuterDisposeScope();
        }
        finally { call.DisposeKept(); }   // the node holds its own references (saved variables)
    }

    /// <summary>
    /// A linear layer inside a checkpointed function: a plain call, except under the selective policy, where every
    /// other call (1st, 3rd, ...) of the function keeps its output in forward and reuses it in the recomputation.
    /// Kept: <see cref="LoraLinear"/> (with or without its adapter) and TorchSharp's Linear; other modules only count.
    /// </summary>
    public static Tensor Linear(nn.Module<Tensor, Tensor> layer, Tensor x)
    {
        var s = Selective.Current;
        if (s is null) return layer.forward(x);
        bool keep = ++s.LinearCount % 2 == 1 && layer is LoraLinear or TorchSharp.Modules.Linear;
        if (!keep) return layer.forward(x);
        if (!s.Replaying) return s.Record(layer.forward(x));
        ReusedOnThread++;
        var (w, b, a, bb, scale) = layer switch
        {
            LoraLinear l => (l.weight, l.bias, l.LoraA, l.LoraB, l.Scale),
            TorchSharp.Modules.Linear l => (l.weight!, l.bias, null, null, 1.0),
            _ => throw new InvalidOperationException(),
        };
        var kept = s.Next(x.shape[..^1].Append(w.shape[0]).ToArray());
        // As the layer computes: base weights in the activations' dtype (a cast the master's gradient flows through).
        return KeptLinearFunction.apply(new KeptLinear(kept, scale), x, LoraLinear.AsDtype(w, x.dtype),
            b is null ? null! : LoraLinear.AsDtype(b, x.dtype), a!, bb!);
    }

    /// <summary>Scaled dot-product attention on [B,H,S,d] q and [B,H,L,d] k/v; its output is kept under the selective policy.</summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v) => Attention(q, k, v, null);

    /// <summary>
    /// The same with a boolean <paramref name="mask"/> broadcastable to [B,H,S,L] (true = the query sees the key, as
    /// SDPA's boolean attn_mask); every query must see at least one key.
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        var s = Selective.Current;
        bool bf16 = UsesBf16Kernel(q, k, v, mask);
        if (s is null) return bf16 ? Bf16(q, k, v, mask, null) : Sdpa(q, k, v, mask);
        if (!s.Replaying)
        {
            if (!bf16) return s.Record(Sdpa(q, k, v, mask));
            // The bf16 kernel's backward also needs the rows' log-sum-exp and shifts: kept with the output.
            Bf16OnThread++;
            var (o, lse, shift) = Bf16Attention.Forward(q, k, v, mask);
            s.Record(lse); s.Record(shift);
            return s.Record(o);
        }
        ReusedOnThread++;
        var outShape = q.shape[..^1].Append(v.shape[^1]).ToArray();
        if (bf16)
        {
            var (lse, shift) = (s.Next(q.shape[..^1]), s.Next(q.shape[..^1]));
            return Bf16(q, k, v, mask, new Bf16Forward(s.Next(outShape), lse, shift));
        }
        var kept = s.Next(outShape);
        return mask is null
            ? KeptAttentionFunction.apply(new Kept(kept), q, k, v)
            : KeptAttentionFunction.apply(new Kept(kept), q, k, v, mask);
    }

    private static Tensor Sdpa(Tensor q, Tensor k, Tensor v, Tensor? mask) => nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);

    /// <summary>
    /// Under bf16 compute (q, k, v in bf16, no mask or a boolean one) attention over at least
    /// <see cref="Bf16Attention.MinKeys"/> keys runs <see cref="Bf16Attention"/> rather than LibTorch's SDPA, whose CPU
    /// flash kernel costs as much in bf16 as in fp32; the bf16 kernel is somewhat faster there at an error no worse in
    /// kind, slower on few keys (bench/results/bf16-speed-2026-12-04.md).
    /// </summary>
    private static bool UsesBf16Kernel(Tensor q, Tensor k, Tensor v, Tensor? mask) =>
        Bf16Attention.AppliesTo(q.dtype, k.shape[2]) && k.dtype == ScalarType.BFloat16 && v.dtype == ScalarType.BFloat16
        && (mask is null || mask.dtype == ScalarType.Bool);

    /// <summary>The bf16 kernel: a plain forward without a graph, else its autograd node (<paramref name="kept"/>: the
    /// forward's results, kept by the selective policy; null: computed now).</summary>
    private static Tensor Bf16(Tensor q, Tensor k, Tensor v, Tensor? mask, Bf16Forward? kept)
    {
        if (kept is null) Bf16OnThread++;
        if (!is_grad_enabled() || !(q.requires_grad || k.requires_grad || v.requires_grad))
        {
            if (kept is not null) return kept.Output!.alias();
            var (o, lse, shift) = Bf16Attention.Forward(q, k, v, mask);
            lse.Dispose(); shift.Dispose();
            return o;
        }
        // A scope of its own: the node's log-sum-exp and shifts (saved by the node) and TorchSharp's per-node leftovers.
        using var scope = NewDisposeScope();
        var data = kept ?? new Bf16Forward(null, null, null);
        return (mask is null ? Bf16AttentionFunction.apply(data, q, k, v) : Bf16AttentionFunction.apply(data, q, k, v, mask)).MoveToOuterDisposeScope();
    }

    /// <summary>After <c>loss.backward()</c>: frees the gradients the checkpoint nodes returned and rethrows an error
    /// that happened while recomputing in backward.</summary>
    public static void CompleteBackward()
    {
        DisposeReturned();
        ThrowIfFailed();
    }

    /// <summary>Score-matrix values per chunk of the kept-attention backward (16 MiB in fp32); tests lower it.</summary>
    internal static long AttentionChunkValues { get; set; } = 1L << 22;

    /// <summary>Checkpointed calls made, recomputations run and kept outputs reused by them on this thread (tests
    /// check that a policy is really applied).</summary>
    [ThreadStatic] internal static int CheckpointedOnThread, RecomputedOnThread, ReusedOnThread;

    /// <summary>Attention calls that ran <see cref="Bf16Attention"/> on this thread (tests check the routing).</summary>
    [ThreadStatic] internal static int Bf16OnThread;

    // --- errors and returned gradients -------------------------------------------------------------------------------

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<int, (string What, Exception Error)> Failures = new();
    [ThreadStatic] private static List<Tensor>? _returned;

    private static void ThrowIfFailed()
    {
        if (Failures.TryRemove(Environment.CurrentManagedThreadId, out var f))
            throw new InvalidOperationException($"{f.What} failed in backward: {f.Error.Message}", f.Error);
    }

    private static void DisposeReturned()
    {
        if (_returned is null) return;
        foreach (var t in _returned) t.Dispose();
        _returned.Clear();
    }

    /// <summary>Hands gradients to the engine: they leave every dispose scope and are freed after the engine copied them.</summary>
    private static List<Tensor> Return(List<Tensor> grads)
    {
        _returned ??= [];
        foreach (var g in grads)
            if (g is not null) _returned.Add(g.DetachFromDisposeScope());
        return grads;
    }

    /// <summary>n undefined gradients (null entries, as TorchSharp's custom functions take them).</summary>
    private static List<Tensor> Nulls(int n) => Enumerable.Repeat<Tensor>(null!, n).ToList();

    /// <summary>Runs a backward body; an exception becomes a recorded failure and undefined gradients.</summary>
    /// <param name="what">Names the node in the error that reaches the caller of backward.</param>
    private static List<Tensor> Guarded(string what, int count, int ownerThread, Tensor? gradOutput, Func<List<Tensor>> body)
    {
        DisposeReturned();   // returned by earlier callbacks: the engine has copied them
        try
        {
            if (gradOutput is null || gradOutput.IsInvalid) return Nulls(count);
            return Return(body());
        }
        catch (Exception e)
        {
            Failures.TryAdd(ownerThread, (what, e));
            return Nulls(count);
        }
        finally { gradOutput?.Dispose(); }
    }

    // --- the checkpoint node -----------------------------------------------------------------------------------------

    /// <summary>What one checkpointed call needs in backward besides its saved tensors.</summary>
    private sealed class Call(Func<Tensor[], Tensor> forward, bool[] requiresGrad, int parameterCount, bool selective, int ownerThread)
    {
        public Func<Tensor[], Tensor> Forward { get; } = forward;
        public bool[] RequiresGrad { get; } = requiresGrad;
        public int InputCount => RequiresGrad.Length;
        public int ParameterCount { get; } = parameterCount;
        public bool IsSelective { get; } = selective;
        public int OwnerThread { get; } = ownerThread;
        public Parameter[] Parameters { get; set; } = [];
        public int KeptCount { get; set; }
        public List<Tensor>? KeptInForward { get; set; }

        public void DisposeKept()
        {
            foreach (var t in KeptInForward ?? []) t.Dispose();
            KeptInForward = null;
        }
    }

    private sealed class CheckpointFunction : SingleTensorFunction<CheckpointFunction>
    {
        public override string Name => "ActivationCheckpoint";

        // vars: [Call, inputs..., trainable parameters...]; runs under no_grad (TorchSharp's apply).
        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            var call = (Call)vars[0];
            var inputs = vars.Skip(1).Take(call.InputCount).Cast<Tensor>().ToArray();
            call.Parameters = vars.Skip(1 + call.InputCount).Cast<Parameter>().ToArray();
            ctx.save_data("call", call);
            ctx.set_materialize_grads(false);
            Tensor y;
            if (call.IsSelective)
            {
                using var session = Selective.Begin(kept: null);
                call.KeptInForward = session.Kept;   // disposed by Apply, also when the forward throws
                y = call.Forward(inputs);
            }
            else y = call.Forward(inputs);
            call.KeptCount = call.KeptInForward?.Count ?? 0;
            ctx.save_for_backward([.. inputs, .. call.KeptInForward ?? []]);
            return y;
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
        {
            var call = (Call)ctx.get_data("call");
            int count = 1 + call.InputCount + call.ParameterCount;
            return Guarded("activation checkpointing: recomputing a checkpointed block", count, call.OwnerThread, gradOutput, () =>
            {
                using var scope = NewDisposeScope();
                var saved = ctx.get_saved_variables();
                var inputs = new Tensor[call.InputCount];
                for (int i = 0; i < inputs.Length; i++)
                    inputs[i] = call.RequiresGrad[i] ? saved[i].detach().requires_grad_() : saved[i];
                Tensor y;
                RecomputedOnThread++;
                using (enable_grad())
                {
                    using var session = call.IsSelective ? Selective.Begin(saved.Skip(call.InputCount).ToList()) : null;
                    y = call.Forward(inputs);
                    session?.CheckAllUsed();
                }
                var grads = Nulls(count);
                if (!y.requires_grad) return grads;
                // Parameters get their gradients here, accumulated into .grad by this inner backward (restricted to
                // them and the detached inputs); the node returns only the input gradients. (torch.autograd.grad would
                // avoid the side effect, but TorchSharp's binding lets a native error in it terminate the process.)
                var wrt = new List<Tensor>(call.Parameters);
                for (int i = 0; i < inputs.Length; i++)
                    if (call.RequiresGrad[i]) wrt.Add(inputs[i]);
                torch.autograd.backward([y], [gradOutput], inputs: wrt);
                for (int i = 0; i < inputs.Length; i++)
                    if (call.RequiresGrad[i] && inputs[i].grad is { } gi) grads[1 + i] = gi.MoveToOuterDisposeScope();
                return grads;
            });
        }
    }

    // --- the selective policy: kept outputs --------------------------------------------------------------------------

    /// <summary>A kept tensor passed to a replay node as data, so that it is not an input of the node.</summary>
    private sealed record Kept(Tensor Value);

    /// <summary>Recording (forward) or replaying (recomputation) the kept outputs of one checkpointed call.</summary>
    private sealed class Selective : IDisposable
    {
        [ThreadStatic] private static Selective? _current;
        public static Selective? Current => _current;

        private readonly Selective? _outer;
        private int _next;
        public List<Tensor> Kept { get; }
        public bool Replaying { get; }
        public int LinearCount { get; set; }

        private Selective(List<Tensor>? kept)
        {
            _outer = _current;
            Replaying = kept is not null;
            Kept = kept ?? [];
            _current = this;
        }

        public static Selective Begin(List<Tensor>? kept) => new(kept);

        /// <summary>Keeps a reference to <paramref name="y"/> outside every dispose scope; returns y.</summary>
        public Tensor Record(Tensor y)
        {
            Kept.Add(y.alias().DetachFromDisposeScope());
            return y;
        }

        public Tensor Next(long[] shape)
        {
            if (_next >= Kept.Count) throw new InvalidOperationException("the recomputation asked for more kept outputs than the forward kept");
            var t = Kept[_next++];
            if (!t.shape.SequenceEqual(shape))
                throw new InvalidOperationException($"kept output {_next} has shape [{string.Join(",", t.shape)}], the recomputation expects [{string.Join(",", shape)}]");
            return t;
        }

        public void CheckAllUsed()
        {
            if (_next != Kept.Count) throw new InvalidOperationException($"the recomputation used {_next} of {Kept.Count} kept outputs");
        }

        public void Dispose() => _current = _outer;
    }

    /// <summary>A kept linear output and the layer's LoRA scale (alpha / rank), passed as data.</summary>
    private sealed record KeptLinear(Tensor Value, double Scale);

    /// <summary>
    /// y = x Wᵀ + b + scale · (x Aᵀ) Bᵀ (the adapter part only with a LoRA adapter, in the adapter's dtype, as
    /// <see cref="LoraLinear"/>) with y taken from the forward; backward is the layer's.
    /// </summary>
    private sealed class KeptLinearFunction : SingleTensorFunction<KeptLinearFunction>
    {
        public override string Name => "KeptLinear";

        // vars: [KeptLinear, x, weight, bias?, lora A? [r, in], lora B? [out, r]]
        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            var (x, w, b, a, bb) = ((Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor, vars[4] as Tensor, vars[5] as Tensor);
            var kept = (KeptLinear)vars[0];
            ctx.save_for_backward([x, w, a!, bb!]);
            ctx.save_data("needs", new[] { x.requires_grad, w.requires_grad, b?.requires_grad ?? false, a?.requires_grad ?? false, bb?.requires_grad ?? false });
            ctx.save_data("scale", kept.Scale);
            ctx.save_data("thread", Environment.CurrentManagedThreadId);
            ctx.set_materialize_grads(false);
            return kept.Value.detach();
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor g)
        {
            var needs = (bool[])ctx.get_data("needs");
            double scale = (double)ctx.get_data("scale");
            return Guarded($"activation checkpointing ({Name})", 6, (int)ctx.get_data("thread"), g, () =>
            {
                using var scope = NewDisposeScope();
                var saved = ctx.get_saved_variables();
                var (x, w, a, bb) = (saved[0], saved[1], saved[2], saved[3]);
                var g2 = g.reshape(-1, g.shape[^1]);                            // [N, out]
                var x2 = x.reshape(-1, x.shape[^1]);                            // [N, in]
                var gx = needs[0] ? g.matmul(w) : null;                          // [..., in]
                var gw = needs[1] ? g2.t().mm(x2) : null;                        // [out, in]
                var gb = needs[2] ? g2.sum([0L]) : null;                         // [out]
                Tensor? ga = null, gbb = null;
                if (a is not null && bb is not null)
                {
                    var gf = g2.to_type(a.dtype);                                // the adapter path runs in its dtype
                    var xa = x2.to_type(a.dtype);
                    var gh = gf.mm(bb).mul_(scale);                              // d/d(x Aᵀ) [N, r]
                    if (needs[4]) gbb = gf.t().mm(xa.mm(a.t())).mul_(scale);     // [out, r]
                    if (needs[3]) ga = gh.t().mm(xa);                            // [r, in]
                    if (needs[0]) gx = gx!.add_(gh.mm(a).to_type(x.dtype).view(x.shape));
                }
                Tensor Out(Tensor? t) => t?.MoveToOuterDisposeScope()!;
                return [null!, Out(gx), Out(gw), Out(gb), Out(ga), Out(gbb)];
            });
        }
    }

    /// <summary>Bf16Attention's forward results when they exist already (kept by the selective policy), passed as data.</summary>
    private sealed record Bf16Forward(Tensor? Output, Tensor? LogSumExp, Tensor? Shift);

    /// <summary><see cref="Bf16Attention"/> as an autograd node: it keeps q, k, v, the output, the log-sum-exp and the
    /// shift per row, and recomputes the probabilities in backward.</summary>
    private sealed class Bf16AttentionFunction : SingleTensorFunction<Bf16AttentionFunction>
    {
        public override string Name => "Bf16Attention";

        // vars: [Bf16Forward, q [B,H,S,d], k [B,H,L,d], v [B,H,L,d], mask? (bool, broadcastable to [B,H,S,L])]
        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            var kept = (Bf16Forward)vars[0];
            var (q, k, v) = ((Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3]);
            var mask = vars.Length > 4 ? (Tensor)vars[4] : null;
            var (o, lse, shift) = kept.Output is null ? Bf16Attention.Forward(q, k, v, mask) : (kept.Output.detach(), kept.LogSumExp!, kept.Shift!);
            // (TorchSharp saves them after forward returns: lse and shift must not be disposed here)
            ctx.save_for_backward(mask is null ? [q, k, v, o, lse, shift] : [q, k, v, o, lse, shift, mask]);
            ctx.save_data("needs", new[] { q.requires_grad, k.requires_grad, v.requires_grad });
            ctx.save_data("inputs", vars.Length);
            ctx.save_data("thread", Environment.CurrentManagedThreadId);
            ctx.set_materialize_grads(false);
            return o;
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor g)
        {
            var needs = (bool[])ctx.get_data("needs");
            int inputs = (int)ctx.get_data("inputs");
            return Guarded("the bf16 attention kernel (Bf16Attention)", inputs, (int)ctx.get_data("thread"), g, () =>
            {
                using var scope = NewDisposeScope();
                var s = ctx.get_saved_variables();
                var (dq, dk, dv) = Bf16Attention.Backward(s[0], s[1], s[2], s.Count > 6 ? s[6] : null, s[3], s[4], s[5], g);
                Tensor Out(Tensor t, int i) => needs[i] ? t.MoveToOuterDisposeScope() : null!;
                var grads = new List<Tensor> { null!, Out(dq, 0), Out(dk, 1), Out(dv, 2) };
                if (inputs > 4) grads.Add(null!);
                return grads;
            });
        }
    }

    /// <summary>
    /// o = softmax(q kᵀ / sqrt(d)) v with o taken from the forward. Backward as flash attention's: the probabilities
    /// are recomputed from q and k, and rowsum(dO ∘ O) replaces rowsum(dP ∘ P); in fp32, a few (batch, head) pairs at
    /// a time so that the [S, L] score matrices stay small.
    /// </summary>
    private sealed class KeptAttentionFunction : SingleTensorFunction<KeptAttentionFunction>
    {
        public override string Name => "KeptAttention";


        // vars: [Kept, q [B,H,S,d], k [B,H,L,d], v [B,H,L,d], mask? (bool, broadcastable to [B,H,S,L])]
        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            var kept = ((Kept)vars[0]).Value;
            var (q, k, v) = ((Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3]);
            var mask = vars.Length > 4 ? (Tensor)vars[4] : null;
            ctx.save_for_backward(mask is null ? [q, k, v, kept] : [q, k, v, kept, mask]);
            ctx.save_data("needs", new[] { q.requires_grad, k.requires_grad, v.requires_grad });
            ctx.save_data("inputs", vars.Length);
            ctx.save_data("thread", Environment.CurrentManagedThreadId);
            ctx.set_materialize_grads(false);
            return kept.detach();
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor g)
        {
            var needs = (bool[])ctx.get_data("needs");
            return Guarded($"activation checkpointing ({Name})", (int)ctx.get_data("inputs"), (int)ctx.get_data("thread"), g, () =>
            {
                using var scope = NewDisposeScope();
                var saved = ctx.get_saved_variables();
                var f32 = ScalarType.Float32;
                // [B,H,S,d] -> [B·H,S,d]
                Tensor Flat(Tensor t) => t.to_type(f32).reshape(-1, t.shape[^2], t.shape[^1]);
                var (q, k, v, o, gf) = (Flat(saved[0]), Flat(saved[1]), Flat(saved[2]), Flat(saved[3]), Flat(g));
                long bh = q.shape[0], sq = q.shape[1], sk = k.shape[1];
                // The mask as [B·H, 1 or S, L]: which keys each query saw (false scores get no probability).
                Tensor? mask = null;
                if (saved.Count > 4)
                {
                    var m = saved[4];
                    var full = saved[0].shape;   // [B,H,S,d]
                    while (m.dim() < 4) m = m.unsqueeze(0);
                    long rows = m.shape[2] == 1 ? 1 : sq;
                    mask = m.expand(full[0], full[1], rows, sk).reshape(bh, rows, sk);
                }
                double scale = 1.0 / Math.Sqrt(q.shape[^1]);
                var rowDot = (gf * o).sum(-1, keepdim: true);                               // rowsum(dO ∘ O) [B·H,S,1]
                var (gq, gk, gv) = (needs[0] ? zeros_like(q) : null, needs[1] ? zeros_like(k) : null, needs[2] ? zeros_like(v) : null);
                long chunk = Math.Max(1, AttentionChunkValues / Math.Max(1, sq * sk));
                for (long start = 0; start < bh; start += chunk)
                {
                    using var step = NewDisposeScope();
                    long n = Math.Min(chunk, bh - start);
                    var (qc, kc, vc, gc) = (q.narrow(0, start, n), k.narrow(0, start, n), v.narrow(0, start, n), gf.narrow(0, start, n));
                    var p = qc.matmul(kc.transpose(-2, -1)).mul_(scale);                    // scores [n,S,L]
                    if (mask is not null) p.masked_fill_(mask.narrow(0, start, n).logical_not(), double.NegativeInfinity);
                    p.sub_(p.amax([-1], keepdim: true)).exp_();
                    p.div_(p.sum(-1, keepdim: true));                                        // P, in place
                    gv?.narrow(0, start, n).copy_(p.transpose(-2, -1).matmul(gc));          // dV = Pᵀ dO
                    var ds = gc.matmul(vc.transpose(-2, -1));                                // dP = dO Vᵀ
                    ds.sub_(rowDot.narrow(0, start, n)).mul_(p);                             // dS = P ∘ (dP − rowsum(dO ∘ O))
                    gq?.narrow(0, start, n).copy_(ds.matmul(kc).mul_(scale));                // dQ = dS K / sqrt(d)
                    gk?.narrow(0, start, n).copy_(ds.transpose(-2, -1).matmul(qc).mul_(scale)); // dK = dSᵀ Q / sqrt(d)
                }
                Tensor Out(Tensor? t, int i) => t?.view(saved[i].shape).to_type(saved[i].dtype).MoveToOuterDisposeScope()!;
                return saved.Count > 4 ? [null!, Out(gq, 0), Out(gk, 1), Out(gv, 2), null!] : [null!, Out(gq, 0), Out(gk, 1), Out(gv, 2)];
            });
        }
    }
}

using FastVideo.Train.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Sampling;

/// <summary>How a <see cref="CausalStream"/> predicts and what it keeps.</summary>
public sealed record CausalStreamOptions
{
    /// <summary>Classifier-free guidance scale of the x0 predictions (1 = the conditional branch alone).</summary>
    public double GuidanceScale { get; init; } = 1.0;

    /// <summary>The unconditional branch's text policy (null: the model's negative prompt).</summary>
    public CfgUncondPolicy? CfgUncond { get; init; }

    /// <summary>
    /// True: the earlier frames are read from the model's key/value caches. False: nothing is cached; every
    /// prediction runs the block-causal training forward over all committed frames and the block (for checking and
    /// benchmarking the cache: the results agree).
    /// </summary>
    public bool UseKvCache { get; init; } = true;

    /// <summary>The model's cache tag of the conditional branch; the unconditional one uses "&lt;tag&gt;.uncond".</summary>
    public string CacheTag { get; init; } = "pos";

    /// <summary>The grid whose sigmas convert v to x0 and noise the blocks (<see cref="CausalStream.AddNoise"/>); null =
    /// the model's own scheduler. Self-Forcing uses its own (spec 3.2).</summary>
    public FastVideo.Models.Schedulers.INoiseScheduler? Scheduler { get; init; }

    /// <summary>The attention metadata the predictions ask for (Self-Forcing's student asks for "vsa").</summary>
    public AttnKind AttnKind { get; init; } = AttnKind.Dense;
}

/// <summary>
/// One streaming rollout of a causal model (<see cref="ICausalModel"/>): a clip produced block after block, each
/// block predicted (<see cref="PredictX0"/>) as often as its schedule asks, then committed (<see cref="Commit"/>) as
/// the context the later blocks attend to. With guidance the conditional and the unconditional branch each keep
/// their own context (their keys and values differ). Starts empty: the model's caches of its tags are cleared when
/// it is made and when it is disposed.
/// </summary>
public sealed class CausalStream : IDisposable
{
    private readonly ModelBase _model;
    private readonly ICausalModel _causal;
    private readonly TrainingBatch _conditioning;
    private readonly ScalarType _dtype;
    // Without cache: the committed frames [B,n,C,H,W] and their timesteps [B,n].
    private readonly List<(Tensor Frames, Tensor Timesteps)> _context = [];

    /// <param name="model">A causal model plugin (e.g. <c>wan_causal</c>).</param>
    /// <param name="conditioning">Conditional and unconditional sides as PrepareBatch or PrepareInference built them;
    /// its latents give the dtype the model is fed in.</param>
    public CausalStream(ModelBase model, TrainingBatch conditioning, CausalStreamOptions? options = null)
    {
        _causal = model as ICausalModel ?? throw new UserError(
            $"role '{model.Role}': the {model.Context.Family.Name} family has no streaming (causal) forward; use a causal family such as wan_causal");
        _model = model;
        _conditioning = conditioning;
        _dtype = conditioning.Latents.dtype;
        Options = options ?? new CausalStreamOptions();
        ClearCaches();
    }

    public CausalStreamOptions Options { get; }

    public ModelBase Model => _model;

    /// <summary>The grid of the x0 conversions and the forward process (<see cref="CausalStreamOptions.Scheduler"/>, else the model's).</summary>
    public FastVideo.Models.Schedulers.INoiseScheduler Scheduler => Options.Scheduler ?? _model.NoiseScheduler;

    /// <summary>The forward process on <see cref="Scheduler"/>'s grid: (1 - sigma(t)) x0 + sigma(t) eps, BTCHW.</summary>
    public Tensor AddNoise(Tensor x0, Tensor noise, Tensor timestep) => ModelBase.AddNoise(x0, noise, timestep, Scheduler);

    /// <summary>The noise x_t at <paramref name="timestep"/> implies given its x0 prediction (on <see cref="Scheduler"/>'s
    /// grid): re-noising x0 with it to the next timestep is the deterministic (ODE) step.</summary>
    public Tensor ImpliedNoise(Tensor xt, Tensor x0, Tensor timestep)
    {
        using var scope = NewDisposeScope();
        long b = xt.shape[0], n = xt.shape[1];
        var sigma = Scheduler.SigmasForTimesteps(ModelBase.PerFrameTimesteps(timestep, b, n)).to_type(xt.dtype);
        sigma = sigma.numel() == 1 ? sigma.reshape(1, 1, 1, 1, 1) : sigma.reshape(b, n, 1, 1, 1);
        return FastVideo.Models.Schedulers.FlowMatch.ImpliedNoise(xt, x0, sigma).MoveToOuterDisposeScope();
    }

    /// <summary>The model's training-forward block size (<see cref="ICausalModel.NumFramesPerBlock"/>).</summary>
    public int NumFramesPerBlock => _causal.NumFramesPerBlock;

    /// <summary>Frames committed so far: the next block starts here.</summary>
    public long Frames { get; private set; }

    /// <summary>Latent frames of key/value slots each block's cache holds, summed over the branches (0 without cache).</summary>
    public long CacheFrames => Options.UseKvCache ? Branches.Sum(c => _causal.CacheFrames(Tag(c))) : 0;

    private bool[] Branches => Options.GuidanceScale == 1.0 ? [true] : [true, false];

    private string Tag(bool conditional) => conditional ? Options.CacheTag : Options.CacheTag + ".uncond";

    /// <summary>
    /// x0 of the block <paramref name="x"/> [B,n,C,H,W] that follows the committed frames, at
    /// <paramref name="timestep"/> (a scalar, [B] or [B,n]), guided. Under grad mode it is differentiable in
    /// <paramref name="x"/> and the weights; the committed context never is.
    /// </summary>
    public Tensor PredictX0(Tensor x, Tensor timestep)
    {
        using var scope = NewDisposeScope();
        var xc = x.to(_model.Device).to_type(_dtype);
        var t = timestep.to(_model.Device);
        var cfg = Options.CfgUncond;
        Tensor x0;
        if (Options.UseKvCache)
        {
            x0 = Guidance.Guide(Options.GuidanceScale, c => ModelBase.NoiseToX0(
                _causal.PredictNoiseStreaming(xc, t, _conditioning, c, Tag(c), storeKv: false, curStartFrame: checked((int)Frames), cfgUncond: cfg,
                    attnKind: Options.AttnKind)!, xc, t, Scheduler));
        }
        else
        {
            long b = xc.shape[0], n = xc.shape[1];
            CheckAligned(n);
            var all = cat([.. _context.Select(e => e.Frames), xc], 1);
            var times = cat([.. _context.Select(e => e.Timesteps), PerFrame(t, b, n)], 1);
            x0 = Guidance.Guide(Options.GuidanceScale, c =>
            {
                var v = _model.PredictNoise(all, times, _conditioning, c, cfg, Options.AttnKind).narrow(1, Frames, n);
                return ModelBase.NoiseToX0(v, xc, t, Scheduler);
            });
        }
        return x0.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Writes the block <paramref name="context"/> [B,n,C,H,W] (its clean x0, or a re-noised one) at
    /// <paramref name="timestep"/> (0 for clean) as the context of the blocks after it, without grad, and moves
    /// <see cref="Frames"/> past it.
    /// </summary>
    public void Commit(Tensor context, Tensor timestep)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var xc = context.detach().to(_model.Device).to_type(_dtype);
        var t = timestep.to(_model.Device);
        long b = xc.shape[0], n = xc.shape[1];
        if (Options.UseKvCache)
        {
            foreach (var c in Branches)
                _causal.PredictNoiseStreaming(xc, t, _conditioning, c, Tag(c), storeKv: true, curStartFrame: checked((int)Frames), cfgUncond: Options.CfgUncond,
                    attnKind: Options.AttnKind);
        }
        else
        {
            CheckAligned(n);
            _context.Add((xc.clone().DetachFromDisposeScope(), PerFrame(t, b, n).clone().DetachFromDisposeScope()));
        }
        Frames += n;
    }

    /// <summary>
    /// The training forward that recomputation runs splits the clip into blocks of NumFramesPerBlock from frame 0; a
    /// streamed block that straddles them would see other frames than the cached stream shows it.
    /// </summary>
    private void CheckAligned(long n)
    {
        int k = NumFramesPerBlock;
        if (Frames % k != 0 || n > k)
            throw new ArgumentException($"without a KV cache the stream recomputes with the block-causal training forward, whose blocks are " +
                                        $"{k} frames from frame 0; a block of {n} frames at frame {Frames} does not match them");
    }

    /// <summary>A scalar, [B] or [B,n] timestep as float32 [B,n].</summary>
    private static Tensor PerFrame(Tensor t, long b, long n)
    {
        var flat = ModelBase.PerFrameTimesteps(t, b, n).to_type(ScalarType.Float32);   // 1 or B·n values
        return (flat.numel() == 1 ? flat.expand(b * n) : flat).reshape(b, n);
    }

    private void ClearCaches()
    {
        foreach (var c in new[] { true, false }) _causal.ClearCaches(Tag(c));
    }

    public void Dispose()
    {
        ClearCaches();
        foreach (var (f, t) in _context) { f.Dispose(); t.Dispose(); }
        _context.Clear();
    }
}

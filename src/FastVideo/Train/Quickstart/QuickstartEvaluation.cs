using FastVideo.Data;
using FastVideo.Data.Synthetic;
using FastVideo.Sampling;
using FastVideo.Train.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Quickstart;

/// <summary>Samples of one generator setting for a fixed prompt x seed grid, and the evaluator's verdict on them.</summary>
public sealed record GeneratorResult(string Name, string Description, int Steps, double Accuracy, double Sharpness,
    double ColorAccuracy, double DirectionAccuracy, Tensor Clips, IReadOnlyList<string> Prompts, double? ObjectAccuracy = null,
    double SteadyAccuracy = 0);

/// <summary>
/// Generates clips for every class prompt and seed with a model plugin, decodes them with the (identity) VAE and
/// scores them with the synthetic dataset's evaluator.
/// </summary>
public sealed class QuickstartEvaluation
{
    private readonly string _datasetDir;
    private readonly ClipEvaluator _evaluator;
    private readonly SyntheticTextEncoder _encoder;
    private readonly int _textLen;

    public QuickstartEvaluation(string datasetDir, int embedDim, long textSeed, int textLen, IReadOnlyList<string> prompts, IReadOnlyList<long> seeds)
    {
        _datasetDir = datasetDir;
        _evaluator = ClipEvaluator.ForDataset(datasetDir);
        _encoder = new SyntheticTextEncoder(embedDim, textSeed);
        _textLen = textLen;
        Prompts = prompts;
        Seeds = seeds;
    }

    /// <summary>Every class prompt of the dataset <paramref name="d"/> x <paramref name="seeds"/>.</summary>
    public static QuickstartEvaluation ForDataset(SyntheticOptions d, string datasetDir, IReadOnlyList<long> seeds) =>
        new(datasetDir, d.EmbedDim, d.Seed, d.TextLen, SyntheticVideoDataset.Classes(d).Select(c => c.Prompt).ToList(), seeds);

    /// <summary>One clip's latent shape [C,T,H,W] for the dataset's clips, or <paramref name="frames"/> frames.</summary>
    public static long[] LatentShape(SyntheticOptions d, int? frames = null) => [d.Channels, frames ?? d.Frames, d.Height, d.Width];

    public IReadOnlyList<string> Prompts { get; }
    public ClipEvaluator Evaluator => _evaluator;
    public IReadOnlyList<long> Seeds { get; }

    /// <summary>Text [N,L,D] padded to text_len with its mask [N,L], for the prompt x seed grid (prompt-major).</summary>
    private Conditioning PromptConditioning()
    {
        var rows = new List<Tensor>();
        var masks = new List<Tensor>();
        foreach (var p in Prompts)
        {
            using var e = _encoder.Encode(p);
            long valid = Math.Min(e.shape[0], _textLen);
            var padded = nn.functional.pad(e, [0, 0, 0, Math.Max(0, _textLen - e.shape[0])]).narrow(0, 0, _textLen);
            var mask = cat([ones(valid), zeros(_textLen - valid)]);
            foreach (var _ in Seeds) { rows.Add(padded.alias()); masks.Add(mask.alias()); }
        }
        return Conditioning.FromText(stack(rows), stack(masks));
    }

    /// <summary>Initial noise [N,T,C,H,W], one generator per seed so every setting starts from the same noise. Drawn in
    /// the VAE layout [C,T,H,W] (as the quickstart always has), then permuted to the plugins' BTCHW.</summary>
    private Tensor Noise(long[] latentShape)
    {
        var rows = new List<Tensor>();
        foreach (var _ in Prompts)
            foreach (var s in Seeds)
            {
                using var g = new Generator((ulong)s, device("cpu"));
                rows.Add(randn(latentShape, generator: g));
            }
        return stack(rows).permute(0, 2, 1, 3, 4);
    }

    /// <summary>Euler flow matching with CFG (the model's negative conditioning) over <paramref name="steps"/> steps.</summary>
    public GeneratorResult Euler(string name, string description, ModelBase model, int steps, double guidance, double shift, long[] latentShape) =>
        Sample(name, description, steps, model, latentShape, (batch, noise) =>
            ModelSampling.Euler(model, batch, noise, new SamplingOptions(steps, guidance, shift)));

    /// <summary>DMD-style few-step sampling through the one sampling core.</summary>
    public GeneratorResult FewStep(string name, string description, ModelBase model, IReadOnlyList<float> timesteps, long[] latentShape, long noiseSeed)
    {
        using var gen = new Generator((ulong)noiseSeed, device("cpu"));
        return Sample(name, description, timesteps.Count, model, latentShape, (batch, noise) =>
            ModelSampling.FewStep(model, batch, noise, timesteps.Select(t => (double)t).ToList(), VaeLayoutDraw(gen)));
    }

    /// <summary>
    /// Streaming generation with a causal model (<see cref="StreamingSampling"/>, KV cache, no guidance): each block
    /// of the model's num_frames_per_block frames runs the few-step <paramref name="timesteps"/> on
    /// <paramref name="scheduler"/>'s grid (null: the model's), from the same initial noise as the other settings
    /// for a clip of the same shape. <paramref name="onBlock"/> sees each finished block and its seconds.
    /// </summary>
    public GeneratorResult Streaming(string name, string description, ModelBase model, IReadOnlyList<double> timesteps,
        FastVideo.Models.Schedulers.INoiseScheduler? scheduler, long[] latentShape, long noiseSeed, BlockDone? onBlock = null)
    {
        using var gen = new Generator((ulong)noiseSeed, device("cpu"));
        return Sample(name, description, timesteps.Count, model, latentShape, (batch, noise) =>
        {
            using var stream = new CausalStream(model, batch, new CausalStreamOptions { Scheduler = scheduler });
            return StreamingSampling.Generate(stream, noise, new StreamingSchedule(timesteps), VaeLayoutDraw(gen), onBlock);
        });
    }

    /// <summary>Runs <paramref name="sampler"/> (conditioning, initial noise -> latents) without grad on the prompt x
    /// seed grid, decodes and scores.</summary>
    private GeneratorResult Sample(string name, string description, int steps, ModelBase model, long[] latentShape, Func<TrainingBatch, Tensor, Tensor> sampler)
    {
        using var scope = NewDisposeScope();
        using var batch = model.PrepareInference(PromptConditioning(), latentShape);
        Tensor samples;
        using (no_grad())
        {
            model.Transformer.eval();
            samples = sampler(batch, Noise(latentShape));
        }
        return Score(name, description, steps, model.DecodeLatents(samples)).MoveTo();
    }

    /// <summary>Re-noising draws in the VAE layout too, so a seed gives the same samples as before the plugins' layout.</summary>
    private static NoiseDraw VaeLayoutDraw(Generator gen) => like =>
        randn([like.shape[0], like.shape[2], like.shape[1], like.shape[3], like.shape[4]], generator: gen)
            .permute(0, 2, 1, 3, 4).to(like.device).to_type(like.dtype);

    /// <summary>The evaluator's verdict on decoded clips [N,C,T,H,W] of the prompt x seed grid (prompt-major).</summary>
    public GeneratorResult Score(string name, string description, int steps, Tensor clips)
    {
        var prompts = Prompts.SelectMany(p => Seeds.Select(_ => p)).ToList();
        var report = _evaluator.EvaluateMany(Enumerable.Range(0, prompts.Count).Select(i => (clips[i], prompts[i])));
        return new GeneratorResult(name, description, steps, report.Accuracy, report.MeanSharpness, report.ColorAccuracy,
            report.DirectionAccuracy, clips.clamp(-1, 1), prompts, report.ObjectAccuracy, report.SteadyAccuracy);
    }
}

internal static class GeneratorResultExtensions
{
    public static GeneratorResult MoveTo(this GeneratorResult r) => r with { Clips = r.Clips.MoveToOuterDisposeScope() };
}

/// <summary>
/// How the second part of long clips (frames from a split on) continues the first, by the evaluator: its colour and
/// direction against the prompt, and against what the evaluator saw in the first part.
/// </summary>
/// <param name="Kept">Share of clips whose second part has the prompt's colour and an allowed direction, both the
/// same as in the first part.</param>
public sealed record ContinuationCheck(int Samples, long SplitFrame, double ColorAccuracy, double DirectionAccuracy,
    double SameColor, double SameDirection, double Kept, double Sharpness, double? ObjectAccuracy, double Steady = 0)
{
    public System.Text.Json.Nodes.JsonObject ToJson(int? localAttnSize = null) => new()
    {
        ["samples"] = Samples, ["from_frame"] = SplitFrame, ["local_attn_size"] = localAttnSize ?? -1,
        ["color_accuracy"] = Math.Round(ColorAccuracy, 4), ["direction_accuracy"] = Math.Round(DirectionAccuracy, 4),
        ["same_color_as_first_half"] = Math.Round(SameColor, 4), ["same_direction_as_first_half"] = Math.Round(SameDirection, 4),
        ["kept"] = Math.Round(Kept, 4), ["sharpness"] = Math.Round(Sharpness, 4),
        ["object_accuracy"] = ObjectAccuracy is { } oa ? Math.Round(oa, 4) : null,
        ["steady"] = Math.Round(Steady, 4),
    };

    public static ContinuationCheck Of(ClipEvaluator evaluator, Tensor clips, IReadOnlyList<string> prompts, long split)
    {
        long frames = clips.shape[2];
        if (split < 2 || frames - split < 2) throw new ArgumentException($"both parts need two frames for a direction: split {split} of {frames} frames");
        var pairs = Enumerable.Range(0, prompts.Count).Select(i =>
        {
            using var clip = clips[i];
            using var a = clip.narrow(1, 0, split);
            using var b = clip.narrow(1, split, frames - split);
            return (First: evaluator.Evaluate(a, prompts[i]), Second: evaluator.Evaluate(b, prompts[i]));
        }).ToList();
        double Share(Func<ClipAssessment, ClipAssessment, bool> f) => pairs.Average(p => f(p.First, p.Second) ? 1.0 : 0.0);
        bool SameColor(ClipAssessment a, ClipAssessment b) => b.Color is not null && a.Color == b.Color;
        bool SameDirection(ClipAssessment a, ClipAssessment b) => b.Direction is not null && a.Direction == b.Direction;
        return new ContinuationCheck(pairs.Count, split,
            Share((_, b) => b.ColorCorrect), Share((_, b) => b.DirectionCorrect), Share(SameColor), Share(SameDirection),
            Share((a, b) => b.ColorCorrect && b.DirectionCorrect && SameColor(a, b) && SameDirection(a, b)),
            pairs.Average(p => p.Second.Sharpness),
            pairs.Any(p => p.Second.OneObject is null) ? null : Share((_, b) => b.OneObject == true), Share((_, b) => b.Steady));
    }
}

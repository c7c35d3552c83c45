using FastVideo.Data;
using FastVideo.Data.Synthetic;
using FastVideo.Sampling;
using FastVideo.Train.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Quickstart;

/// <summary>Samples of one generator setting for a fixed prompt x seed grid, and the evaluator's verdict on them.</summary>
public sealed record GeneratorResult(string Name, string Description, int Steps, double Accuracy, double Sharpness,
    double ColorAccuracy, double DirectionAccuracy, Tensor Clips, IReadOnlyList<string> Prompts, double? ObjectAccuracy = null);

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

    public IReadOnlyList<string> Prompts { get; }
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
    public GeneratorResult Euler(string name, string description, ModelBase model, int steps, double guidance, double shift, long[] latentShape)
    {
        using var scope = NewDisposeScope();
        using var batch = model.PrepareInference(PromptConditioning(), latentShape);
        Tensor samples;
        using (no_grad())
        {
            model.Transformer.eval();
            samples = ModelSampling.Euler(model, batch, Noise(latentShape), new SamplingOptions(steps, guidance, shift));
        }
        return Score(name, description, steps, model.DecodeLatents(samples)).MoveTo();
    }

    /// <summary>DMD-style few-step sampling through the one sampling core.</summary>
    public GeneratorResult FewStep(string name, string description, ModelBase model, IReadOnlyList<float> timesteps, long[] latentShape, long noiseSeed)
    {
        using var scope = NewDisposeScope();
        using var batch = model.PrepareInference(PromptConditioning(), latentShape);
        using var gen = new Generator((ulong)noiseSeed, device("cpu"));
        // Re-noising draws in the VAE layout too, so a seed gives the same samples as before the plugins' layout.
        NoiseDraw draw = like => randn([like.shape[0], like.shape[2], like.shape[1], like.shape[3], like.shape[4]], generator: gen)
            .permute(0, 2, 1, 3, 4).to(like.device).to_type(like.dtype);
        Tensor x0;
        using (no_grad())
        {
            model.Transformer.eval();
            x0 = ModelSampling.FewStep(model, batch, Noise(latentShape), timesteps.Select(t => (double)t).ToList(), draw);
        }
        return Score(name, description, timesteps.Count, model.DecodeLatents(x0)).MoveTo();
    }

    private GeneratorResult Score(string name, string description, int steps, Tensor clips)
    {
        var prompts = Prompts.SelectMany(p => Seeds.Select(_ => p)).ToList();
        var report = _evaluator.EvaluateMany(Enumerable.Range(0, prompts.Count).Select(i => (clips[i], prompts[i])));
        return new GeneratorResult(name, description, steps, report.Accuracy, report.MeanSharpness, report.ColorAccuracy,
            report.DirectionAccuracy, clips.clamp(-1, 1), prompts, report.ObjectAccuracy);
    }
}

internal static class GeneratorResultExtensions
{
    public static GeneratorResult MoveTo(this GeneratorResult r) => r with { Clips = r.Clips.MoveToOuterDisposeScope() };
}

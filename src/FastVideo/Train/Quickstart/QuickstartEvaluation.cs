using FastVideo.Data.Synthetic;
using FastVideo.Models.Schedulers;
using FastVideo.Models.Vae;
using FastVideo.Train.Models;
using FastVideo.Train.Utils;
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

    /// <summary>Text [N,L,D] padded to text_len for the prompt x seed grid (prompt-major).</summary>
    private Tensor PromptEmbeds()
    {
        var rows = new List<Tensor>();
        foreach (var p in Prompts)
        {
            using var e = _encoder.Encode(p);
            var padded = nn.functional.pad(e, [0, 0, 0, Math.Max(0, _textLen - e.shape[0])]).narrow(0, 0, _textLen);
            foreach (var _ in Seeds) rows.Add(padded.alias());
            padded.Dispose();
        }
        return stack(rows);
    }

    /// <summary>Initial noise [N,C,T,H,W] (BCTHW), one generator per seed so every setting starts from the same noise.</summary>
    private Tensor Noise(long[] latentShape)
    {
        var rows = new List<Tensor>();
        foreach (var _ in Prompts)
            foreach (var s in Seeds)
            {
                using var g = new Generator((ulong)s, device("cpu"));
                rows.Add(randn(latentShape, generator: g));
            }
        return stack(rows);
    }

    /// <summary>Euler flow matching with CFG (the model's negative conditioning) over <paramref name="steps"/> steps.</summary>
    public GeneratorResult Euler(string name, string description, WanModelHandle model, int steps, double guidance, double shift, long[] latentShape)
    {
        using var scope = NewDisposeScope();
        var text = PromptEmbeds();
        var neg = model.Negative.expand(text.shape[0], -1, -1);
        var negPadded = nn.functional.pad(neg, [0, 0, 0, Math.Max(0, text.shape[1] - neg.shape[1])]).narrow(1, 0, text.shape[1]);
        var x = Noise(latentShape);
        Tensor samples;
        using (no_grad())
        {
            model.Transformer.eval();
            samples = Sampling.FlowMatchSampler.Sample((lat, t, txt) => model.Transformer.Forward(lat, t, txt), x, text,
                guidance != 1.0 ? negPadded : null, new Sampling.SamplingOptions(steps, guidance, shift));
        }
        return Score(name, description, steps, model.Vae.Denormalize(samples)).MoveTo();
    }

    /// <summary>DMD-style few-step sampling (<see cref="Sampling.FewStepSampler"/>) on the transformer's BCTHW layout.</summary>
    public GeneratorResult FewStep(string name, string description, WanModelHandle model, IReadOnlyList<float> timesteps, long[] latentShape, long noiseSeed)
    {
        using var scope = NewDisposeScope();
        var text = PromptEmbeds();
        var x = Noise(latentShape);
        var scheduler = model.Scheduler;
        using var gen = new Generator((ulong)noiseSeed, device("cpu"));
        Tensor x0;
        using (no_grad())
        {
            model.Transformer.eval();
            x0 = Sampling.FewStepSampler.Sample(
                (lat, t) => FlowMatchMath.PredNoiseToPredVideo(model.Transformer.Forward(lat, t, text), lat, t, scheduler),
                scheduler.AddNoise, x, timesteps.Select(t => (double)t).ToList(), gen);
        }
        return Score(name, description, timesteps.Count, model.Vae.Denormalize(x0)).MoveTo();
    }

    private GeneratorResult Score(string name, string description, int steps, Tensor clips)
    {
        var prompts = Prompts.SelectMany(p => Seeds.Select(_ => p)).ToList();
        var report = _evaluator.EvaluateMany(Enumerable.Range(0, prompts.Count).Select(i => (clips[i], prompts[i])));
        return new GeneratorResult(name, description, steps, report.Accuracy, report.MeanSharpness, report.ColorAccuracy,
            report.DirectionAccuracy, clips.clamp(-1, 1), prompts, report.ObjectAccuracy);
    }
}

/// <summary>What the evaluation needs of a Wan role: its transformer, scheduler, VAE constants and negative text.</summary>
public sealed record WanModelHandle(FastVideo.Models.Dits.WanTransformer3DModel Transformer, FlowMatchEulerDiscreteScheduler Scheduler, VaeConfig Vae, Tensor Negative);

internal static class GeneratorResultExtensions
{
    public static GeneratorResult MoveTo(this GeneratorResult r) => r with { Clips = r.Clips.MoveToOuterDisposeScope() };
}

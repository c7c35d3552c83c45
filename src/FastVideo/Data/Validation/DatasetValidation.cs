using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace FastVideo.Data.Validation;

/// <summary>Turns a validation prompt into text-encoder outputs [L, D] (valid tokens only), float32 on the CPU.</summary>
public interface IPromptEncoder
{
    Tensor Encode(string prompt);
}

/// <summary>
/// One decoded clip's verdict: whether it shows what its prompt asks, named measures that are averaged over the
/// samples of a run (rates in [0, 1] such as <c>color_accuracy</c>, or scores such as <c>sharpness</c>), and
/// per-sample details written to <c>metrics.json</c>.
/// </summary>
public sealed record ClipVerdict(bool Correct, IReadOnlyDictionary<string, double> Measures, JsonObject Details);

/// <summary>Scores decoded clips [C, T, H, W] (pixels in about [-1, 1]) against their prompts.</summary>
public interface IClipScorer
{
    ClipVerdict Score(Tensor clip, string prompt);
}

/// <summary>
/// What a dataset offers validation beyond its rows: its own prompts, an encoder for prompts (the synthetic dataset
/// has a built-in one; real data has none until text encoders exist), a scorer for decoded clips, the text length
/// its embeddings were padded to, and the frame rate for GIFs.
/// </summary>
public sealed record DatasetValidation(
    IReadOnlyList<string> Prompts, IPromptEncoder? Encoder, IClipScorer? Scorer, int? TextLen = null, double Fps = 8);

/// <summary>
/// Finds a data folder's <see cref="DatasetValidation"/>. Each provider recognises its own kind of dataset (the
/// synthetic one by its classes.json) and returns null for others; real parquet data has none, and validation then
/// writes latents (and decoded clips when the model can decode) only.
/// </summary>
public static class DatasetValidationProviders
{
    private static readonly List<Func<string, DatasetValidation?>> Providers = [Synthetic.SyntheticValidation.For];
    private static readonly Lock Gate = new();

    public static void Register(Func<string, DatasetValidation?> provider)
    {
        lock (Gate) Providers.Add(provider);
    }

    public static DatasetValidation? For(string dataDir)
    {
        Func<string, DatasetValidation?>[] providers;
        lock (Gate) providers = Providers.ToArray();
        return providers.Select(p => p(dataDir)).FirstOrDefault(v => v is not null);
    }
}

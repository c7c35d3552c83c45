using System.Text;
using static TorchSharp.torch;

namespace FastVideo.Data.Synthetic;

/// <summary>
/// The moving-shapes dataset's stand-in for a text encoder: each lower-cased whitespace token gets a word vector of
/// standard-normal entries drawn from SplitMix64 keyed by (seed, FNV-1a hash of the word) - a seeded word table that
/// covers every word - plus a small sinusoidal position code (0.1 x), so word order matters. An end token "&lt;/s&gt;"
/// closes every caption (as T5 appends EOS), so even the empty caption has one row. Output: [L_valid, D], no padding.
/// </summary>
public sealed class SyntheticTextEncoder
{
    public const string EndToken = "</s>";
    private const float PositionScale = 0.1f;

    public SyntheticTextEncoder(int embedDim, long seed)
    {
        if (embedDim < 2) throw new UserError($"embed_dim must be at least 2, got {embedDim}");
        EmbedDim = embedDim;
        Seed = seed;
    }

    public int EmbedDim { get; }
    public long Seed { get; }

    public static IReadOnlyList<string> Tokenize(string caption) =>
        [.. caption.ToLowerInvariant().Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries), EndToken];

    /// <summary>Rows of the embedding (tokens + end token).</summary>
    public int Length(string caption) => Tokenize(caption).Count;

    /// <summary>The embedding as row-major floats [L_valid, D].</summary>
    public float[] EncodeToArray(string caption)
    {
        var tokens = Tokenize(caption);
        var result = new float[tokens.Count * EmbedDim];
        for (int p = 0; p < tokens.Count; p++)
        {
            var row = result.AsSpan(p * EmbedDim, EmbedDim);
            WordVector(tokens[p], row);
            for (int j = 0; j < EmbedDim; j++)
            {
                double freq = Math.Pow(10000.0, -(2 * (j / 2)) / (double)EmbedDim);
                row[j] += PositionScale * (float)(j % 2 == 0 ? Math.Sin(p * freq) : Math.Cos(p * freq));
            }
        }
        return result;
    }

    /// <summary>
    /// A pooled caption vector [<paramref name="dim"/>] (the stand-in for CLIP's pooled output in the hunyuan layout):
    /// the mean of the caption's word vectors (end token included, no position code), cut to its first
    /// <paramref name="dim"/> values; <paramref name="dim"/> at most <see cref="EmbedDim"/>.
    /// </summary>
    public float[] Pooled(string caption, int dim)
    {
        if (dim < 1 || dim > EmbedDim) throw new UserError($"pooled_dim must be 1..{EmbedDim}, got {dim}");
        var tokens = Tokenize(caption);
        var sum = new double[EmbedDim];
        var row = new float[EmbedDim];
        foreach (var word in tokens)
        {
            WordVector(word, row);
            for (int j = 0; j < EmbedDim; j++) sum[j] += row[j];
        }
        return sum.Take(dim).Select(v => (float)(v / tokens.Count)).ToArray();
    }

    /// <summary>
    /// A caption's text_embedding in a dataset layout: the tokens [L, D] (wan), or [1 + L, D] with the
    /// <see cref="Pooled"/> vector of <paramref name="pooledDim"/> values zero-padded in row 0 (hunyuan).
    /// </summary>
    public (float[] Values, long[] Shape) EncodeAs(string caption, SyntheticTextLayout layout, int pooledDim)
    {
        var tokens = EncodeToArray(caption);
        int rows = Length(caption);
        return layout == SyntheticTextLayout.Hunyuan
            ? (HunyuanTextLayout.Pack(tokens, EmbedDim, Pooled(caption, pooledDim)), [rows + 1, EmbedDim])
            : (tokens, [rows, EmbedDim]);
    }

    /// <summary>The embedding as a float32 tensor [L_valid, D] (the caller disposes it).</summary>
    public Tensor Encode(string caption) => tensor(EncodeToArray(caption), [Length(caption), EmbedDim]);

    private void WordVector(string word, Span<float> dst)
    {
        var rng = SplitMix64.Keyed(Seed, unchecked((long)Fnv1a(word)));
        for (int j = 0; j < dst.Length; j++) dst[j] = (float)rng.NextGaussian();
    }

    private static ulong Fnv1a(string s)
    {
        ulong h = 14695981039346656037UL;
        foreach (var b in Encoding.UTF8.GetBytes(s)) h = unchecked((h ^ b) * 1099511628211UL);
        return h;
    }
}

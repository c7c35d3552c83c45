using static TorchSharp.torch;

namespace FastVideo.Data;

/// <summary>
/// Turns rows into a <see cref="RawBatch"/> (reference spec 2.4): stacks latents, pads or cuts each text embedding to
/// <see cref="TextLen"/> rows with its attention mask, and applies text CFG dropout.
/// <para>CFG dropout: sample <c>i</c> is dropped when <see cref="DropoutDraw"/>(seed, i) &lt; cfg_rate, a uniform
/// number in [0, 1) from SplitMix64 keyed by (seed, sample index). It depends on nothing else, so the same samples
/// are dropped in every run and after a resume (upstream keys CPython's Mersenne Twister by seed XOR index; the
/// decisions differ from upstream's but have the same property). A dropped sample gets the unconditional text: the
/// given empty-caption embedding (padded/cut like any text), or, without one, zeros [text_len, D] with an all-ones
/// mask, as upstream's hard-coded zero embedding ends up after cropping.</para>
/// </summary>
public sealed class BatchCollator
{
    private readonly float[]? _uncond;
    private readonly long _uncondRows, _uncondDim;

    /// <param name="textLen">Rows of text per sample (the text encoder's text_len: Wan 512, Hunyuan 256).</param>
    /// <param name="cfgRate">Probability of replacing a sample's text by the unconditional one (training_cfg_rate).</param>
    /// <param name="seed">data.seed.</param>
    /// <param name="unconditionalText">Optional empty-caption embedding, float [L, D] or [1, L, D] (copied).</param>
    public BatchCollator(int textLen, double cfgRate = 0.0, long seed = 0, Tensor? unconditionalText = null)
    {
        if (textLen < 1) throw new UserError($"text_len must be at least 1, got {textLen}");
        if (cfgRate < 0 || cfgRate > 1) throw new UserError($"training_cfg_rate must be in [0, 1], got {cfgRate}");
        TextLen = textLen;
        CfgRate = cfgRate;
        Seed = seed;
        if (unconditionalText is not null)
        {
            var shape = unconditionalText.shape;
            if (shape.Length == 3 && shape[0] == 1) shape = shape[1..];
            if (shape.Length != 2)
                throw new UserError($"unconditional text embedding must be [L, D] or [1, L, D], got [{string.Join(", ", unconditionalText.shape)}]");
            using var scope = NewDisposeScope(); // frees the intermediate tensors of the conversion chain
            var t = unconditionalText.detach().to(ScalarType.Float32).cpu().contiguous();
            _uncond = t.data<float>().ToArray();
            (_uncondRows, _uncondDim) = (shape[0], shape[1]);
        }
    }

    public int TextLen { get; }
    public double CfgRate { get; }
    public long Seed { get; }
    public bool HasUnconditionalText => _uncond is not null;

    /// <summary>The uniform [0, 1) number that decides the CFG dropout of a sample.</summary>
    public static double DropoutDraw(long seed, long sampleIndex) => SplitMix64.Keyed(seed, sampleIndex).NextDouble();

    /// <summary>Whether the text of sample <paramref name="sampleIndex"/> is dropped.</summary>
    public bool IsDropped(long sampleIndex) => CfgRate > 0 && DropoutDraw(Seed, sampleIndex) < CfgRate;

    /// <summary>Collates rows (in batch order) with their global sample indices. Throws <see cref="UserError"/>
    /// naming the rows when their latent shapes or text widths differ.</summary>
    public unsafe RawBatch Collate(IReadOnlyList<VideoRow> rows, IReadOnlyList<long> sampleIndices)
    {
        int b = rows.Count;
        if (b == 0) throw new ArgumentException("a batch needs at least one row", nameof(rows));
        if (sampleIndices.Count != b) throw new ArgumentException("one sample index per row", nameof(sampleIndices));

        var latentShape = rows[0].Latent.Shape;
        long dim = rows[0].Text.Shape.Length == 2 ? rows[0].Text.Shape[1] : -1;
        for (int i = 0; i < b; i++)
        {
            var r = rows[i];
            if (r.Latent.Shape.Length != 4)
                throw new UserError($"{Name(r, i)}: vae_latent shape {TensorBytes.Format(r.Latent.Shape)} is not [C, T, H, W]");
            if (!r.Latent.Shape.AsSpan().SequenceEqual(latentShape))
                throw new UserError($"latent shapes differ within a batch: {Name(rows[0], 0)} has {TensorBytes.Format(latentShape)} " +
                                    $"but {Name(r, i)} has {TensorBytes.Format(r.Latent.Shape)}; rows batched together need the " +
                                    "same [C, T, H, W] (use batch size 1 or a dataset of one resolution and length)");
            if (r.Text.Shape.Length != 2)
                throw new UserError($"{Name(r, i)}: text_embedding shape {TensorBytes.Format(r.Text.Shape)} is not [L, D]");
            if (r.Text.Shape[1] != dim)
                throw new UserError($"text embedding widths differ within a batch: {Name(rows[0], 0)} has D={dim} " +
                                    $"but {Name(r, i)} has D={r.Text.Shape[1]}");
        }
        if (_uncond is not null && _uncondDim != dim)
            throw new UserError($"the unconditional text embedding has D={_uncondDim} but the data has D={dim}");

        long latentNumel = TensorBytes.ShapeProduct(latentShape);
        // The batch owns its tensors whichever thread builds it: keep them out of any dispose scope the calling
        // thread may have open (prefetching builds on another thread, where no scope applies anyway).
        var latent = empty([b, .. latentShape], ScalarType.Float32).DetachFromDisposeScope();
        var text = zeros([b, TextLen, dim], ScalarType.Float32).DetachFromDisposeScope();
        var mask = zeros([b, TextLen], ScalarType.Float32).DetachFromDisposeScope();
        var dropped = new bool[b];
        try
        {
            float* latentPtr = TensorMemory.FloatPointer(latent);
            float* textPtr = TensorMemory.FloatPointer(text);
            float* maskPtr = TensorMemory.FloatPointer(mask);
            long textNumel = TextLen * dim;

            // Rows decode straight into the batch tensors; big rows are decoded in parallel.
            void Fill(int i)
            {
                var r = rows[i];
                r.Latent.DecodeTo(new Span<float>(latentPtr + i * latentNumel, checked((int)latentNumel)));
                var textDst = new Span<float>(textPtr + i * textNumel, checked((int)textNumel));
                var maskDst = new Span<float>(maskPtr + (long)i * TextLen, TextLen);
                dropped[i] = IsDropped(sampleIndices[i]);
                if (!dropped[i])
                {
                    long l = Math.Min(r.Text.Shape[0], TextLen);
                    int bytes = checked((int)(l * dim * r.Text.DType.Size()));
                    TensorDTypes.Decode(r.Text.Bytes.Span[..bytes], r.Text.DType, textDst[..checked((int)(l * dim))]);
                    maskDst[..(int)l].Fill(1f);
                }
                else if (_uncond is not null)
                {
                    long l = Math.Min(_uncondRows, TextLen);
                    _uncond.AsSpan(0, checked((int)(l * dim))).CopyTo(textDst);
                    maskDst[..(int)l].Fill(1f);
                }
                else
                {
                    maskDst.Fill(1f); // zeros [text_len, D] with every position attended, like upstream
                }
            }

            long totalBytes = rows.Sum(r => (long)r.Latent.Bytes.Length + r.Text.Bytes.Length);
            if (b > 1 && totalBytes > (4L << 20)) Parallel.For(0, b, Fill);
            else for (int i = 0; i < b; i++) Fill(i);
        }
        catch
        {
            latent.Dispose();
            text.Dispose();
            mask.Dispose();
            throw;
        }

        var info = rows.Select(r => (IReadOnlyDictionary<string, object?>)r.ToInfo()).ToList();
        var captions = rows.Select(r => r.Caption).ToList();
        return new RawBatch(latent, Conditioning.FromText(text, mask), info, captions, sampleIndices.ToArray(), dropped);
    }

    private static string Name(VideoRow r, int i) => r.Source.Length > 0 ? r.Source : $"batch row {i} (id '{r.Id}')";
}

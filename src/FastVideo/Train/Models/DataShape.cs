using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Vae;

namespace FastVideo.Train.Models;

/// <summary>
/// The shape of one micro-batch as the transformers see it: <see cref="Batch"/> samples of latents
/// [<see cref="Channels"/>, <see cref="Frames"/>, <see cref="Height"/>, <see cref="Width"/>] (latent units), and
/// <see cref="TextTokens"/> text embeddings of width <see cref="TextDim"/> per sample (the loader pads to text_len).
/// <see cref="Source"/> says where it was read. For the dry-run plan.
/// </summary>
public sealed record DataShape(int Batch, long Channels, long Frames, long Height, long Width, long TextTokens, long TextDim, string Source)
{
    public long LatentValues => Batch * Channels * Frames * Height * Width;

    /// <summary>
    /// The shape a run trains on: the recipe's <c>training.data</c> num_latent_t / num_height / num_width when all
    /// three are set (heights and widths in pixels, divided by the VAE's spatial ratio), else the dataset's first row
    /// (its frames cut to num_latent_t when that is set, as the models do). Text: <c>pipeline.text_len</c> tokens, else
    /// the family's; their width from the first row when it is read, else <paramref name="textDim"/> (the transformer's). Null when neither the recipe nor a
    /// dataset gives the latent shape; then <paramref name="problem"/> says why (no data_path, or the dataset's error,
    /// e.g. a folder not filled yet: the dry run still plans the rest).
    /// </summary>
    public static DataShape? Resolve(RunConfig config, VaeConfig vae, int familyTextLen, long textDim, out string? problem)
    {
        problem = null;
        var d = config.Training.Data;
        long textTokens = config.Pipeline.TextLen ?? familyTextLen;
        if (d.NumLatentT > 0 && d.NumHeight > 0 && d.NumWidth > 0)
        {
            int s = Math.Max(1, vae.SpatialCompressionRatio);
            return new DataShape(d.TrainBatchSize, vae.LatentChannels, d.NumLatentT, d.NumHeight / s, d.NumWidth / s, textTokens, textDim,
                "training.data.num_latent_t, num_height, num_width");
        }
        VideoRow? first;
        try { first = FirstRow(d); }
        catch (UserError e)
        {
            problem = e.Message;
            return null;
        }
        if (first is null)
        {
            problem = "set training.data.num_latent_t, num_height and num_width, or a data_path";
            return null;
        }
        var l = first.Latent.Shape;
        if (l.Length != 4)
            throw new UserError($"{first.Source}: vae_latent has shape [{string.Join(", ", l)}], expected [C, T, H, W]");
        long frames = d.NumLatentT > 0 ? Math.Min(d.NumLatentT, l[1]) : l[1];
        return new DataShape(d.TrainBatchSize, l[0], frames, l[2], l[3], textTokens, first.Text.Shape[^1], $"the dataset's first row ({first.Source})");
    }

    /// <summary>The first row of the first data source (one row group is read), or null without a data_path.</summary>
    private static VideoRow? FirstRow(DataConfig d)
    {
        if (d.DataPath.Count == 0) return null;
        var file = ParquetVideoDataset.FindParquetFiles(d.DataPath[0].Path)[0];
        using var dataset = ParquetVideoDataset.Open(file);
        return dataset.ReadRow(0);
    }

    /// <summary>This shape with fewer frames or smaller frames (for the plan's advice).</summary>
    public DataShape Resized(long frames, long height, long width) => this with { Frames = frames, Height = height, Width = width };

    public override string ToString() =>
        $"batch {Batch} x latents [{Channels}, {Frames}, {Height}, {Width}], {TextTokens} text tokens of {TextDim}";
}

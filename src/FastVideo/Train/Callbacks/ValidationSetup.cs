using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Data.Validation;
using FastVideo.Models.Vae;
using FastVideo.Train.Models;
using FastVideo.Weights;
using static TorchSharp.torch;

namespace FastVideo.Train.Callbacks;

/// <summary>
/// What validation needs, resolved once at train start from the options, the recipe and the dataset's validation
/// support (<see cref="DatasetValidationProviders"/>): the prompts and their text embeddings (padded to text_len
/// exactly as the loader pads them), the optional negative text, the latent shape, the clip scorer and the GIF frame
/// rate. Tensors are CPU float32.
/// </summary>
internal sealed class ValidationSetup : IDisposable
{
    public required IReadOnlyList<string?> Prompts { get; init; }
    /// <summary>[P, text_len, D] and [P, text_len].</summary>
    public required Tensor TextEmbeds { get; init; }
    public required Tensor TextMask { get; init; }
    /// <summary>[1, text_len, D] and [1, text_len]: the data folder's empty-caption embedding, used for CFG when the
    /// model has no negative conditioning of its own; null when guidance is off or there is none.</summary>
    public Tensor? NegativeEmbeds { get; init; }
    public Tensor? NegativeMask { get; init; }
    /// <summary>[C, T, H, W] of one latent.</summary>
    public required long[] LatentShape { get; init; }
    /// <summary>The dataset's scorer for decoded clips (the synthetic dataset's evaluator); null for real data.</summary>
    public IClipScorer? Scorer { get; init; }
    public double Fps { get; init; } = 8;

    public int Count => Prompts.Count;

    public void Dispose()
    {
        TextEmbeds.Dispose();
        TextMask.Dispose();
        NegativeEmbeds?.Dispose();
        NegativeMask?.Dispose();
    }

    public static ValidationSetup Resolve(ValidationOptions o, string path, ModelBase model, RunConfig config)
    {
        var data = config.Training.Data;
        string? dataDir = data.DataPath.Count > 0 ? data.DataPath[0].Path : null;
        var support = dataDir is null ? null : DatasetValidationProviders.For(dataDir);

        // Prompts: explicit list, a dataset file, or the dataset's own (the synthetic dataset's classes).
        IReadOnlyList<string>? prompts = o.Prompts ?? (o.DatasetFile is { } df ? ReadDatasetFile(df, $"{path}.dataset_file") : null);
        if (prompts is null && o.PromptEmbedsFile is null) prompts = support?.Prompts;

        // Text: a precomputed embeddings file, or the dataset's prompt encoder.
        int textLen = config.Pipeline.TextLen ?? support?.TextLen ?? model.Context.Family.Defaults.TextLen;
        List<float[]> rows;
        List<long[]> shapes;
        IReadOnlyList<string?> names;
        if (o.PromptEmbedsFile is { } pef)
        {
            (rows, shapes) = ReadPromptEmbeds(pef, $"{path}.prompt_embeds_file");
            if (prompts is not null && prompts.Count != rows.Count)
                throw new UserError($"{path}.prompt_embeds_file: holds {rows.Count} prompt embeddings but {prompts.Count} prompts are given; they must match one to one");
            names = prompts?.Select(p => (string?)p).ToList() ?? Enumerable.Repeat<string?>(null, rows.Count).ToList();
        }
        else if (support?.Encoder is { } encoder && prompts is not null)
        {
            rows = [];
            shapes = [];
            foreach (var p in prompts)
            {
                using var e = encoder.Encode(p);
                using var cpu = e.to(ScalarType.Float32).cpu().contiguous();
                rows.Add(cpu.data<float>().ToArray());
                shapes.Add(cpu.shape);
            }
            names = prompts.Select(p => (string?)p).ToList();
        }
        else
        {
            throw new UserError($"{path}.prompt_embeds_file: needed to validate on {(dataDir is null ? "this run (training.data.data_path is not set)" : $"'{dataDir}'")}: " +
                "this dataset has no built-in prompt encoder (only the synthetic dataset has one); give a safetensors file with 'prompt_embeds' [N, L, D]");
        }
        if (rows.Count == 0) throw new UserError($"{path}: no validation prompts");

        int take = Math.Min(o.NumPrompts ?? int.MaxValue, rows.Count);
        rows = rows.Take(take).ToList();
        shapes = shapes.Take(take).ToList();
        names = names.Take(take).ToList();

        var latentShape = ResolveLatentShape(config, model.Vae, dataDir);
        // num_frames (pixel frames, as upstream) sets the sampled length: (n - 1) / temporal ratio + 1 latent frames.
        if (o.NumFrames is { } frames) latentShape[1] = (frames - 1) / model.Vae.TemporalCompressionRatio + 1;
        var collator = new BatchCollator(textLen);
        var (text, mask) = Collate(collator, rows, shapes);

        Tensor? negEmbeds = null, negMask = null;
        if (o.GuidanceScale != 1.0)
        {
            var negPath = ParquetVideoDataset.FindNegativePromptEmbeds(data.DataPath);
            if (negPath is not null)
            {
                var (e, m) = NegativePromptEmbeds.Load(negPath, "training.data.data_path");
                using (e) using (m)
                using (var row = e[0].contiguous())
                    (negEmbeds, negMask) = Collate(collator, [row.data<float>().ToArray()], [row.shape]);
            }
        }

        return new ValidationSetup
        {
            Prompts = names,
            TextEmbeds = text,
            TextMask = mask,
            NegativeEmbeds = negEmbeds,
            NegativeMask = negMask,
            LatentShape = latentShape,
            Scorer = names.All(n => n is not null) ? support?.Scorer : null,
            Fps = support?.Fps ?? 8,
        };
    }

    // Pads or cuts each [L, D] embedding to text_len with its mask, through the loader's own collator.
    private static (Tensor Text, Tensor Mask) Collate(BatchCollator collator, IReadOnlyList<float[]> rows, IReadOnlyList<long[]> shapes)
    {
        var videoRows = rows.Select((r, i) => new VideoRow
        {
            Latent = TensorBytes.FromFloats([0f], [1, 1, 1, 1]),
            Text = TensorBytes.FromFloats(r, shapes[i]),
        }).ToList();
        using var batch = collator.Collate(videoRows, Enumerable.Range(0, rows.Count).Select(i => (long)i).ToList());
        var text = batch.Conditioning[Conditioning.Text];
        return (text.Values.clone().DetachFromDisposeScope(), text.Mask!.clone().DetachFromDisposeScope());
    }

    /// <summary>[C, T, H, W]: from training.data (num_latent_t, num_height / ratio, num_width / ratio) when set and the
    /// VAE is known, else the first row of the dataset (cut to num_latent_t).</summary>
    private static long[] ResolveLatentShape(RunConfig config, VaeConfig vae, string? dataDir)
    {
        var d = config.Training.Data;
        if (d.NumLatentT > 0 && d.NumHeight > 0 && d.NumWidth > 0)
            return [vae.LatentChannels, d.NumLatentT, d.NumHeight / vae.SpatialCompressionRatio, d.NumWidth / vae.SpatialCompressionRatio];
        if (dataDir is null)
            throw new UserError("training.data.num_latent_t, num_height and num_width: needed for the validation latent shape " +
                                "(there is no training.data.data_path to take it from)");
        using var dataset = ParquetVideoDataset.Open(config.Training.Data.DataPath);
        var shape = (long[])dataset.ReadRow(0).Latent.Shape.Clone();
        if (shape.Length != 4) throw new UserError($"{dataDir}: the first row's vae_latent is [{string.Join(", ", shape)}], not [C, T, H, W]");
        if (d.NumLatentT > 0 && shape[1] > d.NumLatentT) shape[1] = d.NumLatentT;
        return shape;
    }

    /// <summary>Captions of a JSON file <c>{"data": [{"caption": "..."}, ...]}</c> (upstream's validation dataset format).</summary>
    public static IReadOnlyList<string> ReadDatasetFile(string file, string key)
    {
        if (!File.Exists(file)) throw new UserError($"{key}: '{file}' does not exist");
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(file)); }
        catch (JsonException e) { throw new UserError($"{key}: '{file}' is not valid JSON ({e.Message})"); }
        if (root?["data"] is not JsonArray items) throw new UserError($"{key}: '{file}' must be {{\"data\": [{{\"caption\": ...}}, ...]}}");
        var result = new List<string>();
        for (int i = 0; i < items.Count; i++)
        {
            var caption = items[i]?["caption"];
            if (caption is not JsonValue v || !v.TryGetValue<string>(out var s))
                throw new UserError($"{key}: '{file}': data[{i}] has no string 'caption'");
            result.Add(s);
        }
        if (result.Count == 0) throw new UserError($"{key}: '{file}' has no prompts");
        return result;
    }

    /// <summary>prompt_embeds [N, L, D] (or [L, D]) and optionally prompt_attention_mask [N, L] (valid rows first).</summary>
    private static (List<float[]> Rows, List<long[]> Shapes) ReadPromptEmbeds(string file, string key)
    {
        if (!File.Exists(file)) throw new UserError($"{key}: '{file}' does not exist");
        var t = SafeTensors.Load(file);
        try
        {
            if (!t.TryGetValue("prompt_embeds", out var e))
                throw new UserError($"{key}: '{file}' has no tensor 'prompt_embeds' [N, L, D] (found: {string.Join(", ", t.Keys)})");
            if (e.dim() == 2) e = e.unsqueeze(0);
            if (e.dim() != 3) throw new UserError($"{key}: prompt_embeds must be [N, L, D], got [{string.Join(", ", e.shape)}]");
            using var emb = e.to(ScalarType.Float32).cpu().contiguous();
            long n = emb.shape[0], l = emb.shape[1], dim = emb.shape[2];
            long[] valid = Enumerable.Repeat(l, (int)n).ToArray();
            if (t.TryGetValue("prompt_attention_mask", out var m))
            {
                if (m.numel() != n * l) throw new UserError($"{key}: prompt_attention_mask must be [N, L] = [{n}, {l}], got [{string.Join(", ", m.shape)}]");
                using var sums = m.reshape(n, l).to(ScalarType.Float32).sum(1).cpu();
                valid = sums.data<float>().Select(x => Math.Max(1L, (long)Math.Round(x))).ToArray();
            }
            var rows = new List<float[]>();
            var shapes = new List<long[]>();
            for (long i = 0; i < n; i++)
            {
                using var row = emb[i].narrow(0, 0, valid[i]).contiguous();
                rows.Add(row.data<float>().ToArray());
                shapes.Add([valid[i], dim]);
            }
            return (rows, shapes);
        }
        finally { foreach (var x in t.Values) x.Dispose(); }
    }
}

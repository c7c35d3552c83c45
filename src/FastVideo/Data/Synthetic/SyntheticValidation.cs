using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Data.Validation;
using static TorchSharp.torch;

namespace FastVideo.Data.Synthetic;

/// <summary>
/// The synthetic dataset's validation support, read from its classes.json: its class prompts, its word-vector text
/// encoder, the clip evaluator (colour, direction, one object, sharpness) and the dataset's text length and fps.
/// </summary>
public static class SyntheticValidation
{
    /// <summary>Null when <paramref name="dataDir"/> is not a synthetic dataset (no classes.json).</summary>
    public static DatasetValidation? For(string dataDir)
    {
        var path = Path.Combine(dataDir, SyntheticVideoDataset.ClassesFile);
        if (!File.Exists(path)) return null;
        JsonObject classes;
        try { classes = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new UserError($"{path}: expected a JSON object"); }
        catch (JsonException e) { throw new UserError($"{path}: not valid JSON ({e.Message})"); }
        var prompts = (classes["classes"] as JsonArray ?? [])
            .Select(c => (string?)c?["prompt"] ?? throw new UserError($"{path}: a class has no prompt"))
            .ToList();
        var enc = classes["text_encoder"] ?? throw new UserError($"{path}: no text_encoder entry");
        var encoder = new SyntheticTextEncoder((int)enc["embed_dim"]!, (long)enc["seed"]!);
        // Prompts are encoded in the dataset's own text layout (datasets written before layouts existed are wan's).
        var layout = SyntheticPalette.FromWord<SyntheticTextLayout>((string?)enc["layout"] ?? "wan")
            ?? throw new UserError($"{path}: text_encoder.layout '{enc["layout"]}' is not one of: wan, hunyuan");
        int pooledDim = (int?)enc["pooled_dim"] ?? 0;
        return new DatasetValidation(prompts, new Encoder(encoder, layout, pooledDim), new Scorer(ClipEvaluator.ForDataset(dataDir)),
            TextLen: enc["text_len"] is JsonNode tl ? (int)tl : null,
            Fps: (double?)classes["options"]?["fps"] ?? 8);
    }

    private sealed class Encoder(SyntheticTextEncoder encoder, SyntheticTextLayout layout, int pooledDim) : IPromptEncoder
    {
        public Tensor Encode(string prompt)
        {
            var (values, shape) = encoder.EncodeAs(prompt, layout, pooledDim);
            return tensor(values, shape);
        }
    }

    private sealed class Scorer(ClipEvaluator evaluator) : IClipScorer
    {
        public ClipVerdict Score(Tensor clip, string prompt)
        {
            var a = evaluator.Evaluate(clip, prompt);
            var measures = new Dictionary<string, double>
            {
                ["color_accuracy"] = a.ColorCorrect ? 1 : 0,
                ["direction_accuracy"] = a.DirectionCorrect ? 1 : 0,
                ["sharpness"] = a.Sharpness,
            };
            if (a.OneObject is bool one) measures["object_accuracy"] = one ? 1 : 0;
            var details = new JsonObject { ["color"] = a.Color, ["direction"] = a.Direction, ["one_object"] = a.OneObject, ["sharpness"] = a.Sharpness };
            return new ClipVerdict(a.Correct, measures, details);
        }
    }
}

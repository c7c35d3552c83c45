using System.Text.Json.Nodes;
using FastVideo.Weights;

namespace FastVideo.Train.Models;

/// <summary>
/// A Diffusers pipeline folder with a randomly initialised transformer of a family: <c>transformer/</c> (config.json
/// + weights drawn from a seed) and the pipeline files taken from a dataset or model folder (<c>vae/config.json</c>,
/// <c>negative_prompt_embeds.safetensors</c>, <c>model_index.json</c>). What the quickstart, the example recipes and
/// <c>fastvideo model random</c> start from.
/// </summary>
public static class RandomModelFolder
{
    /// <summary>Writes <paramref name="dir"/> (its transformer/ replaced) with <paramref name="family"/>'s transformer of
    /// <paramref name="config"/> (fields left out take the family's defaults) and <paramref name="pipelineFrom"/>'s files.</summary>
    public static void Write(ModelFamily family, JsonObject config, ulong seed, string dir, string pipelineFrom)
    {
        var write = family.WriteRandomTransformer
            ?? throw new UserError($"the '{family.Name}' family cannot write a random transformer");
        var transformer = Path.Combine(dir, "transformer");
        if (Directory.Exists(transformer)) Directory.Delete(transformer, true);
        write(config, seed, transformer);
        CopyPipelineFiles(pipelineFrom, dir);
    }

    /// <summary>
    /// The pipeline files beside a transformer folder: the VAE config, the negative (empty-caption) embedding when
    /// <paramref name="from"/> has one, and a model_index.json naming the transformer's and the VAE's classes as their
    /// config.json files do.
    /// </summary>
    public static void CopyPipelineFiles(string from, string to)
    {
        var vae = Path.Combine(from, "vae", "config.json");
        if (!File.Exists(vae)) throw new UserError($"{from}: no vae/config.json (expected a dataset folder from 'fastvideo dataset synth' or a model folder)");
        Directory.CreateDirectory(Path.Combine(to, "vae"));
        File.Copy(vae, Path.Combine(to, "vae", "config.json"), true);
        var negative = Path.Combine(from, NegativePromptEmbeds.FileName);
        if (File.Exists(negative)) File.Copy(negative, Path.Combine(to, NegativePromptEmbeds.FileName), true);
        string? ClassOf(string path) => (string?)JsonNode.Parse(File.ReadAllText(path))?["_class_name"];
        File.WriteAllText(Path.Combine(to, "model_index.json"), new JsonObject
        {
            ["transformer"] = new JsonArray("diffusers", ClassOf(Path.Combine(to, "transformer", "config.json"))),
            ["vae"] = new JsonArray("fastvideo", ClassOf(vae)),
        }.ToJsonString());
    }
}

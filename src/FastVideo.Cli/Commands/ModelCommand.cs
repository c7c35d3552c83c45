using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Train.Models;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo model random</c>: a model folder with a randomly initialised transformer, to train from scratch.</summary>
public static class ModelCommand
{
    internal static Command Create(ModelFamilyRegistry families)
    {
        var family = CliOptions.Text("--family", "FAMILY", "the model family (see 'fastvideo families')").AsRequired();
        family.CompletionSources.Add(_ => families.Families.Where(f => f.WriteRandomTransformer is not null).Select(f => f.Name));
        var config = CliOptions.Text("--config", "JSON", "the transformer's config.json fields: a JSON object or a file holding one (fields left out take the family's defaults, i.e. the full-size model)").AsRequired();
        var output = CliOptions.Text("--out", "DIR", "the model folder to write (its transformer/ is replaced)").AsRequired();
        var from = CliOptions.Text("--pipeline-from", "DIR", "where vae/config.json and negative_prompt_embeds.safetensors come from: a dataset folder from 'fastvideo dataset synth' or a model folder").AsRequired();
        var seed = CliOptions.Long("--seed", "seed of the random weights", "S").WithDefault(0);
        var random = new Command("random", "Write a model folder with a randomly initialised transformer of a family and the pipeline files of a dataset or model folder.")
        {
            family, config, output, from, seed,
        };
        random.SetAction(r => Random(families, r.GetRequiredValue(family), r.GetRequiredValue(config), r.GetRequiredValue(output),
            r.GetRequiredValue(from), r.GetValue(seed), r.InvocationConfiguration.Output));
        return new Command("model", "Make model folders.") { random };
    }

    public static int Random(ModelFamilyRegistry families, string family, string config, string outDir, string pipelineFrom, long seed, TextWriter stdout)
    {
        var f = families.Get(family);
        var text = File.Exists(config) ? File.ReadAllText(config) : config;
        JsonObject fields;
        try { fields = JsonNode.Parse(text) as JsonObject ?? throw new JsonException("not a JSON object"); }
        catch (JsonException e)
        {
            throw new UserError($"--config: {(File.Exists(config) ? $"'{config}' does not hold" : "expected")} a JSON object of config.json fields or a file holding one ({e.Message})");
        }
        RandomModelFolder.Write(f, fields, (ulong)seed, Path.GetFullPath(outDir), pipelineFrom);
        stdout.WriteLine($"wrote a random {family} model (seed {seed}) to {Path.GetFullPath(outDir)}");
        return 0;
    }
}

using System.CommandLine;
using System.Text.Json.Nodes;
using FastVideo.Models.Vae;
using FastVideo.Train.Models;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Cli.Commands;

/// <summary>
/// <c>fastvideo demo</c>: builds a small random Wan pipeline folder on the fly (no downloads) with prompt and
/// negative embeddings, then runs <c>fastvideo generate</c> on it with guidance. Shows the whole inference path.
/// </summary>
public static class DemoCommand
{
    internal static Command Create()
    {
        var output = CliOptions.Text("--out", "DIR", "where the model, the embeddings and the latents go").WithDefault(Path.Combine("runs", "demo"));
        var steps = CliOptions.Int("--steps", "Euler steps").WithDefault(8);
        var guidance = CliOptions.Double("--guidance-scale", "classifier-free guidance scale", "G").WithDefault(5.0);
        var command = new Command("demo", "Build a tiny random Wan model and sample from it with guidance (no downloads): the whole inference path in seconds.")
        {
            output, steps, guidance,
        };
        command.SetAction(r => Run(r.GetRequiredValue(output), r.GetValue(steps), r.GetValue(guidance), r.InvocationConfiguration.Output, r.InvocationConfiguration.Error));
        return command;
    }

    public static int Run(string outDir, int steps, double guidanceScale, TextWriter stdout, TextWriter stderr)
    {
        outDir = Path.GetFullPath(outDir);
        var modelDir = Path.Combine(outDir, "model");
        const string family = "wan";
        const int textDim = 64, layers = 4, heads = 4, headDim = 32;
        var config = new JsonObject
        {
            ["num_attention_heads"] = heads, ["attention_head_dim"] = headDim, ["in_channels"] = 16, ["out_channels"] = 16,
            ["text_dim"] = textDim, ["ffn_dim"] = 512, ["num_layers"] = layers,
        };
        var write = ModelFamilyRegistry.Default.Get(family).WriteRandomTransformer!;
        write(config, 0, Path.Combine(modelDir, "transformer"));
        // The Wan 2.1 VAE's config: latent channels and the normalisation constants the plugin reads.
        var vae = VaeConfig.WanDefault;
        Directory.CreateDirectory(Path.Combine(modelDir, "vae"));
        File.WriteAllText(Path.Combine(modelDir, "model_index.json"), new JsonObject
        {
            ["transformer"] = new JsonArray("diffusers", (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(modelDir, "transformer", "config.json")))?["_class_name"]),
            ["vae"] = new JsonArray("diffusers", "AutoencoderKLWan"),
        }.ToJsonString());
        File.WriteAllText(Path.Combine(modelDir, "vae", "config.json"), new JsonObject
        {
            ["_class_name"] = "AutoencoderKLWan",
            ["z_dim"] = vae.LatentChannels,
            ["latents_mean"] = new JsonArray(vae.LatentsMean!.Select(v => (JsonNode)v).ToArray()),
            ["latents_std"] = new JsonArray(vae.LatentsStd!.Select(v => (JsonNode)v).ToArray()),
        }.ToJsonString());
        using (var gen = new Generator(1, torch.device("cpu")))
        {
            SafeTensors.Save(Path.Combine(modelDir, "negative_prompt_embeds.safetensors"),
                [new("negative_prompt_embeds", randn([1, 8, textDim], generator: gen))]);
            SafeTensors.Save(Path.Combine(outDir, "prompt_embeds.safetensors"),
                [new("prompt_embeds", randn([2, 12, textDim], generator: gen))]);
        }
        stdout.WriteLine($"demo: random {family} model ({layers} layers, D={heads * headDim}) written to {modelDir}");
        return GenerateCommand.Run(new GenerateOptions
        {
            Model = modelDir, PromptEmbeds = Path.Combine(outDir, "prompt_embeds.safetensors"),
            Seed = 0, NumFrames = 9, Height = 64, Width = 64,
            Steps = steps, GuidanceScale = guidanceScale, FlowShift = 3.0,
            OutputLatents = Path.Combine(outDir, "latents.safetensors"),
        }, stdout, stderr);
    }
}

using System.CommandLine;
using System.Text.Json.Nodes;
using FastVideo.Models.Dits;
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
        var config = new WanTransformerConfig
        {
            NumAttentionHeads = 4, AttentionHeadDim = 32, InChannels = 16, OutChannels = 16,
            TextDim = 64, FfnDim = 512, NumLayers = 4,
        };
        using (var model = WanTransformer3DModel.CreateRandom(config, 0)) model.SavePretrained(Path.Combine(modelDir, "transformer"));
        Directory.CreateDirectory(Path.Combine(modelDir, "vae"));
        File.WriteAllText(Path.Combine(modelDir, "model_index.json"), new JsonObject
        {
            ["_class_name"] = "WanPipeline",
            ["transformer"] = new JsonArray("diffusers", "WanTransformer3DModel"),
            ["vae"] = new JsonArray("diffusers", "AutoencoderKLWan"),
        }.ToJsonString());
        File.WriteAllText(Path.Combine(modelDir, "vae", "config.json"), new JsonObject
        {
            ["_class_name"] = "AutoencoderKLWan",
            ["z_dim"] = 16,
        }.ToJsonString());
        using (var gen = new Generator(1, torch.device("cpu")))
        {
            SafeTensors.Save(Path.Combine(modelDir, "negative_prompt_embeds.safetensors"),
                [new("negative_prompt_embeds", randn([1, 8, config.TextDim], generator: gen))]);
            SafeTensors.Save(Path.Combine(outDir, "prompt_embeds.safetensors"),
                [new("prompt_embeds", randn([2, 12, config.TextDim], generator: gen))]);
        }
        stdout.WriteLine($"demo: random Wan model ({config.NumLayers} layers, D={config.InnerDim}) written to {modelDir}");
        return GenerateCommand.Run(new GenerateOptions
        {
            Model = modelDir, PromptEmbeds = Path.Combine(outDir, "prompt_embeds.safetensors"),
            Seed = 0, NumFrames = 9, Height = 64, Width = 64,
            Steps = steps, GuidanceScale = guidanceScale, FlowShift = 3.0,
            OutputLatents = Path.Combine(outDir, "latents.safetensors"),
        }, stdout, stderr);
    }
}

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
    public const string Usage = "usage: fastvideo demo [--out DIR] [--steps N] [--guidance-scale G]";

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var a = CliArgs.Parse(args, Usage, ["out", "steps", "guidance-scale"]);
        var outDir = Path.GetFullPath(a.Get("out") ?? Path.Combine("runs", "demo"));
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
        return GenerateCommand.Run([
            "--model", modelDir, "--prompt-embeds", Path.Combine(outDir, "prompt_embeds.safetensors"),
            "--seed", "0", "--num-frames", "9", "--height", "64", "--width", "64",
            "--steps", a.Get("steps") ?? "8", "--guidance-scale", a.Get("guidance-scale") ?? "5.0", "--flow-shift", "3.0",
            "--output-latents", Path.Combine(outDir, "latents.safetensors"),
        ], stdout, stderr);
    }
}

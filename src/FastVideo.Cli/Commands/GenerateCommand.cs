using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Sampling;
using FastVideo.Train.Models;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo generate</c>: flow-matching Euler sampling with CFG from precomputed text embeddings.</summary>
public static class GenerateCommand
{
    public const string Usage = """
        usage: fastvideo generate --model DIR --prompt-embeds FILE [--negative-prompt-embeds FILE]
                                  [--latents FILE | --seed N --num-frames F --height H --width W]
                                  --steps N --guidance-scale G --flow-shift S --output-latents FILE
                                  [--device cpu] [--dtype fp32|bf16|fp16] [--family wan]
          --model             a Diffusers pipeline folder, a transformer folder, or a model id in the local HF cache
          --family            the model family that loads it (see `fastvideo families`; default wan)
          --prompt-embeds     safetensors with prompt_embeds [B,L,D] (prompt_attention_mask [B,L] optional, unused by Wan)
          --negative-prompt-embeds  safetensors with negative_prompt_embeds [1 or B,L,D] (padded or cut to the prompts' L); default: the model
                              folder's negative_prompt_embeds.safetensors when guidance != 1
          --latents           safetensors with latents [B,C,T,H,W]: the initial noise
          --seed/--num-frames/--height/--width  draw the initial noise instead (pixel sizes; latent size from the VAE ratios)
          --output-latents    where to write the result (safetensors, key latents [B,C,T,H,W])
        """;

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var a = CliArgs.Parse(args, Usage,
            ["model", "prompt-embeds", "negative-prompt-embeds", "latents", "seed", "num-frames", "height", "width",
             "steps", "guidance-scale", "flow-shift", "output-latents", "device", "dtype", "family"]);
        if (a.Positionals.Count > 0) throw new UserError($"unexpected argument '{a.Positionals[0]}'\n{Usage}");
        var modelPath = a.Require("model", Usage);
        var output = a.Require("output-latents", Usage);
        int steps = a.Int("steps", Usage);
        if (steps < 1) throw new UserError("--steps must be >= 1");
        double guidance = a.Double("guidance-scale", Usage);
        double shift = a.Double("flow-shift", Usage);
        if (!(shift > 0)) throw new UserError("--flow-shift must be > 0");
        var deviceName = a.Get("device") ?? "cpu";
        var precision = a.Get("dtype") ?? "fp32";
        Precision.Parse(precision, "--dtype");
        var family = a.Get("family") ?? "wan";

        using var scope = NewDisposeScope();
        // The model plugin of the family, as a frozen role: the same forward, negative prompt and sampler as training.
        using var model = ModelFamilyRegistry.Default.CreateForInference(new InferenceModel(family, modelPath, deviceName, precision,
            FlowShift: shift, NegativePromptEmbeds: a.Get("negative-prompt-embeds")));
        var config = model.TransformerConfig;
        int channels = model.Vae.LatentChannels;

        var promptPath = a.Require("prompt-embeds", Usage);
        var prompt = ReadTensor(promptPath, "prompt_embeds", 3);
        if (config["text_dim"] is JsonValue td && prompt.shape[2] != (int)td)
            throw new UserError($"{promptPath}: prompt_embeds has width {prompt.shape[2]}, the model's text_dim is {(int)td}");
        long b = prompt.shape[0];

        Tensor latents;   // [B,C,T,H,W]
        if (a.Has("latents"))
        {
            if (a.Has("seed") || a.Has("num-frames") || a.Has("height") || a.Has("width"))
                throw new UserError("give either --latents or --seed/--num-frames/--height/--width, not both");
            latents = ReadTensor(a.Get("latents")!, "latents", 5);
            if (latents.shape[0] != b || latents.shape[1] != channels)
                throw new UserError($"{a.Get("latents")}: latents must be [{b},{channels},T,H,W] (batch of the prompts, the VAE's latent channels), got [{string.Join(",", latents.shape)}]");
        }
        else
        {
            var vae = model.Vae;
            int frames = a.Int("num-frames", Usage), height = a.Int("height", Usage), width = a.Int("width", Usage);
            ulong seed = (ulong)a.Int("seed", Usage);
            if (frames < 1 || (frames - 1) % vae.TemporalCompressionRatio != 0)
                throw new UserError($"--num-frames must be 1 + a multiple of {vae.TemporalCompressionRatio} (e.g. 81), got {frames}");
            int s = vae.SpatialCompressionRatio, patch = SpatialPatch(config), p = patch * s;
            if (height % p != 0 || width % p != 0)
                throw new UserError($"--height and --width must be multiples of {p} (VAE ratio {s} x patch {patch}), got {height}x{width}");
            using var gen = new Generator(seed, torch.device("cpu"));
            latents = randn([b, channels, (frames - 1) / vae.TemporalCompressionRatio + 1, height / s, width / s], generator: gen);
        }

        using var batch = model.PrepareInference(Conditioning.FromText(prompt, ones(b, prompt.shape[1])), latents.shape[1..]);
        if (guidance != 1.0 && batch.Unconditional is null)
            throw new UserError($"--guidance-scale {guidance} needs --negative-prompt-embeds (no {NegativePromptEmbeds.FileName} in the model folder)");

        stderr.WriteLine($"generate: {steps} steps, guidance {guidance}, shift {shift}, latents [{string.Join(",", latents.shape)}], {deviceName} {precision}");
        Tensor result;
        using (no_grad())
        {
            var x = latents.to(model.Device).permute(0, 2, 1, 3, 4);   // BCTHW -> BTCHW
            result = ModelSampling.Euler(model, batch, x, new SamplingOptions(steps, guidance, shift),
                progress: (i, n, t, sec) => stderr.WriteLine($"  step {i}/{n}  t={t:F1}  {sec:F2}s"));
            result = result.permute(0, 2, 1, 3, 4).contiguous();      // BTCHW -> BCTHW
        }
        SafeTensors.Save(output, [new("latents", result.cpu())]);
        stdout.WriteLine($"wrote {output} latents [{string.Join(",", result.shape)}]");
        return 0;
    }

    /// <summary>The transformer's spatial patch from its config.json (<c>patch_size</c> [t, h, w] or an int); 1 if absent.</summary>
    private static int SpatialPatch(JsonObject config) => config["patch_size"] switch
    {
        JsonArray p when p.Count == 3 => (int)p[1]!,
        JsonValue v when v.TryGetValue<int>(out var i) => i,
        _ => 1,
    };

    internal static Tensor ReadTensor(string path, string key, int dims)
    {
        if (!File.Exists(path)) throw new UserError($"{path}: file not found (expected safetensors with '{key}')");
        var all = SafeTensors.Load(path);
        if (!all.TryGetValue(key, out var t))
            throw new UserError($"{path}: no tensor named '{key}' (found: {string.Join(", ", all.Keys)})");
        foreach (var (k, v) in all) if (k != key) v.Dispose();
        if (t.dim() != dims) throw new UserError($"{path}: '{key}' must have {dims} dimensions, got [{string.Join(",", t.shape)}]");
        return t.to_type(ScalarType.Float32);
    }
}

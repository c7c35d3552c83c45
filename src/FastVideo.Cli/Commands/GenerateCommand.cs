using FastVideo.Models.Dits;
using FastVideo.Models.Vae;
using FastVideo.Sampling;
using FastVideo.Train.Models.Wan;
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
                                  [--device cpu] [--dtype fp32|bf16|fp16]
          --model             a Diffusers pipeline folder, a transformer folder, or a model id in the local HF cache
          --prompt-embeds     safetensors with prompt_embeds [B,L,D] (prompt_attention_mask [B,L] optional, unused by Wan)
          --negative-prompt-embeds  safetensors with negative_prompt_embeds [B or 1,L,D]; default: the model
                              folder's negative_prompt_embeds.safetensors when guidance != 1
          --latents           safetensors with latents [B,C,T,H,W]: the initial noise
          --seed/--num-frames/--height/--width  draw the initial noise instead (pixel sizes; latent size from the VAE ratios)
          --output-latents    where to write the result (safetensors, key latents [B,C,T,H,W])
        """;

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var a = CliArgs.Parse(args, Usage,
            ["model", "prompt-embeds", "negative-prompt-embeds", "latents", "seed", "num-frames", "height", "width",
             "steps", "guidance-scale", "flow-shift", "output-latents", "device", "dtype"]);
        if (a.Positionals.Count > 0) throw new UserError($"unexpected argument '{a.Positionals[0]}'\n{Usage}");
        var modelPath = a.Require("model", Usage);
        var output = a.Require("output-latents", Usage);
        int steps = a.Int("steps", Usage);
        if (steps < 1) throw new UserError("--steps must be >= 1");
        double guidance = a.Double("guidance-scale", Usage);
        double shift = a.Double("flow-shift", Usage);
        if (!(shift > 0)) throw new UserError("--flow-shift must be > 0");
        var device = torch.device(a.Get("device") ?? "cpu");
        var dtype = WanModel.ParsePrecision(a.Get("dtype") ?? "fp32");

        using var scope = NewDisposeScope();
        var folder = DiffusersModelFolder.Resolve(modelPath);
        var transformer = WanTransformer3DModel.FromPretrained(modelPath, dtype, device);
        var cfg = transformer.Config;

        var prompt = ReadTensor(a.Require("prompt-embeds", Usage), "prompt_embeds", 3).to(device);
        if (prompt.shape[2] != cfg.TextDim)
            throw new UserError($"{a.Get("prompt-embeds")}: prompt_embeds has width {prompt.shape[2]}, the model's text_dim is {cfg.TextDim}");
        long b = prompt.shape[0];

        Tensor latents;
        if (a.Has("latents"))
        {
            if (a.Has("seed") || a.Has("num-frames") || a.Has("height") || a.Has("width"))
                throw new UserError("give either --latents or --seed/--num-frames/--height/--width, not both");
            latents = ReadTensor(a.Get("latents")!, "latents", 5).to(device);
            if (latents.shape[0] != b || latents.shape[1] != cfg.InChannels)
                throw new UserError($"{a.Get("latents")}: latents must be [{b},{cfg.InChannels},T,H,W] (batch of the prompts, model in_channels), got [{string.Join(",", latents.shape)}]");
        }
        else
        {
            var vae = VaeConfig.FromModelFolder(folder, VaeConfig.WanDefault);
            int frames = a.Int("num-frames", Usage), height = a.Int("height", Usage), width = a.Int("width", Usage);
            ulong seed = (ulong)a.Int("seed", Usage);
            if (frames < 1 || (frames - 1) % vae.TemporalCompressionRatio != 0)
                throw new UserError($"--num-frames must be 1 + a multiple of {vae.TemporalCompressionRatio} (e.g. 81), got {frames}");
            int s = vae.SpatialCompressionRatio, p = cfg.PatchSize[1] * s;
            if (height % p != 0 || width % p != 0)
                throw new UserError($"--height and --width must be multiples of {p} (VAE ratio {s} x patch {cfg.PatchSize[1]}), got {height}x{width}");
            using var gen = new Generator(seed, torch.device("cpu"));
            latents = randn([b, cfg.InChannels, (frames - 1) / vae.TemporalCompressionRatio + 1, height / s, width / s], generator: gen).to(device);
        }

        Tensor? negative = null;
        if (guidance != 1.0)
        {
            var negPath = a.Get("negative-prompt-embeds") ?? folder.FindFile(NegativePromptEmbeds.FileName)
                ?? throw new UserError($"--guidance-scale {guidance} needs --negative-prompt-embeds (no {NegativePromptEmbeds.FileName} in the model folder)");
            var (negEmbeds, negMask) = NegativePromptEmbeds.Load(negPath, a.Has("negative-prompt-embeds") ? "--negative-prompt-embeds" : "--model");
            negMask.Dispose();
            negative = negEmbeds.to(device);
            if (negative.shape[0] == 1 && b > 1) negative = negative.expand(b, -1, -1);
            if (negative.shape[0] != b || negative.shape[2] != cfg.TextDim)
                throw new UserError($"{negPath}: negative_prompt_embeds must be [1 or {b},L,{cfg.TextDim}], got [{string.Join(",", negative.shape)}]");
        }

        stderr.WriteLine($"generate: {steps} steps, guidance {guidance}, shift {shift}, latents [{string.Join(",", latents.shape)}], {device.type} {dtype}");
        Tensor result;
        using (no_grad())
        {
            result = FlowMatchSampler.Sample(
                (x, t, text) => transformer.Forward(x, t, text),
                latents, prompt, negative, new SamplingOptions(steps, guidance, shift),
                (i, n, t, sec) => stderr.WriteLine($"  step {i}/{n}  t={t:F1}  {sec:F2}s"));
        }
        SafeTensors.Save(output, [new("latents", result.cpu())]);
        stdout.WriteLine($"wrote {output} latents [{string.Join(",", result.shape)}]");
        transformer.Dispose();
        return 0;
    }

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

using System.CommandLine;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Sampling;
using FastVideo.Train.Models;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Cli.Commands;

/// <summary>What <c>fastvideo generate</c> samples: the model, the text embeddings, the initial noise and the sampler.</summary>
public sealed record GenerateOptions
{
    /// <summary>A Diffusers pipeline folder, a transformer folder, or a model id in the local HF cache.</summary>
    public required string Model { get; init; }
    public required string PromptEmbeds { get; init; }
    /// <summary>Default: the model folder's negative_prompt_embeds.safetensors when guidance is not 1.</summary>
    public string? NegativePromptEmbeds { get; init; }
    /// <summary>The initial noise; without it, <see cref="Seed"/>, <see cref="NumFrames"/>, <see cref="Height"/> and <see cref="Width"/> draw it.</summary>
    public string? Latents { get; init; }
    public int? Seed { get; init; }
    public int? NumFrames { get; init; }
    public int? Height { get; init; }
    public int? Width { get; init; }
    public required int Steps { get; init; }
    public required double GuidanceScale { get; init; }
    public required double FlowShift { get; init; }
    public required string OutputLatents { get; init; }
    public string Device { get; init; } = "cpu";
    public string Dtype { get; init; } = "fp32";
    /// <summary>The dtype the transformer computes in: auto (bf16 where the device computes it natively), fp32, bf16, fp16.</summary>
    public string ComputeDtype { get; init; } = "auto";
    /// <summary>The model family that loads <see cref="Model"/> (see <c>fastvideo families</c>).</summary>
    public string Family { get; init; } = "wan";
    /// <summary>A Diffusers LoRA file for the transformer (<c>pytorch_lora_weights.safetensors</c>, or its folder) applied as Diffusers does.</summary>
    public string? Lora { get; init; }
}

/// <summary><c>fastvideo generate</c>: flow-matching Euler sampling with CFG from precomputed text embeddings.</summary>
public static class GenerateCommand
{
    internal static Command Create()
    {
        var model = CliOptions.Text("--model", "DIR", "a Diffusers pipeline folder, a transformer folder, or a model id in the local HF cache").AsRequired();
        var prompt = CliOptions.Text("--prompt-embeds", "FILE", "safetensors with prompt_embeds [B,L,D] (prompt_attention_mask [B,L] optional, unused by Wan)").AsRequired();
        var negative = CliOptions.Text("--negative-prompt-embeds", "FILE",
            "safetensors with negative_prompt_embeds [1 or B,L,D] (padded or cut to the prompts' L); default: the model folder's negative_prompt_embeds.safetensors when guidance != 1");
        var latents = CliOptions.Text("--latents", "FILE", "safetensors with latents [B,C,T,H,W]: the initial noise (instead of --seed/--num-frames/--height/--width)");
        var seed = CliOptions.OptionalInt("--seed", "draw the initial noise with this seed (with --num-frames, --height, --width)");
        var frames = CliOptions.OptionalInt("--num-frames", "frames of the drawn noise, in pixels' time (1 + a multiple of the VAE's temporal ratio, e.g. 81)", "F");
        var height = CliOptions.OptionalInt("--height", "height of the drawn noise in pixels (latent size from the VAE ratio)", "H");
        var width = CliOptions.OptionalInt("--width", "width of the drawn noise in pixels (latent size from the VAE ratio)", "W");
        var steps = CliOptions.Int("--steps", "Euler steps (at least 1)").AsRequired();
        var guidance = CliOptions.Double("--guidance-scale", "classifier-free guidance scale (1 = no guidance)", "G").AsRequired();
        var shift = CliOptions.Double("--flow-shift", "the scheduler's flow shift (> 0)", "S").AsRequired();
        var output = CliOptions.Text("--output-latents", "FILE", "where to write the result (safetensors, key latents [B,C,T,H,W])").AsRequired();
        var device = CliOptions.Text("--device", "DEVICE", "the torch device").WithDefault("cpu");
        var dtype = CliOptions.OneOf("--dtype", "the transformer's precision", [.. Precision.Names]).WithDefault("fp32");
        var computeDtype = CliOptions.OneOf("--compute-dtype", "the dtype the transformer computes in (auto: bf16 where the device computes it natively)",
            ["auto", .. Precision.Names]).WithDefault("auto");
        var family = CliOptions.Text("--family", "FAMILY", "the model family that loads it (see 'fastvideo families')").WithDefault("wan");
        family.CompletionSources.Add(_ => ModelFamilyRegistry.Default.Families.Select(f => f.Name));
        var lora = CliOptions.Text("--lora", "FILE", "a Diffusers LoRA for the transformer (pytorch_lora_weights.safetensors or its folder, e.g. from 'fastvideo export --lora-format adapter'), applied as load_lora_weights does");

        var command = new Command("generate", "Sample latents from precomputed text embeddings (Euler flow matching, classifier-free guidance).")
        {
            model, prompt, negative, latents, seed, frames, height, width, steps, guidance, shift, output, device, dtype, computeDtype, family, lora,
        };
        command.SetAction(r => Run(new GenerateOptions
        {
            Model = r.GetRequiredValue(model), PromptEmbeds = r.GetRequiredValue(prompt), NegativePromptEmbeds = r.GetValue(negative),
            Latents = r.GetValue(latents), Seed = r.GetValue(seed), NumFrames = r.GetValue(frames), Height = r.GetValue(height), Width = r.GetValue(width),
            Steps = r.GetValue(steps), GuidanceScale = r.GetValue(guidance), FlowShift = r.GetValue(shift),
            OutputLatents = r.GetRequiredValue(output), Device = r.GetRequiredValue(device), Dtype = r.GetRequiredValue(dtype),
            ComputeDtype = r.GetRequiredValue(computeDtype), Family = r.GetRequiredValue(family), Lora = r.GetValue(lora),
        }, r.InvocationConfiguration.Output, r.InvocationConfiguration.Error));
        return command;
    }

    /// <summary>Samples and writes <see cref="GenerateOptions.OutputLatents"/>; bad options and files are <see cref="UserError"/>s.</summary>
    public static int Run(GenerateOptions o, TextWriter stdout, TextWriter stderr)
    {
        var modelPath = o.Model;
        var output = o.OutputLatents;
        int steps = o.Steps;
        if (steps < 1) throw new UserError("--steps must be >= 1");
        double guidance = o.GuidanceScale;
        double shift = o.FlowShift;
        if (!(shift > 0)) throw new UserError("--flow-shift must be > 0");
        var deviceName = o.Device;
        var precision = o.Dtype;
        Precision.Parse(precision, "--dtype");
        var family = o.Family;

        using var scope = NewDisposeScope();
        // The model plugin of the family, as a frozen role: the same forward, negative prompt and sampler as training.
        using var model = ModelFamilyRegistry.Default.CreateForInference(new InferenceModel(family, modelPath, deviceName, precision,
            FlowShift: shift, NegativePromptEmbeds: o.NegativePromptEmbeds, ComputePrecision: o.ComputeDtype));
        var config = model.TransformerConfig;
        int channels = model.Vae.LatentChannels;
        if (o.Lora is { } loraPath)
        {
            var file = Directory.Exists(loraPath) ? Path.Combine(loraPath, FastVideo.Models.Layers.LoraAdapters.DiffusersFileName) : loraPath;
            var layers = FastVideo.Models.Layers.LoraAdapters.LoadDiffusers(model.Transformer, file);
            stderr.WriteLine($"generate: LoRA {file} on {layers.Count} layers");
        }

        var promptPath = o.PromptEmbeds;
        var prompt = ReadTensor(promptPath, "prompt_embeds", 3);
        if (config["text_dim"] is JsonValue td && prompt.shape[2] != (int)td)
            throw new UserError($"{promptPath}: prompt_embeds has width {prompt.shape[2]}, the model's text_dim is {(int)td}");
        long b = prompt.shape[0];

        Tensor latents;   // [B,C,T,H,W]
        if (o.Latents is { } latentsPath)
        {
            if (o.Seed is not null || o.NumFrames is not null || o.Height is not null || o.Width is not null)
                throw new UserError("give either --latents or --seed/--num-frames/--height/--width, not both");
            latents = ReadTensor(latentsPath, "latents", 5);
            if (latents.shape[0] != b || latents.shape[1] != channels)
                throw new UserError($"{latentsPath}: latents must be [{b},{channels},T,H,W] (batch of the prompts, the VAE's latent channels), got [{string.Join(",", latents.shape)}]");
        }
        else
        {
            var vae = model.Vae;
            int frames = NoiseOption(o.NumFrames, "--num-frames"), height = NoiseOption(o.Height, "--height"), width = NoiseOption(o.Width, "--width");
            ulong seed = (ulong)NoiseOption(o.Seed, "--seed");
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

        stderr.WriteLine($"generate: {steps} steps, guidance {guidance}, shift {shift}, latents [{string.Join(",", latents.shape)}], {deviceName}, weights {precision}, computing in {Precision.Name(model.ComputeDtype)}");
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

    private static int NoiseOption(int? value, string name) =>
        value ?? throw new UserError($"generate: missing {name} (give --latents FILE, or --seed, --num-frames, --height and --width to draw the noise)");

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

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
    /// <summary>Seeds the drawn noise (and, with <see cref="Causal"/>, the re-noising draws; with --latents those alone, default 0).</summary>
    public int? Seed { get; init; }
    public int? NumFrames { get; init; }
    public int? Height { get; init; }
    public int? Width { get; init; }
    /// <summary>Euler steps (without <see cref="Causal"/>, required).</summary>
    public int? Steps { get; init; }
    public required double GuidanceScale { get; init; }
    public required double FlowShift { get; init; }
    public required string OutputLatents { get; init; }
    public string Device { get; init; } = "cpu";
    public string Dtype { get; init; } = "fp32";
    /// <summary>The dtype the transformer computes in: auto (bf16 where the device computes it natively), fp32, bf16, fp16.</summary>
    public string ComputeDtype { get; init; } = "auto";
    /// <summary>The model family that loads <see cref="Model"/> (see <c>fastvideo families</c>); null = the folder's
    /// (its transformer class), with <see cref="Causal"/> the family that streams it.</summary>
    public string? Family { get; init; }
    /// <summary>A Diffusers LoRA file for the transformer (<c>pytorch_lora_weights.safetensors</c>, or its folder) applied as Diffusers does.</summary>
    public string? Lora { get; init; }
    /// <summary>The guidance scale given to a guidance-distilled transformer (HunyuanVideo), × 1000; null = the family's (6.0).</summary>
    public double? EmbeddedGuidanceScale { get; init; }

    /// <summary>Streaming generation with a causal model: block by block with the few-step schedule <see cref="DenoisingSteps"/>.</summary>
    public bool Causal { get; init; }
    /// <summary>Latent frames per block (null: the model's num_frames_per_block).</summary>
    public int? FramesPerBlock { get; init; }
    /// <summary>The few-step schedule of every block, e.g. 1000, 750, 500, 250 (with <see cref="Causal"/>, required).</summary>
    public IReadOnlyList<double>? DenoisingSteps { get; init; }
    /// <summary>Recompute attention over all earlier frames instead of reading the KV cache (same draws, same result).</summary>
    public bool NoKvCache { get; init; }
    /// <summary>Frames a block sees (-1 = all earlier ones; null: the model's).</summary>
    public int? LocalAttnSize { get; init; }
    /// <summary>First frames every block keeps seeing (null: the model's).</summary>
    public int? SinkSize { get; init; }
    /// <summary>Rows the text is zero-padded to before the causal text embedder (null: the family's, 512 for Wan).</summary>
    public int? TextLen { get; init; }
    /// <summary>A folder that gets each finished block's latents as soon as it exists (block_NNNN.safetensors).</summary>
    public string? BlocksOut { get; init; }
}

/// <summary><c>fastvideo generate</c>: flow-matching Euler sampling with CFG from precomputed text embeddings, or
/// streaming generation block by block with a causal model (<c>--causal</c>).</summary>
public static class GenerateCommand
{
    internal static Command Create()
    {
        var model = CliOptions.Text("--model", "DIR", "a Diffusers pipeline folder, a transformer folder, or a model id in the local HF cache").AsRequired();
        var prompt = CliOptions.Text("--prompt-embeds", "FILE", "safetensors with prompt_embeds [B,L,D], prompt_attention_mask [B,L] (optional: all ones; " +
            "Wan ignores it) and, for HunyuanVideo, pooled_prompt_embeds [B,P]").AsRequired();
        var negative = CliOptions.Text("--negative-prompt-embeds", "FILE",
            "safetensors with negative_prompt_embeds [1 or B,L,D] (padded or cut to the prompts' L), negative_prompt_attention_mask and, for HunyuanVideo, " +
            "negative_pooled_prompt_embeds [1 or B,P]; default: the model folder's negative_prompt_embeds.safetensors when guidance > 1");
        var latents = CliOptions.Text("--latents", "FILE", "safetensors with latents [B,C,T,H,W]: the initial noise (instead of --seed/--num-frames/--height/--width)");
        var seed = CliOptions.OptionalInt("--seed", "draw the initial noise with this seed (with --num-frames, --height, --width); with --causal it also seeds the re-noising draws (with --latents those alone; default 0)");
        var frames = CliOptions.OptionalInt("--num-frames", "frames of the drawn noise, in pixels' time (1 + a multiple of the VAE's temporal ratio, e.g. 81)", "F");
        var height = CliOptions.OptionalInt("--height", "height of the drawn noise in pixels (latent size from the VAE ratio)", "H");
        var width = CliOptions.OptionalInt("--width", "width of the drawn noise in pixels (latent size from the VAE ratio)", "W");
        var steps = CliOptions.OptionalInt("--steps", "Euler steps (at least 1; required without --causal)");
        var guidance = CliOptions.Double("--guidance-scale", "classifier-free guidance scale (1 = no guidance; > 1 needs negative embeddings)", "G").AsRequired();
        var embeddedGuidance = CliOptions.OptionalDouble("--embedded-guidance-scale",
            "guidance scale given to a guidance-distilled transformer (HunyuanVideo), x 1000 (default 6.0, Diffusers' pipeline default)", "G");
        var shift = CliOptions.Double("--flow-shift", "the scheduler's flow shift (> 0)", "S").AsRequired();
        var output = CliOptions.Text("--output-latents", "FILE", "where to write the result (safetensors, key latents [B,C,T,H,W])").AsRequired();
        var device = CliOptions.Text("--device", "DEVICE", "the torch device").WithDefault("cpu");
        var dtype = CliOptions.OneOf("--dtype", "the transformer's precision", [.. Precision.Names]).WithDefault("fp32");
        var computeDtype = CliOptions.OneOf("--compute-dtype", "the dtype the transformer computes in (auto: bf16 where the device computes it natively)",
            ["auto", .. Precision.Names]).WithDefault("auto");
        var family = CliOptions.Text("--family", "FAMILY", "the model family that loads it (see 'fastvideo families'); default: the folder's transformer class " +
            "(CausalWanTransformer3DModel: wan_causal, else wan), with --causal the family that streams it (wan_causal)");
        family.CompletionSources.Add(_ => ModelFamilyRegistry.Default.Families.Select(f => f.Name));
        var lora = CliOptions.Text("--lora", "FILE", "a Diffusers LoRA for the transformer (pytorch_lora_weights.safetensors or its folder, e.g. from 'fastvideo export --lora-format adapter'), applied as load_lora_weights does");
        var causal = CliOptions.Flag("--causal", "stream the clip block by block with a causal model (KV cache; each block denoised with --denoising-steps, then kept as clean context)");
        var framesPerBlock = CliOptions.OptionalInt("--frames-per-block", "with --causal: latent frames per block, 1..3 (default: the model's num_frames_per_block, else 3)", "K");
        var denoisingSteps = CliOptions.Text("--denoising-steps", "T0,T1,...", "with --causal (required): each block's few-step schedule, descending in (0, 1000], e.g. 1000,750,500,250");
        var noKvCache = CliOptions.Flag("--no-kv-cache", "with --causal: recompute attention over all earlier frames instead of reading the KV cache (same draws, same result; for checking and benchmarking)");
        var localAttn = CliOptions.OptionalInt("--local-attn-size", "with --causal: frames a block sees, its own and the sinks included; -1 = every earlier frame (default: the model's, else -1)");
        var sink = CliOptions.OptionalInt("--sink-size", "with --causal: first frames every block keeps seeing; needs --local-attn-size (default: the model's, else 0)");
        var textLen = CliOptions.OptionalInt("--text-len", "with --causal: rows the text is zero-padded to before the text embedder, as in training (pipeline.text_len; default: the family's, 512 for Wan)", "L");
        var blocksOut = CliOptions.Text("--blocks-out", "DIR", "with --causal: write each finished block's latents to DIR/block_NNNN.safetensors as soon as it exists");

        var command = new Command("generate", "Sample latents from precomputed text embeddings (Euler flow matching with classifier-free guidance; --causal: streaming, block by block).")
        {
            model, prompt, negative, latents, seed, frames, height, width, steps, guidance, embeddedGuidance, shift, output, device, dtype, computeDtype, family, lora,
            causal, framesPerBlock, denoisingSteps, noKvCache, localAttn, sink, textLen, blocksOut,
        };
        command.SetAction(r => Run(new GenerateOptions
        {
            Model = r.GetRequiredValue(model), PromptEmbeds = r.GetRequiredValue(prompt), NegativePromptEmbeds = r.GetValue(negative),
            Latents = r.GetValue(latents), Seed = r.GetValue(seed), NumFrames = r.GetValue(frames), Height = r.GetValue(height), Width = r.GetValue(width),
            Steps = r.GetValue(steps), GuidanceScale = r.GetValue(guidance), FlowShift = r.GetValue(shift),
            OutputLatents = r.GetRequiredValue(output), Device = r.GetRequiredValue(device), Dtype = r.GetRequiredValue(dtype),
            ComputeDtype = r.GetRequiredValue(computeDtype), Family = r.GetValue(family), Lora = r.GetValue(lora), EmbeddedGuidanceScale = r.GetValue(embeddedGuidance),
            Causal = r.GetValue(causal), FramesPerBlock = r.GetValue(framesPerBlock),
            DenoisingSteps = r.GetValue(denoisingSteps) is { } list ? ParseTimesteps(list) : null, NoKvCache = r.GetValue(noKvCache),
            LocalAttnSize = r.GetValue(localAttn), SinkSize = r.GetValue(sink), TextLen = r.GetValue(textLen), BlocksOut = r.GetValue(blocksOut),
        }, r.InvocationConfiguration.Output, r.InvocationConfiguration.Error));
        return command;
    }

    /// <summary>"1000,750,500,250" as numbers; a bad item is a <see cref="UserError"/> naming it.</summary>
    internal static IReadOnlyList<double> ParseTimesteps(string text) => text.Split(',').Select((item, i) =>
        double.TryParse(item.Trim(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new UserError($"--denoising-steps[{i}]: '{item}' is not a number (expected e.g. 1000,750,500,250)")).ToArray();

    /// <summary>Samples and writes <see cref="GenerateOptions.OutputLatents"/>; bad options and files are <see cref="UserError"/>s.</summary>
    public static int Run(GenerateOptions o, TextWriter stdout, TextWriter stderr)
    {
        var output = o.OutputLatents;
        CheckSamplerOptions(o);
        double guidance = o.GuidanceScale;
        double shift = o.FlowShift;
        if (!(shift > 0)) throw new UserError("--flow-shift must be > 0");
        var deviceName = o.Device;
        var precision = o.Dtype;
        Precision.Parse(precision, "--dtype");
        if (guidance < 1) throw new UserError($"--guidance-scale must be >= 1 (1 = no guidance; Diffusers' pipelines apply CFG only above 1), got {guidance}");
        var family = ResolveFamily(o, stderr);
        var pipeline = o.Causal ? CausalPipeline(o) : null;
        var familyInfo = ModelFamilyRegistry.Default.Get(family);
        var roleOptions = new Dictionary<string, object?>();
        if (o.EmbeddedGuidanceScale is { } embedded)
        {
            if (!OptionListing.Describe(familyInfo.RoleConfigType).Any(x => x.Key == "embedded_guidance_scale"))
                throw new UserError($"--embedded-guidance-scale: the {family} family's transformer takes no embedded guidance (HunyuanVideo's guidance-distilled one does)");
            roleOptions["embedded_guidance_scale"] = embedded;
        }

        using var scope = NewDisposeScope();
        // The model plugin of the family, as a frozen role: the same forward, negative prompt and sampler as training.
        using var model = ModelFamilyRegistry.Default.CreateForInference(new InferenceModel(family, o.Model, deviceName, precision,
            FlowShift: shift, NegativePromptEmbeds: o.NegativePromptEmbeds, ComputePrecision: o.ComputeDtype, Pipeline: pipeline, RoleOptions: roleOptions));
        if (o.Causal && model is not ICausalModel)
            throw new UserError($"--causal: the {family} family has no streaming (causal) forward; use --family wan_causal (or leave --family out)");
        var config = model.TransformerConfig;
        int channels = model.Vae.LatentChannels;
        if (o.Lora is { } loraPath)
        {
            var file = Directory.Exists(loraPath) ? Path.Combine(loraPath, FastVideo.Models.Layers.LoraAdapters.DiffusersFileName) : loraPath;
            var layers = FastVideo.Models.Layers.LoraAdapters.LoadDiffusers(model.Transformer, file);
            stderr.WriteLine($"generate: LoRA {file} on {layers.Count} layers");
        }

        var promptPath = o.PromptEmbeds;
        using var conditioning = ReadPromptFile(promptPath, familyInfo, config);
        var prompt = conditioning[Conditioning.Text].Values;
        if (o.Causal && pipeline!.TextLen is { } textLen && prompt.shape[1] > textLen)
            throw new UserError($"{promptPath}: prompt_embeds has {prompt.shape[1]} tokens, more than --text-len {textLen}");
        long b = prompt.shape[0];

        Tensor latents;   // [B,C,T,H,W]
        Generator generator;
        if (o.Latents is { } latentsPath)
        {
            if ((!o.Causal && o.Seed is not null) || o.NumFrames is not null || o.Height is not null || o.Width is not null)
                throw new UserError(o.Causal
                    ? "give either --latents or --num-frames/--height/--width, not both (with --latents, --seed seeds only the re-noising draws)"
                    : "give either --latents or --seed/--num-frames/--height/--width, not both");
            latents = ReadTensor(latentsPath, "latents", 5);
            if (latents.shape[0] != b || latents.shape[1] != channels)
                throw new UserError($"{latentsPath}: latents must be [{b},{channels},T,H,W] (batch of the prompts, the VAE's latent channels), got [{string.Join(",", latents.shape)}]");
            generator = new Generator((ulong)(o.Seed ?? 0), torch.device("cpu"));
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
            // Streaming draws its re-noising from the same generator, after the initial noise.
            generator = new Generator(seed, torch.device("cpu"));
            latents = randn([b, channels, (frames - 1) / vae.TemporalCompressionRatio + 1, height / s, width / s], generator: generator);
        }

        using var gen = generator;
        using var batch = model.PrepareInference(conditioning, latents.shape[1..]);
        if (guidance != 1.0 && batch.Unconditional is null)
            throw new UserError($"--guidance-scale {guidance} needs --negative-prompt-embeds (no {NegativePromptEmbeds.FileName} in the model folder)");

        Tensor result;
        using (no_grad())
        {
            var x = latents.to(model.Device).permute(0, 2, 1, 3, 4);   // BCTHW -> BTCHW
            if (o.Causal)
            {
                result = Stream(model, batch, x, o, gen, stderr);
            }
            else
            {
                stderr.WriteLine($"generate: {o.Steps} steps, guidance {guidance}, shift {shift}, latents [{string.Join(",", latents.shape)}], {deviceName}, weights {precision}, computing in {Precision.Name(model.ComputeDtype)}");
                result = ModelSampling.Euler(model, batch, x, new SamplingOptions(o.Steps!.Value, guidance, shift),
                    progress: (i, n, t, sec) => stderr.WriteLine($"  step {i}/{n}  t={t:F1}  {sec:F2}s"));
            }
            result = result.permute(0, 2, 1, 3, 4).contiguous();      // BTCHW -> BCTHW
        }
        SafeTensors.Save(output, [new("latents", result.cpu())]);
        stdout.WriteLine($"wrote {output} latents [{string.Join(",", result.shape)}]");
        return 0;
    }

    /// <summary>
    /// Streaming generation (<see cref="StreamingSampling"/>): one line per finished block with its speed, its latents
    /// written to --blocks-out at once; returns the clip [B,T,C,H,W].
    /// </summary>
    private static Tensor Stream(ModelBase model, TrainingBatch batch, Tensor noise, GenerateOptions o, Generator generator, TextWriter stderr)
    {
        var causal = (ICausalModel)model;
        var blocksOut = o.BlocksOut;
        if (blocksOut is not null)
        {
            if (File.Exists(blocksOut)) throw new UserError($"--blocks-out {blocksOut}: a file is in the way (expected a folder)");
            if (Directory.Exists(blocksOut) && Directory.EnumerateFiles(blocksOut, "block_*.safetensors").Any())
                throw new UserError($"--blocks-out {blocksOut} already holds block files of an earlier run; give a new or empty folder");
            Directory.CreateDirectory(blocksOut);
        }
        int k = causal.NumFramesPerBlock;   // --frames-per-block, else the model's
        long frames = noise.shape[1];
        var blocks = StreamingSampling.Blocks(frames, k);
        var steps = o.DenoisingSteps!;
        stderr.WriteLine($"generate --causal: {frames} latent frames in {blocks.Count} blocks of {k}, steps [{string.Join(", ", steps)}], guidance {o.GuidanceScale}, " +
                         $"shift {o.FlowShift}, latents [{string.Join(",", noise.permute(0, 2, 1, 3, 4).shape)}], " +
                         $"{(o.NoKvCache ? "no KV cache (recomputing all earlier frames)" : "KV cache")}, {o.Device}, weights {o.Dtype}, computing in {Precision.Name(model.ComputeDtype)}");
        int temporal = model.Vae.TemporalCompressionRatio;
        using var stream = new CausalStream(model, batch, new CausalStreamOptions { GuidanceScale = o.GuidanceScale, UseKvCache = !o.NoKvCache });
        var total = System.Diagnostics.Stopwatch.StartNew();
        var clip = StreamingSampling.Generate(stream, noise, new StreamingSchedule(steps) { Blocks = blocks }, FewStepSampler.StandardNoise(generator),
            (block, x0, seconds) =>
            {
                if (blocksOut is not null)
                {
                    var path = Path.Combine(blocksOut, $"block_{block.Index:D4}.safetensors");
                    SafeTensors.Save(path, [new("latents", x0.permute(0, 2, 1, 3, 4).contiguous().cpu())],   // BTCHW -> BCTHW
                        new Dictionary<string, string> { ["start_frame"] = $"{block.Start}", ["num_frames"] = $"{block.Frames}" });
                }
                string cache = o.NoKvCache ? "" : $"  cache {stream.CacheFrames} frames/layer";
                stderr.WriteLine($"  block {block.Index + 1}/{blocks.Count}  frames {block.Start}-{block.Start + block.Frames - 1}  {seconds:F2}s  " +
                                 $"{block.Frames / seconds:F1} latent frames/s{cache}");
            });
        double sec = total.Elapsed.TotalSeconds;
        long videoFrames = 1 + (frames - 1) * temporal;
        stderr.WriteLine($"  {frames} latent frames ({videoFrames} video frames) in {sec:F2}s: {frames / sec:F1} latent frames/s, {videoFrames / sec:F1} video frames/s");
        return clip;
    }

    /// <summary>Euler takes --steps; streaming takes --denoising-steps and the causal options, which need --causal.</summary>
    private static void CheckSamplerOptions(GenerateOptions o)
    {
        if (!o.Causal)
        {
            foreach (var (given, name) in new[] { (o.FramesPerBlock is not null, "--frames-per-block"), (o.DenoisingSteps is not null, "--denoising-steps"),
                         (o.NoKvCache, "--no-kv-cache"), (o.LocalAttnSize is not null, "--local-attn-size"), (o.SinkSize is not null, "--sink-size"),
                         (o.TextLen is not null, "--text-len"), (o.BlocksOut is not null, "--blocks-out") })
                if (given) throw new UserError($"{name} is an option of streaming generation: add --causal");
            if (o.Steps is null) throw new UserError("generate: missing --steps (Euler steps; or --causal with --denoising-steps)");
            if (o.Steps < 1) throw new UserError("--steps must be >= 1");
            return;
        }
        if (o.Steps is not null) throw new UserError("--causal denoises each block with --denoising-steps (e.g. 1000,750,500,250), not --steps");
        var list = o.DenoisingSteps ?? throw new UserError("--causal needs --denoising-steps (each block's few-step schedule, e.g. 1000,750,500,250)");
        FewStepSampler.Validate(list, what: "--denoising-steps");
        if (o.TextLen is < 1) throw new UserError($"--text-len must be >= 1, got {o.TextLen}");
    }

    /// <summary>
    /// --family, else the family of the folder's transformer class (wan when the folder names none we know); with
    /// --causal, that family's streaming family, saying so when it is not the folder's own.
    /// </summary>
    private static string ResolveFamily(GenerateOptions o, TextWriter stderr)
    {
        if (o.Family is { } explicitFamily) return explicitFamily;
        var registry = ModelFamilyRegistry.Default;
        var className = DiffusersModelFolder.Resolve(o.Model).ReadConfig()["_class_name"] is JsonValue v && v.TryGetValue<string>(out var c) ? c : null;
        var folderFamily = registry.ForTransformerClass(className) ?? registry.Get("wan");
        if (!o.Causal) return folderFamily.Name;
        var streaming = folderFamily.StreamingFamily
            ?? throw new UserError($"--causal: the {folderFamily.Name} family ({o.Model}) has no streaming variant; give --family with a causal family");
        if (streaming != folderFamily.Name)
            stderr.WriteLine($"generate: {o.Model} holds a {className ?? folderFamily.Name + " transformer"}, trained with {folderFamily.Name}'s attention; " +
                             $"--causal runs the same weights with {streaming}'s block-causal attention (expect worse frames than from a model trained causally)");
        return streaming;
    }

    /// <summary>The causal settings and text length given on the command line, checked together under their option names.</summary>
    private static PipelineConfig CausalPipeline(GenerateOptions o)
    {
        var given = new DitConfigOverrides { NumFramesPerBlock = o.FramesPerBlock, LocalAttnSize = o.LocalAttnSize, SinkSize = o.SinkSize };
        var names = new Dictionary<string, string>
        {
            ["num_frames_per_block"] = "--frames-per-block", ["local_attn_size"] = "--local-attn-size", ["sink_size"] = "--sink-size",
        };
        if (given.Check().FirstOrDefault() is { } p) throw new UserError($"{names[p.Key]}: {p.Detail}");
        return new PipelineConfig { TextLen = o.TextLen, DitConfig = given };
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

    /// <summary>
    /// The prompt file as the family's conditioning channels: <c>prompt_embeds</c> [B,L,D] with
    /// <c>prompt_attention_mask</c> [B,L] (all ones when absent) as the text channel and, for a family that reads a pooled
    /// vector, <c>pooled_prompt_embeds</c> [B,P] (Diffusers' pipeline arguments).
    /// </summary>
    private static Conditioning ReadPromptFile(string path, ModelFamily family, JsonObject config)
    {
        if (!File.Exists(path)) throw new UserError($"{path}: file not found (expected safetensors with 'prompt_embeds')");
        var all = SafeTensors.Load(path);
        try
        {
            Tensor Get(string key, int dims, bool required)
            {
                if (!all.TryGetValue(key, out var t))
                    return required ? throw new UserError($"{path}: no tensor named '{key}' (found: {string.Join(", ", all.Keys)})") : null!;
                if (t.dim() != dims) throw new UserError($"{path}: '{key}' must have {dims} dimensions, got [{string.Join(",", t.shape)}]");
                return t.to_type(ScalarType.Float32).alias();   // its own handle: the file's tensors are freed below
            }
            var embeds = Get("prompt_embeds", 3, true);
            long b = embeds.shape[0], l = embeds.shape[1];
            var width = config["text_dim"] ?? config["text_embed_dim"];
            if (width is JsonValue w && embeds.shape[2] != (int)w)
                throw new UserError($"{path}: prompt_embeds has width {embeds.shape[2]}, the model's text width is {(int)w}");
            var mask = Get("prompt_attention_mask", 2, false);
            if (mask is not null && (mask.shape[0] != b || mask.shape[1] != l))
                throw new UserError($"{path}: prompt_attention_mask is [{string.Join(",", mask.shape)}]; expected [{b},{l}] to match prompt_embeds");
            var channels = new List<KeyValuePair<string, ConditioningChannel>>
            {
                new(Conditioning.Text, new ConditioningChannel(embeds.DetachFromDisposeScope(), (mask ?? ones(b, l)).DetachFromDisposeScope())),
            };
            if (family.Conditioning.Contains(Conditioning.PooledText))
            {
                var pooled = all.ContainsKey("pooled_prompt_embeds") ? Get("pooled_prompt_embeds", 2, true)
                    : throw new UserError($"{path}: no tensor named 'pooled_prompt_embeds' [B,P]: the {family.Name} transformer also reads a pooled text vector " +
                                          $"(found: {string.Join(", ", all.Keys)})");
                if (pooled.shape[0] != b) throw new UserError($"{path}: pooled_prompt_embeds has {pooled.shape[0]} rows, prompt_embeds {b}");
                channels.Add(new(Conditioning.PooledText, new ConditioningChannel(pooled.DetachFromDisposeScope())));
            }
            return new Conditioning(channels);
        }
        finally { foreach (var t in all.Values) t.Dispose(); }
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

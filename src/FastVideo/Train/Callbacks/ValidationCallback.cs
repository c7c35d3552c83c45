using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Data.Validation;
using FastVideo.Sampling;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Callbacks;

/// <summary>The options of the <c>validation</c> callback.</summary>
public sealed record ValidationOptions : ICheckedOptions, IFastVideoDifferences
{
    /// <summary>Euler step counts sampled when neither sampling_steps nor sampling_timesteps is given.</summary>
    public static IReadOnlyList<int> DefaultSamplingSteps { get; } = [40];

    [Description("validate every N steps (and at the start of a fresh run); 0 = never")]
    public int EverySteps { get; init; } = 100;

    [Description("also validate at step 0 of a fresh run")]
    public bool RunAtStart { get; init; } = true;

    [Description("FastVideo's validation pipeline class; it picks nothing here (sampling_timesteps chooses few-step over Euler) and is checked against the pipelines of the implemented families; null = none")]
    public string? PipelineTarget { get; init; }

    [SingleStringAsList]
    [Description("the prompts (a string is one prompt); null = dataset_file, or the synthetic dataset's classes")]
    public IReadOnlyList<string>? Prompts { get; init; }

    [Description("a JSON file {\"data\": [{\"caption\": ...}, ...]} with the prompts (upstream's validation dataset format)")]
    public string? DatasetFile { get; init; }

    [Description("a safetensors file with prompt_embeds [N, L, D] (and optionally prompt_attention_mask [N, L]); needed unless the data is the synthetic dataset")]
    public string? PromptEmbedsFile { get; init; }

    [Description("sample only the first N prompts; null = all")]
    public int? NumPrompts { get; init; }

    [CommaSeparated]
    [Description("distinct sampling seeds; null = [training.data.seed]")]
    public IReadOnlyList<int>? Seeds { get; init; }

    [CommaSeparated]
    [Description("Euler step counts to sample with, each >= 1 and distinct; null = [40]")]
    public IReadOnlyList<int>? SamplingSteps { get; init; }

    [CommaSeparated]
    [Description("few-step (DMD) sampling at these timesteps, descending in (0, 1000], instead of Euler")]
    public IReadOnlyList<int>? SamplingTimesteps { get; init; }

    [Description("pixel frames of the sampled videos, (n - 1) / the VAE's temporal ratio + 1 latent frames; null = training.data's latent frames")]
    public int? NumFrames { get; init; }

    [Description("classifier-free guidance scale (>= 0; 1 = no unconditional pass)")]
    public double GuidanceScale { get; init; } = 1.0;

    [Description("the sampler's flow shift (> 0); null = the role's scheduler shift")]
    public double? FlowShift { get; init; }

    [Description("sample with the ema callback's weights once it has started (student only)")]
    public bool UseEma { get; init; } = true;

    [Description("where step_<n>/ folders go; null = <checkpoint.output_dir>/validation")]
    public string? OutputDir { get; init; }

    [SingleStringAsList]
    [Description("the roles that are sampled (a string is one role); EMA weights apply to the student only")]
    public IReadOnlyList<string> Roles { get; init; } = DefaultRoles;

    private static readonly IReadOnlyList<string> DefaultRoles = ["student"];

    public IEnumerable<OptionProblem> Check()
    {
        if (EverySteps < 0) yield return new("every_steps", $"must be >= 0 (0 = never), got {EverySteps}");
        if (Prompts is not null && DatasetFile is not null) yield return new("prompts", "give either prompts or dataset_file, not both");
        if (Prompts is { Count: 0 }) yield return new("prompts", "the list is empty");
        if (NumPrompts is < 1) yield return new("num_prompts", $"must be >= 1, got {NumPrompts}");
        if (Seeds is { Count: 0 }) yield return new("seeds", "the list is empty");
        if (Seeds?.Distinct().Count() < Seeds?.Count) yield return new("seeds", $"seeds must be distinct, got [{string.Join(", ", Seeds!)}]");
        // FastVideo's few-step recipes give both, the count in sampling_steps: that one is accepted.
        if (SamplingSteps is not null && SamplingTimesteps is not null && !(SamplingSteps.Count == 1 && SamplingSteps[0] == SamplingTimesteps.Count))
            yield return new("sampling_timesteps", "give either sampling_steps (Euler) or sampling_timesteps (few-step), not both " +
                                                   $"(sampling_steps may repeat the count of sampling_timesteps: [{SamplingTimesteps.Count}])");
        if (NumFrames is < 1) yield return new("num_frames", $"must be >= 1, got {NumFrames}");
        if (PipelineTarget is { } pipeline && !FastVideoPipelines.ContainsKey(pipeline))
            yield return new("pipeline_target", $"'{pipeline}' is not a validation pipeline of an implemented family " +
                                                $"(known: {string.Join(", ", FastVideoPipelines.Keys)})");
        if (PipelineTarget is { } p && FastVideoPipelines.GetValueOrDefault(p) is { FewStep: true } && SamplingTimesteps is null)
            yield return new("sampling_timesteps", $"'{p}' samples few-step: give its timesteps, e.g. [1000, 750, 500, 250]");
        if (SamplingSteps is { Count: 0 }) yield return new("sampling_steps", "the list is empty");
        for (int i = 0; i < (SamplingSteps?.Count ?? 0); i++)
            if (SamplingSteps![i] < 1) yield return new($"sampling_steps[{i}]", $"must be >= 1, got {SamplingSteps[i]}");
        if (SamplingSteps?.Distinct().Count() < SamplingSteps?.Count)
            yield return new("sampling_steps", $"step counts must be distinct, got [{string.Join(", ", SamplingSteps!)}]");
        if (SamplingTimesteps is not null && TimestepsProblem(SamplingTimesteps) is { } problem) yield return problem;
        if (!double.IsFinite(GuidanceScale) || GuidanceScale < 0) yield return new("guidance_scale", $"must be a number >= 0, got {GuidanceScale}");
        if (FlowShift is { } fs && !(fs > 0)) yield return new("flow_shift", $"must be > 0, got {fs}");
        if (Roles.Count == 0 || Roles.Any(string.IsNullOrEmpty)) yield return new("roles", "must name at least one role");
        if (Roles.Distinct().Count() < Roles.Count) yield return new("roles", $"roles must be distinct, got [{string.Join(", ", Roles)}]");
    }

    /// <summary>
    /// FastVideo's validation pipelines of the families implemented here: whether they sample few-step (DMD) and how
    /// their sampler differs from the one validation runs here (Euler, or the few-step sampler at sampling_timesteps,
    /// over the whole clip at once).
    /// </summary>
    public static IReadOnlyDictionary<string, (bool FewStep, string? Differs)> FastVideoPipelines { get; } =
        new Dictionary<string, (bool, string?)>(StringComparer.Ordinal)
        {
            ["fastvideo.pipelines.basic.wan.wan_pipeline.WanPipeline"] =
                (false, "FastVideo's WanPipeline samples with the UniPC multistep scheduler; validation here samples with Euler flow matching"),
            ["fastvideo.pipelines.basic.wan.wan_dmd_pipeline.WanDMDPipeline"] = (true, null),
            ["fastvideo.pipelines.basic.wan.wan_causal_pipeline.WanCausalPipeline"] =
                (false, "FastVideo's WanCausalPipeline denoises block by block through the KV cache; validation here denoises the whole clip with the block-causal forward (Euler)"),
            ["fastvideo.pipelines.basic.wan.wan_causal_dmd_pipeline.WanCausalDMDPipeline"] =
                (true, "FastVideo's WanCausalDMDPipeline denoises block by block through the KV cache; validation here runs the few-step sampler over the whole clip with the block-causal forward"),
            ["fastvideo.pipelines.basic.hunyuan.hunyuan_pipeline.HunyuanVideoPipeline"] = (false, null),
            ["fastvideo.pipelines.basic.turbodiffusion.turbodiffusion_pipeline.TurboDiffusionPipeline"] =
                (false, "FastVideo's TurboDiffusionPipeline samples with its rCM sampler and SLA attention; validation here samples with Euler flow matching and exact attention"),
        };

    public IEnumerable<OptionProblem> DifferencesFromFastVideo()
    {
        if (PipelineTarget is { } p && FastVideoPipelines.GetValueOrDefault(p).Differs is { } differs)
            yield return new("pipeline_target", differs);
    }

    private static OptionProblem? TimestepsProblem(IReadOnlyList<int> timesteps) =>
        FewStepSampler.Problem(timesteps.Select(t => (double)t).ToList()) is { } p ? new("sampling_timesteps" + p.Index, p.Detail) : null;
}

/// <summary>
/// Samples fixed prompts with fixed seeds every <c>every_steps</c> steps (and at the start of a fresh run) with each
/// of <c>roles</c>, and writes latents, decoded clips as GIFs (when the role's model can decode its latents) and,
/// when the dataset offers a clip scorer (the synthetic one does), the scorer's verdicts (spec 7.4, with the port's
/// outputs). Sampling is Euler flow matching at each of <c>sampling_steps</c>, or the few-step DMD sampler at
/// <c>sampling_timesteps</c>, through the one sampling core. It knows no dataset: prompts, their encoder and the
/// scorer come from <see cref="DatasetValidationProviders"/> (or from the options).
/// <para>Determinism: every (seed, step count) re-seeds a CPU generator with the seed, so the same weights give the
/// same samples at every validation, and validation keeps no RNG state (nothing to checkpoint). It never draws from
/// the method's generator or the global RNG, so training is the same with or without it.</para>
/// <para>Logging: the trainer hands the step's log to the validation hook; the scorer's run averages go into it as
/// <c>val/&lt;measure&gt;_&lt;n&gt;steps</c> (<c>val/&lt;role&gt;/...</c> for roles other than the student). The
/// start-of-run validation has no step log: its metrics are only in <c>step_0/metrics.json</c>. The GIFs go into the
/// log too, as images for trackers that show them (TensorBoard plays them), tagged by their file name.</para>
/// </summary>
public sealed class ValidationCallback : TrainCallback
{
    private TrainingMethod? _method;
    private readonly List<(string Role, ModelBase Model)> _models = new();
    private ValidationSetup? _setup;
    private bool _sawFirstValidationHook;
    private readonly HashSet<string> _saidNoGifs = new(StringComparer.Ordinal);

    public ValidationCallback(ValidationOptions options) => Options = options;

    public ValidationOptions Options { get; }
    /// <summary><c>callbacks.&lt;name&gt;</c>, for error messages.</summary>
    public string OptionPath => $"callbacks.{(Name.Length > 0 ? Name : "validation")}";
    public int EverySteps => Options.EverySteps;
    /// <summary>Null = [training.data.seed].</summary>
    public IReadOnlyList<int>? Seeds => Options.Seeds;
    public IReadOnlyList<int> SamplingSteps => Options.SamplingSteps ?? ValidationOptions.DefaultSamplingSteps;
    /// <summary>Non-null = few-step sampling at these timesteps instead of Euler.</summary>
    public IReadOnlyList<int>? SamplingTimesteps => Options.SamplingTimesteps;

    /// <summary>The EMA whose weights validation samples the student with (<c>use_ema</c>); linked by <see cref="Link"/>.</summary>
    public EmaCallback? Ema { get; set; }

    /// <summary>Where messages go (once per role and run: e.g. "no GIFs without a VAE decoder"); Console.Out by default.</summary>
    public TextWriter Log { get; set; } = Console.Out;

    /// <summary>Every validation this run has done, in order (one result per role and validation).</summary>
    public List<ValidationResult> Results { get; } = new();

    /// <summary>Points validation callbacks at the recipe's EMA callback, if any (called when callbacks are built).</summary>
    public static void Link(IReadOnlyList<TrainCallback> callbacks)
    {
        var ema = callbacks.OfType<EmaCallback>().FirstOrDefault();
        foreach (var v in callbacks.OfType<ValidationCallback>()) v.Ema ??= ema;
    }

    public override void OnTrainStart(TrainingMethod method, int iteration)
    {
        _method = method;
        _sawFirstValidationHook = false;
        _models.Clear();
        if (EverySteps == 0) return;
        foreach (var role in Options.Roles)
            _models.Add((role, method.Roles.TryGetValue(role, out var m) ? m
                : throw new UserError($"{OptionPath}.roles: no role '{role}' (roles: {string.Join(", ", method.Roles.Keys)})")));
        _setup?.Dispose();
        // Prompts, text and latent shape are shared by the roles (they share a latent space).
        _setup = ValidationSetup.Resolve(Options, OptionPath, _models[0].Model, method.Config);
    }

    public override void OnValidationBegin(TrainingMethod method, int iteration, StepLog? log = null)
    {
        if (EverySteps == 0) return;
        bool first = !_sawFirstValidationHook;
        _sawFirstValidationHook = true;
        // The first hook comes before the first step: validate a fresh run if asked. A resumed run already validated
        // this step before saving the checkpoint it resumes from.
        if (first) { if (iteration == 0 && Options.RunAtStart) ValidateAll(iteration, log); return; }
        if (iteration % EverySteps == 0) ValidateAll(iteration, log);
    }

    public override void OnTrainEnd(TrainingMethod method, int iteration) => Dispose();

    /// <summary>Frees the validation inputs (prompt embeddings); also when a run stops before its end.</summary>
    public override void Dispose()
    {
        _setup?.Dispose();
        _setup = null;
    }

    /// <summary>The directory validations write to.</summary>
    public string ResolveOutputDir(TrainingMethod method) =>
        Options.OutputDir ?? Path.Combine(method.Training.Checkpoint.OutputDir, "validation");

    private void ValidateAll(int step, StepLog? log)
    {
        foreach (var (role, _) in _models)
        {
            var result = Validate(step, role);
            if (log is null) continue;
            string prefix = role == "student" ? "val/" : $"val/{role}/";
            foreach (var r in result.Runs.Where(r => r.Accuracy is not null))
            {
                log.Add($"{prefix}accuracy_{r.Steps}steps", r.Accuracy!.Value);
                foreach (var (measure, value) in r.Measures) log.Add($"{prefix}{measure}_{r.Steps}steps", value);
            }
            foreach (var gif in result.Runs.SelectMany(r => r.Samples).Select(s => s.Gif).OfType<string>())
                log.Images.Add(Tracking.TrackedImage.FromGif($"{prefix}{Path.GetFileNameWithoutExtension(gif)}",
                    File.ReadAllBytes(Path.Combine(result.Directory, gif))));
        }
    }

    /// <summary>
    /// Samples every prompt x seed x step count with <paramref name="role"/>'s current (student: EMA, once started)
    /// weights and writes the outputs to <c>step_&lt;n&gt;/</c> (<c>step_&lt;n&gt;/&lt;role&gt;/</c> when several roles are sampled).
    /// </summary>
    public ValidationResult Validate(int step, string? role = null)
    {
        if (_method is null || _setup is null || _models.Count == 0)
            throw new InvalidOperationException("validation runs after OnTrainStart");
        role ??= _models[0].Role;
        var model = _models.First(m => m.Role == role).Model;
        var method = _method;
        var setup = _setup;
        var o = Options;
        var sw = Stopwatch.StartNew();
        var dir = Path.Combine(ResolveOutputDir(method), $"step_{step}");
        if (_models.Count > 1) dir = Path.Combine(dir, role);
        Directory.CreateDirectory(dir);
        var seeds = Seeds ?? [method.Training.Data.Seed];
        bool fewStep = SamplingTimesteps is not null;
        var counts = fewStep ? [SamplingTimesteps!.Count] : SamplingSteps;

        var transformer = model.Transformer;
        bool wasTraining = transformer.training;
        // EMA shadows exist for the student only; before EMA has started Swap() is a no-op.
        bool ema = o.UseEma && role == "student" && Ema is { Started: true };
        var runs = new List<ValidationRun>();
        using (no_grad())
        using (ema ? Ema!.Swap() : null)
        {
            transformer.eval();
            try
            {
                using var scope = NewDisposeScope();
                using var batch = Conditioning(model, setup);
                foreach (int n in counts)
                {
                    var perSeed = new List<Tensor>();
                    var pixels = model.CanDecodeLatents ? new List<Tensor>() : null;
                    foreach (int seed in seeds)
                    {
                        // One CPU generator per (seed, step count): the same noise at every validation.
                        using var g = new Generator((ulong)seed, CPU);
                        long[] shape = [setup.Count, setup.LatentShape[1], setup.LatentShape[0], setup.LatentShape[2], setup.LatentShape[3]];
                        var noise = ModelSampling.Noise(shape, g, batch.Latents.dtype, model.Device);
                        var x0 = fewStep
                            ? ModelSampling.FewStep(model, batch, noise, SamplingTimesteps!.Select(t => (double)t).ToList(), g, o.GuidanceScale)
                            : ModelSampling.Euler(model, batch, noise,
                                new SamplingOptions(n, o.GuidanceScale, o.FlowShift ?? model.NoiseScheduler.Shift));
                        // BTCHW (DiT space) -> BCTHW VAE latents on the CPU; decoded pixels when the model can decode.
                        perSeed.Add(model.Vae.Denormalize(x0.permute(0, 2, 1, 3, 4).to(ScalarType.Float32)).cpu());
                        pixels?.Add(model.DecodeLatents(x0).to(ScalarType.Float32).cpu());
                    }
                    runs.Add(WriteRun(dir, role, n, seeds, stack(perSeed), pixels is null ? null : stack(pixels), setup));
                }
            }
            finally
            {
                if (wasTraining) transformer.train();
            }
        }

        var result = new ValidationResult(step, role, dir, ema ? "ema" : "live", fewStep ? "few_step" : "euler",
            SamplingTimesteps, o.GuidanceScale, setup.Prompts, seeds, runs, sw.Elapsed.TotalSeconds);
        IO.Durable.WriteAllText(Path.Combine(dir, "metrics.json"), result.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        Results.Add(result);
        return result;
    }

    // The model's conditioning for the prompts, built by its own PrepareBatch (dtype, device, negative prompt);
    // without a negative prompt of its own, the data folder's empty-caption embedding is its negative side, laid out
    // by the model as it lays out the data's text (a family with packed text splits it there).
    private static TrainingBatch Conditioning(ModelBase model, ValidationSetup setup)
    {
        var batch = model.PrepareInference(Data.Conditioning.FromText(setup.TextEmbeds.alias(), setup.TextMask.alias()), setup.LatentShape);
        if (batch.Unconditional is not null || setup.NegativeEmbeds is null) return batch;
        long p = setup.Count;
        using var negative = model.PrepareInference(Data.Conditioning.FromText(
            setup.NegativeEmbeds.expand(p, -1, -1).contiguous(), setup.NegativeMask!.expand(p, -1).contiguous()), setup.LatentShape);
        var uncond = negative.Conditional.Map(t => t.alias());
        return new TrainingBatch
        {
            Latents = batch.Latents, RawLatentShape = batch.RawLatentShape, NoisyModelInput = batch.NoisyModelInput,
            Noise = batch.Noise, Timesteps = batch.Timesteps, Sigmas = batch.Sigmas,
            Conditional = batch.Conditional, Unconditional = uncond,
        };
    }

    /// <summary>Writes one step count's samples ([S, P, C, T, H, W] VAE latents, and decoded pixels when available) and scores them.</summary>
    private ValidationRun WriteRun(string dir, string role, int steps, IReadOnlyList<int> seeds, Tensor latents, Tensor? pixels, ValidationSetup setup)
    {
        var latentFile = Path.Combine(dir, $"latents_{steps}steps.safetensors");
        SafeTensors.Save(latentFile, [new("latents", latents.contiguous())], new Dictionary<string, string>
        {
            ["layout"] = "[seed, prompt, C, T, H, W]",
            ["space"] = "vae (denormalised)",
            ["prompts"] = JsonSerializer.Serialize(setup.Prompts),
            ["seeds"] = JsonSerializer.Serialize(seeds),
            ["steps"] = steps.ToString(CultureInfo.InvariantCulture),
        });

        if (pixels is null && _saidNoGifs.Add(role))
            Log.WriteLine($"validation: role '{role}' cannot decode its latents here (no VAE decoder yet): writing latents only, no GIFs");
        int scale = Math.Max(1, 128 / (int)Math.Max(setup.LatentShape[2], setup.LatentShape[3]));
        var samples = new List<ValidationSample>();
        for (int s = 0; s < seeds.Count; s++)
            for (int i = 0; i < setup.Count; i++)
            {
                string? gif = null;
                ClipVerdict? verdict = null;
                if (pixels is not null)
                {
                    using var clip = pixels[s, i];
                    gif = $"{steps}steps_prompt{i:D2}_seed{seeds[s]}.gif";
                    GifWriter.Write(Path.Combine(dir, gif), clip, setup.Fps, scale);
                    if (setup.Scorer is not null && setup.Prompts[i] is { } prompt) verdict = setup.Scorer.Score(clip, prompt);
                }
                samples.Add(new ValidationSample(setup.Prompts[i], seeds[s], gif, verdict));
            }
        var scored = samples.Where(x => x.Verdict is not null).Select(x => x.Verdict!).ToList();
        double? accuracy = scored.Count == samples.Count && scored.Count > 0 ? scored.Average(v => v.Correct ? 1.0 : 0.0) : null;
        var measures = accuracy is null ? new Dictionary<string, double>()
            : scored[0].Measures.Keys.Where(k => scored.All(v => v.Measures.ContainsKey(k)))
                .ToDictionary(k => k, k => scored.Average(v => v.Measures[k]));
        return new ValidationRun(steps, Path.GetFileName(latentFile), samples, accuracy, measures);
    }
}

/// <summary>One sample: its prompt (null when only embeddings were given), seed, GIF file name and the scorer's verdict.</summary>
public sealed record ValidationSample(string? Prompt, int Seed, string? Gif, ClipVerdict? Verdict);

/// <summary>The samples of one step count; accuracy and the measures' averages are absent without a scorer.</summary>
public sealed record ValidationRun(int Steps, string LatentsFile, IReadOnlyList<ValidationSample> Samples,
    double? Accuracy, IReadOnlyDictionary<string, double> Measures)
{
    public double? Measure(string name) => Measures.TryGetValue(name, out var v) ? v : null;
}

/// <summary>One validation of one role: what was sampled, how, and the scores (also written as <c>metrics.json</c>).</summary>
public sealed record ValidationResult(int Step, string Role, string Directory, string Weights, string Sampler, IReadOnlyList<int>? Timesteps,
    double GuidanceScale, IReadOnlyList<string?> Prompts, IReadOnlyList<int> Seeds, IReadOnlyList<ValidationRun> Runs, double Seconds)
{
    public JsonObject ToJson()
    {
        var runs = new JsonArray();
        foreach (var r in Runs)
        {
            var samples = new JsonArray();
            foreach (var s in r.Samples)
            {
                var o = new JsonObject { ["prompt"] = s.Prompt, ["seed"] = s.Seed, ["gif"] = s.Gif };
                if (s.Verdict is { } v)
                {
                    foreach (var (k, value) in v.Details) o[k] = value?.DeepClone();
                    o["correct"] = v.Correct;
                }
                samples.Add(o);
            }
            var run = new JsonObject { ["steps"] = r.Steps, ["latents"] = r.LatentsFile, ["accuracy"] = r.Accuracy };
            foreach (var (k, value) in r.Measures) run[k] = value;
            run["samples"] = samples;
            runs.Add(run);
        }
        return new JsonObject
        {
            ["step"] = Step, ["role"] = Role, ["weights"] = Weights, ["sampler"] = Sampler,
            ["timesteps"] = Timesteps is null ? null : new JsonArray(Timesteps.Select(t => (JsonNode)t).ToArray()),
            ["guidance_scale"] = GuidanceScale, ["prompts"] = new JsonArray(Prompts.Select(p => (JsonNode?)p).ToArray()),
            ["seeds"] = new JsonArray(Seeds.Select(s => (JsonNode)s).ToArray()), ["seconds"] = Seconds, ["runs"] = runs,
        };
    }
}

using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Data.Synthetic;
using FastVideo.Sampling;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Train.Callbacks;

/// <summary>The options of the <c>validation</c> callback.</summary>
public sealed record ValidationOptions : ICheckedOptions
{
    /// <summary>Euler step counts sampled when neither sampling_steps nor sampling_timesteps is given.</summary>
    public static IReadOnlyList<int> DefaultSamplingSteps { get; } = [40];

    [Description("validate every N steps (and at the start of a fresh run); 0 = never")]
    public int EverySteps { get; init; } = 100;

    [Description("also validate at step 0 of a fresh run")]
    public bool AtStart { get; init; } = true;

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

    [Description("classifier-free guidance scale (>= 0; 1 = no unconditional pass)")]
    public double GuidanceScale { get; init; } = 1.0;

    [Description("the sampler's flow shift (> 0); null = the role's scheduler shift")]
    public double? FlowShift { get; init; }

    [Description("sample with the ema callback's weights once it has started (student only)")]
    public bool UseEma { get; init; } = true;

    [Description("where step_<n>/ folders go; null = <checkpoint.output_dir>/validation")]
    public string? OutputDir { get; init; }

    [Description("the role that is sampled")]
    public string Role { get; init; } = "student";

    public IEnumerable<OptionProblem> Check()
    {
        if (EverySteps < 0) yield return new("every_steps", $"must be >= 0 (0 = never), got {EverySteps}");
        if (Prompts is not null && DatasetFile is not null) yield return new("prompts", "give either prompts or dataset_file, not both");
        if (Prompts is { Count: 0 }) yield return new("prompts", "the list is empty");
        if (NumPrompts is < 1) yield return new("num_prompts", $"must be >= 1, got {NumPrompts}");
        if (Seeds is { Count: 0 }) yield return new("seeds", "the list is empty");
        if (Seeds?.Distinct().Count() < Seeds?.Count) yield return new("seeds", $"seeds must be distinct, got [{string.Join(", ", Seeds!)}]");
        if (SamplingSteps is not null && SamplingTimesteps is not null)
            yield return new("sampling_timesteps", "give either sampling_steps (Euler) or sampling_timesteps (few-step), not both");
        if (SamplingSteps is { Count: 0 }) yield return new("sampling_steps", "the list is empty");
        for (int i = 0; i < (SamplingSteps?.Count ?? 0); i++)
            if (SamplingSteps![i] < 1) yield return new($"sampling_steps[{i}]", $"must be >= 1, got {SamplingSteps[i]}");
        if (SamplingSteps?.Distinct().Count() < SamplingSteps?.Count)
            yield return new("sampling_steps", $"step counts must be distinct, got [{string.Join(", ", SamplingSteps!)}]");
        if (SamplingTimesteps is not null && TimestepsProblem(SamplingTimesteps) is { } problem) yield return problem;
        if (!double.IsFinite(GuidanceScale) || GuidanceScale < 0) yield return new("guidance_scale", $"must be a number >= 0, got {GuidanceScale}");
        if (FlowShift is { } fs && !(fs > 0)) yield return new("flow_shift", $"must be > 0, got {fs}");
        if (string.IsNullOrEmpty(Role)) yield return new("role", "must name a role");
    }

    private static OptionProblem? TimestepsProblem(IReadOnlyList<int> timesteps) =>
        FewStepSampler.Problem(timesteps.Select(t => (double)t).ToList()) is { } p ? new("sampling_timesteps" + p.Index, p.Detail) : null;
}

/// <summary>
/// Samples fixed prompts with fixed seeds every <c>every_steps</c> steps (and at the start of a fresh run) and writes
/// latents, GIFs (when the VAE is the synthetic identity one) and, on the synthetic dataset, the evaluator's
/// accuracy and sharpness (spec 7.4, with the port's outputs). Sampling is Euler flow matching at each of
/// <c>sampling_steps</c>, or the few-step DMD sampler at <c>sampling_timesteps</c>.
/// <para>Determinism: every (seed, step count) re-seeds a CPU generator with the seed, so the same weights give the
/// same samples at every validation, and validation keeps no RNG state (nothing to checkpoint). It never draws from
/// the method's generator or the global RNG, so training is the same with or without it.</para>
/// <para>Logging: the trainer's validation hooks get no step log, so the callback keeps the log of the step it last
/// saw in <see cref="OnTrainingStepEnd"/> (the same step; the trainer logs it after validation) and adds
/// <c>val/accuracy_&lt;n&gt;steps</c> and <c>val/sharpness_&lt;n&gt;steps</c> to it, and the GIFs as images
/// (<c>val/&lt;n&gt;steps_prompt&lt;i&gt;_seed&lt;s&gt;</c>). The start-of-run validation has no step log: its metrics
/// and GIFs are only in <c>step_0/</c>.</para>
/// </summary>
public sealed class ValidationCallback : TrainCallback
{
    private TrainingMethod? _method;
    private ModelBase? _model;
    private ValidationSetup? _setup;
    private (int Step, StepLog Log)? _stepLog;
    private bool _sawFirstValidationHook;
    private bool _saidNoGifs;

    public ValidationCallback(ValidationOptions options) => Options = options;

    public ValidationOptions Options { get; }
    /// <summary><c>callbacks.&lt;name&gt;</c>, for error messages.</summary>
    public string OptionPath => $"callbacks.{(Name.Length > 0 ? Name : "validation")}";
    public int EverySteps => Options.EverySteps;
    public bool AtStart => Options.AtStart;
    public IReadOnlyList<string>? Prompts => Options.Prompts;
    public string? DatasetFile => Options.DatasetFile;
    public string? PromptEmbedsFile => Options.PromptEmbedsFile;
    /// <summary>How many prompts are sampled (all when <c>num_prompts</c> is null).</summary>
    public int NumPrompts => Options.NumPrompts ?? int.MaxValue;
    /// <summary>Null = [training.data.seed].</summary>
    public IReadOnlyList<int>? Seeds => Options.Seeds;
    public IReadOnlyList<int> SamplingSteps => Options.SamplingSteps ?? ValidationOptions.DefaultSamplingSteps;
    /// <summary>Non-null = few-step sampling at these timesteps instead of Euler.</summary>
    public IReadOnlyList<int>? SamplingTimesteps => Options.SamplingTimesteps;
    public double GuidanceScale => Options.GuidanceScale;
    /// <summary>Null = the role's scheduler shift.</summary>
    public double? FlowShift => Options.FlowShift;
    public bool UseEma => Options.UseEma;
    /// <summary>Null = <c>&lt;checkpoint.output_dir&gt;/validation</c>.</summary>
    public string? OutputDir => Options.OutputDir;
    public string Role => Options.Role;

    /// <summary>The EMA whose weights validation samples with (<c>use_ema</c>); linked by <see cref="Link"/>.</summary>
    public EmaCallback? Ema { get; set; }

    /// <summary>Where messages go (once per run: e.g. "no GIFs for a real VAE"); Console.Out by default.</summary>
    public TextWriter Log { get; set; } = Console.Out;

    /// <summary>Every validation this run has done, in order.</summary>
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
        _stepLog = null;
        if (EverySteps == 0) return;
        _model = method.Roles.TryGetValue(Role, out var m) ? m
            : throw new UserError($"{OptionPath}.role: no role '{Role}' (roles: {string.Join(", ", method.Roles.Keys)})");
        _setup?.Dispose();
        _setup = ValidationSetup.Resolve(this, _model, method.Config);
    }

    public override void OnTrainingStepEnd(TrainingMethod method, int iteration, StepLog log) => _stepLog = (iteration, log);

    public override void OnValidationBegin(TrainingMethod method, int iteration)
    {
        if (EverySteps == 0) return;
        bool first = !_sawFirstValidationHook;
        _sawFirstValidationHook = true;
        // The first hook comes before the first step: validate a fresh run if asked. A resumed run already validated
        // this step right after saving the checkpoint it resumes from.
        if (first) { if (iteration == 0 && AtStart) Validate(iteration); return; }
        if (iteration % EverySteps == 0) Validate(iteration);
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
        OutputDir ?? Path.Combine(method.Training.Checkpoint.OutputDir, "validation");

    /// <summary>Samples every prompt x seed x step count with the current (or EMA) weights and writes the outputs.</summary>
    public ValidationResult Validate(int step)
    {
        if (_method is null || _model is null || _setup is null)
            throw new InvalidOperationException("validation runs after OnTrainStart");
        var method = _method;
        var model = _model;
        var setup = _setup;
        var sw = Stopwatch.StartNew();
        var dir = Path.Combine(ResolveOutputDir(method), $"step_{step}");
        Directory.CreateDirectory(dir);
        var seeds = Seeds ?? [method.Training.Data.Seed];
        bool fewStep = SamplingTimesteps is not null;
        var counts = fewStep ? [SamplingTimesteps!.Count] : SamplingSteps;

        var transformer = model.Transformer;
        bool wasTraining = transformer.training;
        // EMA shadows exist for the student only; before EMA has started Swap() is a no-op.
        bool ema = UseEma && Role == "student" && Ema is { Started: true };
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
                    foreach (int seed in seeds)
                    {
                        // One CPU generator per (seed, step count): the same noise at every validation.
                        using var g = new Generator((ulong)seed, CPU);
                        long[] shape = [setup.Count, setup.LatentShape[1], setup.LatentShape[0], setup.LatentShape[2], setup.LatentShape[3]];
                        var noise = ModelSampling.Noise(shape, g, batch.Latents.dtype, model.Device);
                        var x0 = fewStep
                            ? ModelSampling.FewStep(model, batch, noise, SamplingTimesteps!.Select(t => (double)t).ToList(), g, GuidanceScale)
                            : ModelSampling.Euler(model, batch, noise,
                                new SamplingOptions(n, GuidanceScale, FlowShift ?? model.NoiseScheduler.Shift));
                        // BTCHW (DiT space) -> BCTHW VAE latents on the CPU.
                        var latents = x0.permute(0, 2, 1, 3, 4).to(ScalarType.Float32);
                        if (setup.Vae is not null) latents = setup.Vae.Denormalize(latents);
                        perSeed.Add(latents.cpu());
                    }
                    runs.Add(WriteRun(dir, n, seeds, stack(perSeed), setup));
                }
            }
            finally
            {
                if (wasTraining) transformer.train();
            }
        }

        var result = new ValidationResult(step, dir, ema ? "ema" : "live", fewStep ? "few_step" : "euler",
            SamplingTimesteps, GuidanceScale, setup.Prompts, seeds, runs, sw.Elapsed.TotalSeconds);
        File.WriteAllText(Path.Combine(dir, "metrics.json"), result.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        if (_stepLog is { } sl && sl.Step == step)
        {
            foreach (var r in runs.Where(r => r.Accuracy is not null))
            {
                sl.Log.Add($"val/accuracy_{r.Steps}steps", r.Accuracy!.Value);
                sl.Log.Add($"val/sharpness_{r.Steps}steps", r.Sharpness!.Value);
            }
            // The GIFs too, for trackers that show images (TensorBoard plays them), tagged by their file name.
            foreach (var gif in runs.SelectMany(r => r.Samples).Select(s => s.Gif).OfType<string>())
                sl.Log.Images.Add(Tracking.TrackedImage.FromGif($"val/{Path.GetFileNameWithoutExtension(gif)}", File.ReadAllBytes(Path.Combine(dir, gif))));
        }
        Results.Add(result);
        return result;
    }

    // The model's conditioning for the prompts, built by its own PrepareBatch (dtype, device, negative prompt) from
    // zero latents of the validation shape; PrepareBatch's noise and timestep draws come from a throwaway generator.
    private static TrainingBatch Conditioning(ModelBase model, ValidationSetup setup)
    {
        using var raw = new RawBatch
        {
            VaeLatent = zeros([setup.Count, .. setup.LatentShape]),
            Conditioning = Data.Conditioning.FromText(setup.TextEmbeds.clone(), setup.TextMask.clone()),
        };
        using var throwaway = new Generator(0, model.Device);
        var batch = model.PrepareBatch(raw, throwaway, LatentsSource.Data);
        if (batch.Unconditional is not null || setup.NegativeEmbeds is null) return batch;
        // The model has no negative prompt of its own: use the data folder's empty-caption embedding.
        var dtype = batch.Latents.dtype;
        long p = setup.Count;
        var uncond = Data.Conditioning.FromText(
            setup.NegativeEmbeds.to(model.Device).to_type(dtype).expand(p, -1, -1).contiguous(),
            setup.NegativeMask!.to(model.Device).to_type(dtype).expand(p, -1).contiguous());
        return new TrainingBatch
        {
            Latents = batch.Latents, RawLatentShape = batch.RawLatentShape, NoisyModelInput = batch.NoisyModelInput,
            Noise = batch.Noise, Timesteps = batch.Timesteps, Sigmas = batch.Sigmas,
            Conditional = batch.Conditional, Unconditional = uncond,
        };
    }

    /// <summary>Writes one step count's samples ([S, P, C, T, H, W] VAE latents) and scores them.</summary>
    private ValidationRun WriteRun(string dir, int steps, IReadOnlyList<int> seeds, Tensor latents, ValidationSetup setup)
    {
        var latentFile = Path.Combine(dir, $"latents_{steps}steps.safetensors");
        SafeTensors.Save(latentFile, [new("latents", latents.contiguous())], new Dictionary<string, string>
        {
            ["layout"] = "[seed, prompt, C, T, H, W]",
            ["space"] = setup.Vae is null ? "dit (normalised; the family exposes no VAE constants)" : "vae (denormalised)",
            ["prompts"] = JsonSerializer.Serialize(setup.Prompts),
            ["seeds"] = JsonSerializer.Serialize(seeds),
            ["steps"] = steps.ToString(CultureInfo.InvariantCulture),
        });

        if (!setup.IdentityVae && !_saidNoGifs)
        {
            _saidNoGifs = true;
            Log.WriteLine($"validation: role '{Role}' has a real VAE (not the synthetic identity one) and decoding is not available: " +
                          "writing latents only, no GIFs");
        }
        int scale = Math.Max(1, 128 / (int)Math.Max(setup.LatentShape[2], setup.LatentShape[3]));
        var samples = new List<ValidationSample>();
        for (int s = 0; s < seeds.Count; s++)
            for (int i = 0; i < setup.Count; i++)
            {
                using var clip = latents[s, i];
                string? gif = null;
                if (setup.IdentityVae)
                {
                    gif = $"{steps}steps_prompt{i:D2}_seed{seeds[s]}.gif";
                    GifWriter.Write(Path.Combine(dir, gif), clip, setup.Fps, scale);
                }
                var a = setup.Evaluator?.Evaluate(clip, setup.Prompts[i]);
                samples.Add(new ValidationSample(setup.Prompts[i], seeds[s], gif, a));
            }
        double? Avg(Func<ClipAssessment, double> f) => setup.Evaluator is null ? null : samples.Average(x => f(x.Assessment!));
        return new ValidationRun(steps, Path.GetFileName(latentFile), samples,
            Avg(a => a.Correct ? 1 : 0), Avg(a => a.ColorCorrect ? 1 : 0), Avg(a => a.DirectionCorrect ? 1 : 0), Avg(a => a.Sharpness));
    }
}

/// <summary>One sample: its prompt (null when only embeddings were given), seed, GIF file name and assessment.</summary>
public sealed record ValidationSample(string? Prompt, int Seed, string? Gif, ClipAssessment? Assessment);

/// <summary>The samples of one step count; the scores are null without an evaluator.</summary>
public sealed record ValidationRun(int Steps, string LatentsFile, IReadOnlyList<ValidationSample> Samples,
    double? Accuracy, double? ColorAccuracy, double? DirectionAccuracy, double? Sharpness);

/// <summary>One validation: what was sampled, how, and the scores (also written as <c>metrics.json</c>).</summary>
public sealed record ValidationResult(int Step, string Directory, string Weights, string Sampler, IReadOnlyList<int>? Timesteps,
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
                if (s.Assessment is { } a)
                {
                    o["color"] = a.Color;
                    o["direction"] = a.Direction;
                    o["one_object"] = a.OneObject;
                    o["correct"] = a.Correct;
                    o["sharpness"] = a.Sharpness;
                }
                samples.Add(o);
            }
            runs.Add(new JsonObject
            {
                ["steps"] = r.Steps, ["latents"] = r.LatentsFile, ["accuracy"] = r.Accuracy, ["color_accuracy"] = r.ColorAccuracy,
                ["direction_accuracy"] = r.DirectionAccuracy, ["sharpness"] = r.Sharpness, ["samples"] = samples,
            });
        }
        return new JsonObject
        {
            ["step"] = Step, ["weights"] = Weights, ["sampler"] = Sampler,
            ["timesteps"] = Timesteps is null ? null : new JsonArray(Timesteps.Select(t => (JsonNode)t).ToArray()),
            ["guidance_scale"] = GuidanceScale, ["prompts"] = new JsonArray(Prompts.Select(p => (JsonNode?)p).ToArray()),
            ["seeds"] = new JsonArray(Seeds.Select(s => (JsonNode)s).ToArray()), ["seconds"] = Seconds, ["runs"] = runs,
        };
    }
}

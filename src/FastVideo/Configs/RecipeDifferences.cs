namespace FastVideo.Configs;

/// <summary>
/// The notes of a bound recipe (<see cref="RunConfig.Notes"/>): features FastVideo has and FastVideoSharp does not
/// (the recipe loads, training refuses it), in either form; and, for a recipe in FastVideo's form, what runs
/// differently here than there.
/// </summary>
internal static class RecipeDifferences
{
    public static void Note(RunConfig config, RawMap root, string rolesKey, RecipeBinder binder)
    {
        NotImplemented(config, root, rolesKey, binder);
        foreach (var (path, options) in OptionRecords(config, rolesKey))
            if (WithPipelineGuidance(options, config.Pipeline) is IFastVideoDifferences d)
                foreach (var difference in d.DifferencesFromFastVideo())
                    Add(RecipeNoteKind.DiffersFromFastVideo, $"{path}.{difference.Key}", difference.Detail);
        if (config.Form == RecipeForm.FastVideo) FastVideoRuns(config, root, binder);
        return;

        void Add(RecipeNoteKind kind, string path, string detail) =>
            binder.Note(kind, RecipeLoader.Locate(root, path), path, detail);
    }

    private static IEnumerable<(string Path, object Options)> OptionRecords(RunConfig config, string rolesKey) =>
        new[] { ("method", (object)config.Method) }.Concat(config.Callbacks.Select(c => ($"callbacks.{c.Key}", c.Value)))
            .Concat(config.Roles.Select(r => ($"{rolesKey}.{r.Key}", (object)r.Value)));

    /// <summary>Accepted options are applied or refused: these would silently train something else (dense, exact,
    /// unquantized attention and linears; video-text rows) than the recipe asks for, so training refuses them.</summary>
    private static void NotImplemented(RunConfig config, RawMap root, string rolesKey, RecipeBinder binder)
    {
        var t = config.Training;
        if (t.Vsa.Sparsity > 0)
            Add("training.vsa.sparsity", "video sparse attention (VSA) is not implemented in FastVideoSharp; training refuses " +
                                         "this recipe (set it to 0 to train with dense attention)");
        foreach (var (name, role) in config.Roles)
            if (role.AttentionBackend is { } backend && !RecipeLoader.ExactAttentionBackends.Contains(backend.Trim().ToUpperInvariant()))
                Add($"{rolesKey}.{name}.attention_backend", $"the {backend.Trim().ToUpperInvariant()} attention backend is not implemented " +
                    $"in FastVideoSharp (roles compute exact attention, as {string.Join(" and ", RecipeLoader.ExactAttentionBackends)}); training refuses this recipe");
        if (config.Pipeline.DitConfig.QuantConfig is { } quant)
            Add("pipeline.dit_config.quant_config", $"quantization '{quant}' of the transformer is not implemented in FastVideoSharp; " +
                                                    "training refuses this recipe");
        foreach (var problem in t.Distributed.Unsupported())
            Add($"training.distributed.{problem.Key}", $"{problem.Detail}; training refuses this recipe");
        if (t.Data.PreprocessedDataType != "t2v")
            Add("training.data.preprocessed_data_type", $"'{t.Data.PreprocessedDataType}' rows are not implemented in FastVideoSharp " +
                                                        "(the loader reads t2v: latents and text embeddings); training refuses this recipe");
        // FastVideo's entry point picks SLA attention for TurboDiffusion checkpoints (train.py), for every role that
        // does not name its own backend.
        var modelPath = t.ModelPath is { Length: > 0 } path ? path : config.Roles.GetValueOrDefault("student")?.InitFrom;
        var lower = modelPath?.ToLowerInvariant() ?? "";
        if (t.Vsa.Sparsity == 0 && (lower.Contains("turbodiffusion") || lower.Contains("turbowan"))
            && config.Roles.Values.Any(r => r.AttentionBackend is null))
            Add(t.ModelPath is { Length: > 0 } ? "training.model_path" : $"{rolesKey}.student.init_from",
                $"FastVideo trains TurboDiffusion checkpoints ('{modelPath}') with SLA attention, which is not implemented in " +
                "FastVideoSharp; training refuses this recipe");
        return;

        void Add(string path, string detail) => binder.Note(RecipeNoteKind.NotImplemented, RecipeLoader.Locate(root, path), path, detail);
    }

    /// <summary>FastVideo runs a recipe on num_gpus GPUs and logs to wandb; here the processes are mpiexec's and log to files.</summary>
    private static void FastVideoRuns(RunConfig config, RawMap root, RecipeBinder binder)
    {
        var t = config.Training;
        if (t.Distributed.NumGpus > 1)
            Add("training.distributed.num_gpus",
                $"FastVideo spreads a step over {t.Distributed.NumGpus} ranks (data parallel over num_gpus / sp_size groups of " +
                "train_batch_size each); FastVideoSharp runs data parallel over the processes of `mpiexec -n N` (N, not num_gpus, " +
                "sets them; README: Several processes), and one process alone sees " +
                $"train_batch_size x gradient_accumulation_steps = {t.Data.TrainBatchSize * t.Loop.GradientAccumulationSteps} samples a step");
        if (t.Tracker.Trackers.Count == 0 && t.Tracker.ProjectName.Length > 0)
            Add("training.tracker", $"FastVideo logs to wandb (project '{t.Tracker.ProjectName}'); FastVideoSharp writes " +
                                    "metrics.jsonl and TensorBoard events in the output folder");
        return;

        void Add(string path, string detail) =>
            binder.Note(RecipeNoteKind.DiffersFromFastVideo, RecipeLoader.Locate(root, path), path, detail);
    }

    /// <summary>A hunyuan role without its own embedded_guidance_scale embeds pipeline.embedded_cfg_scale (HunyuanModel):
    /// its note states that value.</summary>
    private static object WithPipelineGuidance(object options, PipelineConfig pipeline) =>
        options is Train.Models.Hunyuan.HunyuanRoleConfig { EmbeddedGuidanceScale: null } h && pipeline.EmbeddedCfgScale is { } s
            ? h with { EmbeddedGuidanceScale = s }
            : options;
}

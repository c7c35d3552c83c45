using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using FastVideo.Configs;
using FastVideo.IO;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using FastVideo.Train.State;
using FastVideo.Weights;
using static TorchSharp.torch;

namespace FastVideo.Train.Checkpointing;

/// <summary>
/// Training checkpoints (spec 8). Layout of <c>&lt;output_dir&gt;/checkpoint-&lt;step&gt;/</c>:
/// <code>
///   &lt;role&gt;/transformer/diffusion_pytorch_model.safetensors   every trainable role's weights (Diffusers keys)
///   &lt;role&gt;/lora/adapter_model.safetensors    instead, for a LoRA role: its adapters only (what trains; unscaled A, B)
///   training_state.safetensors   optimizer moments, callback tensors (EMA shadows), generator states
///   training_state.json          optimizer steps, scheduler counters, loader state, callback values
///   recipe.yaml                  the resolved recipe
///   metadata.json                {"step", "roles", "lora_roles", "format"}: written last, so its presence marks a whole checkpoint
/// </code>
/// A checkpoint is built in <c>checkpoint-&lt;step&gt;.tmp-*</c>, fsynced, and renamed into place, so a crash or a
/// power loss mid-write leaves the previous checkpoints untouched; only the newest <c>keep_last</c> are kept.
/// </summary>
public sealed partial class CheckpointManager
{
    public const string Format = "fastvideo-sharp-checkpoint/1";
    public const string WeightsFile = "diffusion_pytorch_model.safetensors";
    public const string AdapterFile = "adapter_model.safetensors";
    private const string StateTensors = "training_state.safetensors";
    private const string StateValues = "training_state.json";
    public const string MetadataFile = "metadata.json";

    private readonly RunConfig _config;

    public CheckpointManager(string outputDir, int saveSteps, int keepLast, RunConfig config)
    {
        OutputDir = outputDir; SaveSteps = saveSteps; KeepLast = keepLast; _config = config;
    }

    public string OutputDir { get; }
    public int SaveSteps { get; }
    public int KeepLast { get; }
    public int? LastSavedStep { get; private set; }
    /// <summary>The newest complete checkpoint written or loaded by this manager.</summary>
    public string? LastCheckpoint { get; private set; }

    /// <summary>Test hook: called with each file's path after it is written into the temporary folder.</summary>
    internal Action<string>? AfterFileWritten { get; set; }

    /// <summary>Test hook: called with the checkpoint's folder right after it is renamed into place.</summary>
    internal Action<string>? AfterPublished { get; set; }

    [GeneratedRegex(@"^checkpoint-(\d+)$")]
    private static partial Regex CheckpointName();

    public static string PathFor(string outputDir, int step) => Path.Combine(outputDir, $"checkpoint-{step}");

    public static string RoleWeightsPath(string checkpoint, string role) => Path.Combine(checkpoint, role, "transformer", WeightsFile);

    /// <summary>Where a LoRA role's adapters are (its only weights in the checkpoint).</summary>
    public static string RoleAdapterPath(string checkpoint, string role) => Path.Combine(checkpoint, role, "lora", AdapterFile);

    public bool ShouldSave(int step) => SaveSteps > 0 && step % SaveSteps == 0 && LastSavedStep != step;

    public string Save(int step, TrainingMethod method, IReadOnlyList<TrainCallback> callbacks, IBatchSource data)
    {
        var final = PathFor(OutputDir, step);
        var tmp = $"{final}.tmp-{Guid.NewGuid():N}";
        try
        {
            Directory.CreateDirectory(OutputDir);
            Directory.CreateDirectory(tmp);
            var roles = method.TrainableRoles.ToList();
            foreach (var model in roles)
            {
                var path = model.IsLora ? RoleAdapterPath(tmp, model.Role) : RoleWeightsPath(tmp, model.Role);
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                if (model.IsLora) SaveAdapters(model, path);
                else StateDict.SaveModule(model.Transformer, path);
                AfterFileWritten?.Invoke(path);
            }

            // The snapshots are the state's (disposed with it); the views and generator states taken here, the scope's.
            using (NewDisposeScope())
            using (var state = new TrainingState())
            {
                var root = state.Root;
                method.SaveState(root);
                foreach (var cb in callbacks) cb.SaveState(root.Scope("callbacks").Scope(cb.Name));
                root.PutNode("data", data.GetState());
                foreach (var (name, g) in method.Generators) root.Scope("rng").PutTensor(name, g.get_state());
                Write(Path.Combine(tmp, StateTensors), p => SafeTensors.Save(p, state.Tensors));
                Write(Path.Combine(tmp, StateValues), p => File.WriteAllText(p, state.Values.ToJsonString(Indented)));
            }
            Write(Path.Combine(tmp, "recipe.yaml"), p => File.WriteAllText(p, RecipePrinter.ToYaml(_config.Raw)));
            var meta = new JsonObject
            {
                ["format"] = Format,
                ["step"] = step,
                ["roles"] = new JsonArray(roles.Select(r => (JsonNode)r.Role).ToArray()),
            };
            if (roles.Any(r => r.IsLora))
                meta["lora_roles"] = new JsonArray(roles.Where(r => r.IsLora).Select(r => (JsonNode)r.Role).ToArray());
            Write(Path.Combine(tmp, MetadataFile), p => File.WriteAllText(p, meta.ToJsonString(Indented)));
            // Durable before it is published: every file and folder of the tree, then the rename, then the parent.
            Durable.SyncTree(tmp);

            // Replace a same-step checkpoint from an earlier run: move it aside first, so one complete copy always exists.
            string? aside = null;
            if (Directory.Exists(final))
            {
                aside = $"{final}.old-{Guid.NewGuid():N}";
                Directory.Move(final, aside);
            }
            Directory.Move(tmp, final);
            Durable.SyncDirectory(OutputDir);
            AfterPublished?.Invoke(final);
            if (aside is not null) Directory.Delete(aside, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw new StorageError($"step {step}: writing the checkpoint '{tmp}' failed: {e.Message}. " +
                (LastCheckpoint is null ? "No earlier checkpoint exists." : $"The last good checkpoint '{LastCheckpoint}' is intact."), e);
        }
        catch
        {
            try { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
        LastSavedStep = step;
        LastCheckpoint = final;
        PruneOld();
        return final;
    }

    /// <summary>A checkpoint of <paramref name="step"/> that another process wrote (rank 0 of a multi-process run):
    /// this one remembers it as its last, for its messages and the final save.</summary>
    public void NoteWrittenElsewhere(int step)
    {
        LastSavedStep = step;
        LastCheckpoint = PathFor(OutputDir, step);
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>A LoRA role's trainable tensors (its adapters, as held: float32), with rank and alpha as metadata.</summary>
    private static void SaveAdapters(Models.ModelBase model, string path)
    {
        var state = FastVideo.Models.Layers.LoraAdapters.TrainableState(model.Transformer);
        var lora = model.Lora!;
        SafeTensors.Save(path, state, new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["lora_rank"] = lora.Rank!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["lora_alpha"] = lora.EffectiveAlpha.ToString(System.Globalization.CultureInfo.InvariantCulture),
        });
    }

    /// <summary>The roles whose checkpoint weights are LoRA adapters (metadata <c>lora_roles</c>; absent = none).</summary>
    public static IReadOnlyList<string> LoraRoles(JsonNode meta) =>
        meta["lora_roles"]?.AsArray().Select(r => r!.GetValue<string>()).ToList() ?? [];

    /// <summary>The weights file of <paramref name="role"/>: its adapters for a LoRA role, else its full weights.</summary>
    public static string RoleFile(string checkpoint, string role, IReadOnlyList<string> loraRoles) =>
        loraRoles.Contains(role) ? RoleAdapterPath(checkpoint, role) : RoleWeightsPath(checkpoint, role);

    private void Write(string path, Action<string> write)
    {
        write(path);
        AfterFileWritten?.Invoke(path);
    }

    /// <summary>
    /// Deletes all but the newest <see cref="KeepLast"/> checkpoints (0 = keep all), and unfinished checkpoint folders
    /// that an earlier crash left. A failed delete is a warning: the run goes on, the next prune retries.
    /// </summary>
    private void PruneOld()
    {
        var doomed = KeepLast <= 0 ? [] : List(OutputDir).OrderByDescending(c => c.Step).Skip(KeepLast).Select(c => c.Path);
        foreach (var dir in doomed.Concat(StaleFolders(OutputDir)))
        {
            try { Directory.Delete(dir, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Warn?.Invoke($"warning: could not delete the old checkpoint '{dir}': {e.Message}");
            }
        }
    }

    /// <summary>Receives warnings (a skipped unreadable checkpoint, a failed prune); the trainer prints them.</summary>
    public Action<string>? Warn { get; set; }

    /// <summary>Folders of checkpoint writes that a crash interrupted (<c>checkpoint-N.tmp-*</c>, <c>checkpoint-N.old-*</c>).</summary>
    public static IEnumerable<string> StaleFolders(string dir) =>
        Directory.Exists(dir)
            ? Directory.GetDirectories(dir).Where(d => StaleName().IsMatch(Path.GetFileName(d)))
            : [];

    [GeneratedRegex(@"^checkpoint-\d+\.(tmp|old)-[0-9a-f]{32}$")]
    private static partial Regex StaleName();

    /// <summary>Checkpoint folders (with a metadata.json, readable or not) directly under <paramref name="dir"/>, by step.</summary>
    public static IReadOnlyList<(int Step, string Path)> List(string dir)
    {
        if (!Directory.Exists(dir)) return [];
        return Directory.GetDirectories(dir)
            .Select(d => (Match: CheckpointName().Match(Path.GetFileName(d)), Dir: d))
            .Where(x => x.Match.Success && File.Exists(Path.Combine(x.Dir, MetadataFile)))
            .Select(x => (int.Parse(x.Match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), x.Dir))
            .OrderBy(x => x.Item1).ToList();
    }

    /// <summary>
    /// Why <paramref name="checkpoint"/> cannot be loaded, or null when it can: its metadata, training state and every
    /// listed role's weights must parse (headers only; no tensor is read).
    /// </summary>
    public static string? Problem(string checkpoint)
    {
        string file = MetadataFile;
        try
        {
            var meta = JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, file))) as JsonObject
                       ?? throw new FormatException("not a JSON object");
            if (meta["format"]?.GetValue<string>() != Format)
                return $"{file}: unknown format '{meta["format"]}' (expected {Format})";
            var step = meta["step"]?.GetValue<int>() ?? throw new FormatException("no \"step\"");
            var name = Path.GetFileName(Path.TrimEndingDirectorySeparator(checkpoint));
            if (CheckpointName().Match(name) is { Success: true } m && m.Groups[1].Value != step.ToString(System.Globalization.CultureInfo.InvariantCulture))
                return $"{file}: step {step} does not match the folder name '{name}'";
            var roles = meta["roles"]?.AsArray().Select(r => r!.GetValue<string>()).ToList() ?? throw new FormatException("no \"roles\"");
            var loraRoles = LoraRoles(meta);
            file = StateValues;
            if (JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, file))) is not JsonObject) throw new FormatException("not a JSON object");
            file = StateTensors;
            SafeTensors.ReadHeader(Path.Combine(checkpoint, file));
            foreach (var role in roles)
            {
                file = Path.GetRelativePath(checkpoint, RoleFile(checkpoint, role, loraRoles));
                SafeTensors.ReadHeader(RoleFile(checkpoint, role, loraRoles));
            }
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or FormatException
                                      or InvalidOperationException or UserError or ArgumentException)
        {
            return $"{file}: {e.Message}";
        }
    }

    /// <summary>
    /// Spec 8.2: "" → no resume; "latest" → the newest loadable checkpoint under <paramref name="outputDir"/> (none →
    /// a fresh start); a checkpoint folder (it must be loadable); or a run folder (its newest loadable checkpoint).
    /// Newer checkpoints that cannot be loaded are skipped with a warning naming them.
    /// </summary>
    public static string? ResolveResume(string spec, string outputDir, Action<string>? warn = null)
    {
        const string key = "training.checkpoint.resume_from_checkpoint";
        if (string.IsNullOrEmpty(spec)) return null;
        if (spec.Equals("latest", StringComparison.OrdinalIgnoreCase))
            return NewestLoadable(outputDir, warn);
        return Resolve(spec, key, warn);
    }

    /// <summary>
    /// A checkpoint folder as given (it must be loadable), or the newest loadable checkpoint of a run folder.
    /// <paramref name="what"/> names the option in errors.
    /// </summary>
    public static string Resolve(string path, string what, Action<string>? warn = null)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        if (File.Exists(full)) throw new UserError($"{what}: '{path}' is a file; expected a checkpoint-<step> folder or a run folder");
        if (!Directory.Exists(full)) throw new UserError($"{what}: '{path}' does not exist");
        if (CheckpointName().IsMatch(Path.GetFileName(full)))
        {
            if (!File.Exists(Path.Combine(full, MetadataFile)))
                throw new UserError($"{what}: '{path}' is not a complete checkpoint (no {MetadataFile}; was the write interrupted?)");
            return Problem(full) is { } problem
                ? throw new StorageError($"{what}: the checkpoint '{path}' cannot be loaded: {problem}")
                : full;
        }
        if (List(full).Count == 0)
            throw new UserError($"{what}: '{path}' is neither a checkpoint-<step> folder nor a run folder holding one");
        return NewestLoadable(full, warn)
            ?? throw new StorageError($"{what}: no checkpoint in '{path}' can be loaded (each one was named above)");
    }

    private static string? NewestLoadable(string dir, Action<string>? warn)
    {
        foreach (var (_, path) in List(dir).Reverse())
        {
            if (Problem(path) is not { } problem) return path;
            warn?.Invoke($"warning: skipping the checkpoint '{path}', it cannot be loaded ({problem}); trying the one before it");
        }
        return null;
    }

    /// <summary>
    /// After resuming at <paramref name="step"/>, checkpoints of later steps in the output folder belong to the
    /// interrupted run's abandoned future (or could not be loaded). They are renamed <c>checkpoint-N.superseded-*</c>,
    /// not deleted, so the resumed run's own checkpoints are neither replaced by nor pruned in favour of them.
    /// </summary>
    public void SetAsideLaterThan(int step)
    {
        foreach (var (s, path) in List(OutputDir).Where(c => c.Step > step))
        {
            var aside = $"{path}.superseded-{DateTime.Now:yyyyMMdd-HHmmss}";
            try
            {
                Directory.Move(path, aside);
                Warn?.Invoke($"note: checkpoint-{s} is newer than the resumed step {step}; moved to '{aside}'");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new StorageError($"cannot move the checkpoint '{path}' (newer than the resumed step {step}) aside to '{aside}': {e.Message}", e);
            }
        }
    }

    /// <summary>
    /// Restores a checkpoint into a method whose <see cref="TrainingMethod.OnTrainStart"/> and callbacks'
    /// OnTrainStart have run (spec 8.3): role weights, optimizers and schedulers, callback state, loader position,
    /// and — last — every generator. Returns the checkpoint's step.
    /// </summary>
    public int Load(string checkpoint, TrainingMethod method, IReadOnlyList<TrainCallback> callbacks, IBatchSource data)
    {
        // Everything read here is copied into its owner (weights, moments, shadows, generator states) or disposed with
        // the loaded state; the owners detach what they keep, and the scope frees every conversion in between.
        using var scope = NewDisposeScope();
        try { return LoadCore(checkpoint, method, callbacks, data); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or FormatException)
        {
            throw new StorageError($"cannot load the checkpoint '{checkpoint}': {e.Message}", e);
        }
    }

    /// <summary>Copies <paramref name="weights"/> into the role's trainable parameters; names, shapes and count must match.</summary>
    private static void LoadTrainable(Models.ModelBase model, IReadOnlyDictionary<string, Tensor> weights, string source)
    {
        var target = FastVideo.Models.Layers.LoraAdapters.TrainableState(model.Transformer);
        var missing = target.Keys.Where(k => !weights.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var unexpected = weights.Keys.Where(k => !target.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var shape = target.Where(kv => weights.TryGetValue(kv.Key, out var w) && !w.shape.SequenceEqual(kv.Value.shape))
            .Select(kv => $"{kv.Key}: model [{string.Join(", ", kv.Value.shape)}], checkpoint [{string.Join(", ", weights[kv.Key].shape)}]").ToList();
        if (missing.Count + unexpected.Count + shape.Count > 0)
            throw new UserError($"the LoRA adapters in '{source}' do not fit role '{model.Role}' (rank, alpha or target_modules changed?): " +
                                $"{missing.Count} missing, {unexpected.Count} unexpected, {shape.Count} with another shape" +
                                (missing.Count > 0 ? $"\n  missing: {string.Join(", ", missing.Take(10))}" : "") +
                                (unexpected.Count > 0 ? $"\n  unexpected: {string.Join(", ", unexpected.Take(10))}" : "") +
                                (shape.Count > 0 ? $"\n  shape: {string.Join(", ", shape.Take(10))}" : ""));
        using var noGrad = no_grad();
        foreach (var (k, p) in target) p.copy_(weights[k]);
    }

    private int LoadCore(string checkpoint, TrainingMethod method, IReadOnlyList<TrainCallback> callbacks, IBatchSource data)
    {
        var meta = JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, MetadataFile)))!;
        if (meta["format"]?.GetValue<string>() != Format)
            throw new UserError($"checkpoint '{checkpoint}': unknown format '{meta["format"]}' (expected {Format})");
        int step = meta["step"]!.GetValue<int>();

        var loraRoles = LoraRoles(meta);
        foreach (var model in method.TrainableRoles)
        {
            if (model.IsLora != loraRoles.Contains(model.Role))
                throw new UserError($"checkpoint '{checkpoint}': role '{model.Role}' was trained {(model.IsLora ? "without" : "with")} LoRA, " +
                                    $"but the recipe {(model.IsLora ? "enables" : "does not enable")} roles.{model.Role}.lora; resume with the recipe it was trained with");
            var path = RoleFile(checkpoint, model.Role, loraRoles);
            if (!File.Exists(path)) throw new UserError($"checkpoint '{checkpoint}' has no weights for role '{model.Role}' ({path})");
            if (!model.IsLora)
            {
                // Streamed from the file into the live parameters (the optimizer holds them): no copy of the weights in memory.
                StateDict.LoadInto(model.Transformer, WeightSet.FromFile(path), path);
                continue;
            }
            // A LoRA role: its trainable tensors (the adapters, small) exactly; the frozen base is the one it was built with.
            var weights = SafeTensors.Load(path);
            try
            {
                var saved = SafeTensors.ReadMetadata(path).GetValueOrDefault("lora_alpha");
                var alpha = model.Lora!.EffectiveAlpha.ToString(System.Globalization.CultureInfo.InvariantCulture);
                if (saved is not null && saved != alpha)
                    throw new UserError($"checkpoint '{checkpoint}': role '{model.Role}' was trained with lora.alpha {saved}, the recipe gives {alpha}");
                LoadTrainable(model, weights, path);
            }
            finally { foreach (var w in weights.Values) w.Dispose(); }
        }

        using var state = new TrainingState(checkpoint);
        foreach (var (k, t) in SafeTensors.Load(Path.Combine(checkpoint, StateTensors))) state.Tensors[k] = t.DetachFromDisposeScope();
        foreach (var (k, v) in JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, StateValues)))!.AsObject())
            state.Values[k] = v?.DeepClone();
        var root = state.Root;
        method.LoadState(root);
        foreach (var cb in callbacks) cb.LoadState(root.Scope("callbacks").Scope(cb.Name));
        data.Restore(root.GetNode("data"));
        // Generators last, after everything that could draw from them (spec 8.3 step 8).
        foreach (var (name, g) in method.Generators) g.set_state(root.Scope("rng").GetTensor(name));

        LastSavedStep = step;
        LastCheckpoint = checkpoint;
        return step;
    }
}

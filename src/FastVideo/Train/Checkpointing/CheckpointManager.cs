using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using FastVideo.Configs;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using FastVideo.Train.State;
using FastVideo.Weights;

namespace FastVideo.Train.Checkpointing;

/// <summary>
/// Training checkpoints (spec 8). Layout of <c>&lt;output_dir&gt;/checkpoint-&lt;step&gt;/</c>:
/// <code>
///   &lt;role&gt;/transformer/diffusion_pytorch_model.safetensors   every trainable role's weights (Diffusers keys)
///   training_state.safetensors   optimizer moments, callback tensors (EMA shadows), generator states
///   training_state.json          optimizer steps, scheduler counters, loader state, callback values
///   recipe.yaml                  the resolved recipe
///   metadata.json                {"step", "roles", "format"}: written last, so its presence marks a whole checkpoint
/// </code>
/// A checkpoint is built in <c>checkpoint-&lt;step&gt;.tmp-*</c> and renamed into place, so a crash mid-write
/// leaves the previous checkpoints untouched; only the newest <c>keep_last</c> are kept.
/// </summary>
public sealed partial class CheckpointManager
{
    public const string Format = "fastvideo-sharp-checkpoint/1";
    public const string WeightsFile = "diffusion_pytorch_model.safetensors";
    private const string StateTensors = "training_state.safetensors";
    private const string StateValues = "training_state.json";

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

    [GeneratedRegex(@"^checkpoint-(\d+)$")]
    private static partial Regex CheckpointName();

    public static string PathFor(string outputDir, int step) => Path.Combine(outputDir, $"checkpoint-{step}");

    public static string RoleWeightsPath(string checkpoint, string role) => Path.Combine(checkpoint, role, "transformer", WeightsFile);

    public bool ShouldSave(int step) => SaveSteps > 0 && step % SaveSteps == 0 && LastSavedStep != step;

    public string Save(int step, TrainingMethod method, IReadOnlyList<TrainCallback> callbacks, IBatchSource data)
    {
        Directory.CreateDirectory(OutputDir);
        var final = PathFor(OutputDir, step);
        var tmp = $"{final}.tmp-{Guid.NewGuid():N}";
        try
        {
            Directory.CreateDirectory(tmp);
            var roles = method.TrainableRoles.ToList();
            foreach (var model in roles)
            {
                var path = RoleWeightsPath(tmp, model.Role);
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                StateDict.SaveModule(model.Transformer, path);
                AfterFileWritten?.Invoke(path);
            }

            using (var state = new TrainingState())
            {
                var root = state.Root;
                method.SaveState(root);
                foreach (var cb in callbacks) cb.SaveState(root.Scope("callbacks").Scope(cb.Name));
                root.PutNode("data", data.GetState());
                foreach (var (name, g) in method.Generators) root.Scope("rng").PutTensor(name, g.get_state());
                Write(Path.Combine(tmp, StateTensors), p => SafeTensors.Save(p, state.Tensors));
                Write(Path.Combine(tmp, StateValues), p => File.WriteAllText(p, state.Values.ToJsonString(new JsonSerializerOptions { WriteIndented = true })));
            }
            Write(Path.Combine(tmp, "recipe.yaml"), p => File.WriteAllText(p, RecipePrinter.ToYaml(_config.Raw)));
            var meta = new JsonObject
            {
                ["format"] = Format,
                ["step"] = step,
                ["roles"] = new JsonArray(roles.Select(r => (JsonNode)r.Role).ToArray()),
            };
            Write(Path.Combine(tmp, "metadata.json"), p => File.WriteAllText(p, meta.ToJsonString(new JsonSerializerOptions { WriteIndented = true })));

            // Replace a same-step checkpoint from an earlier run: move it aside first, so one complete copy always exists.
            string? aside = null;
            if (Directory.Exists(final))
            {
                aside = $"{final}.old-{Guid.NewGuid():N}";
                Directory.Move(final, aside);
            }
            Directory.Move(tmp, final);
            if (aside is not null) Directory.Delete(aside, recursive: true);
        }
        catch
        {
            try { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); } catch (IOException) { }
            throw;
        }
        LastSavedStep = step;
        LastCheckpoint = final;
        PruneOld();
        return final;
    }

    private void Write(string path, Action<string> write)
    {
        write(path);
        AfterFileWritten?.Invoke(path);
    }

    /// <summary>Deletes all but the newest <see cref="KeepLast"/> checkpoints (0 = keep all).</summary>
    private void PruneOld()
    {
        if (KeepLast <= 0) return;
        foreach (var (_, dir) in List(OutputDir).OrderByDescending(c => c.Step).Skip(KeepLast))
            Directory.Delete(dir, recursive: true);
    }

    /// <summary>Complete checkpoints (with metadata.json) directly under <paramref name="dir"/>.</summary>
    public static IReadOnlyList<(int Step, string Path)> List(string dir)
    {
        if (!Directory.Exists(dir)) return [];
        return Directory.GetDirectories(dir)
            .Select(d => (Match: CheckpointName().Match(Path.GetFileName(d)), Dir: d))
            .Where(x => x.Match.Success && File.Exists(Path.Combine(x.Dir, "metadata.json")))
            .Select(x => (int.Parse(x.Match.Groups[1].Value), x.Dir))
            .OrderBy(x => x.Item1).ToList();
    }

    /// <summary>
    /// Spec 8.2: "" → no resume; "latest" → the newest checkpoint under <paramref name="outputDir"/> (none → a fresh
    /// start); a checkpoint folder; or a run folder (its newest checkpoint).
    /// </summary>
    public static string? ResolveResume(string spec, string outputDir)
    {
        const string key = "training.checkpoint.resume_from_checkpoint";
        if (string.IsNullOrEmpty(spec)) return null;
        if (spec.Equals("latest", StringComparison.OrdinalIgnoreCase))
            return List(outputDir).LastOrDefault().Path;
        if (!Directory.Exists(spec)) throw new UserError($"{key}: '{spec}' does not exist");
        if (CheckpointName().IsMatch(Path.GetFileName(Path.TrimEndingDirectorySeparator(spec))))
            return File.Exists(Path.Combine(spec, "metadata.json")) ? spec
                : throw new UserError($"{key}: '{spec}' is not a complete checkpoint (no metadata.json)");
        return List(spec).LastOrDefault().Path
            ?? throw new UserError($"{key}: '{spec}' holds no complete checkpoint-<step> folder");
    }

    /// <summary>
    /// Restores a checkpoint into a method whose <see cref="TrainingMethod.OnTrainStart"/> and callbacks'
    /// OnTrainStart have run (spec 8.3): role weights, optimizers and schedulers, callback state, loader position,
    /// and — last — every generator. Returns the checkpoint's step.
    /// </summary>
    public int Load(string checkpoint, TrainingMethod method, IReadOnlyList<TrainCallback> callbacks, IBatchSource data)
    {
        var meta = JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, "metadata.json")))!;
        if (meta["format"]?.GetValue<string>() != Format)
            throw new UserError($"checkpoint '{checkpoint}': unknown format '{meta["format"]}' (expected {Format})");
        int step = meta["step"]!.GetValue<int>();

        foreach (var model in method.TrainableRoles)
        {
            var path = RoleWeightsPath(checkpoint, model.Role);
            if (!File.Exists(path)) throw new UserError($"checkpoint '{checkpoint}' has no weights for role '{model.Role}' ({path})");
            var weights = SafeTensors.Load(path);
            try { StateDict.LoadInto(model.Transformer, weights, path); }
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

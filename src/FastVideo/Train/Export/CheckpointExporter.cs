using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using FastVideo.Configs;
using FastVideo.Models.Layers;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Models;
using FastVideo.Weights;
using static TorchSharp.torch;

namespace FastVideo.Train.Export;

/// <summary>What to export: one role of one checkpoint, optionally its EMA weights, into a new folder.</summary>
public sealed record ExportRequest
{
    /// <summary>A <c>checkpoint-&lt;step&gt;</c> folder, or a run folder (its newest complete checkpoint).</summary>
    public required string Checkpoint { get; init; }
    public required string Role { get; init; }
    public required string OutputDir { get; init; }
    /// <summary>Export the EMA shadow weights (student only) instead of the live weights.</summary>
    public bool Ema { get; init; }
    /// <summary>Replace an existing non-empty <see cref="OutputDir"/>.</summary>
    public bool Overwrite { get; init; }
    /// <summary>For a LoRA role: the merged Diffusers folder or the adapter alone; null = merged. Refused for other roles.</summary>
    public LoraExportFormat? LoraFormat { get; init; }
}

/// <summary>How a LoRA role is exported.</summary>
public enum LoraExportFormat
{
    /// <summary>A Diffusers model folder whose transformer weights are base + (alpha/rank)·B A (float32).</summary>
    Merged,
    /// <summary>Only <c>pytorch_lora_weights.safetensors</c> with Diffusers' Wan keys, for <c>pipe.load_lora_weights</c>.</summary>
    Adapter,
}

/// <summary>What an export wrote. <paramref name="LoraFormat"/> is null for a role trained without LoRA.</summary>
public sealed record ExportResult(
    string Checkpoint, int Step, string Role, bool Ema, string OutputDir, string BaseModel,
    int Tensors, string WeightsPath, FolderCopy.Stats Copied, LoraExportFormat? LoraFormat = null);

/// <summary>
/// Spec 8.4 (dcp_to_diffusers) for this port's checkpoints: writes one role of a training checkpoint as a Diffusers
/// folder that <c>fastvideo generate --model</c> (and the family that trained it)
/// loads. The role's base model (<c>roles.&lt;role&gt;.init_from</c> of the checkpoint's recipe) is copied with hard
/// links where possible, minus its transformer weights; then <c>transformer/config.json</c> (the base model's) and
/// <c>transformer/diffusion_pytorch_model.safetensors</c> (the checkpoint's weights, Diffusers key names, the master
/// dtype) are written. Everything goes into a temporary sibling folder renamed into place at the end, so a failed
/// export leaves nothing behind. Unlike upstream, nothing is rebuilt or trained: the checkpoint already stores each
/// trainable role's weights under Diffusers names, and only the key set and shapes are checked against the base model.
/// A LoRA role's checkpoint holds its adapters only: merged export adds (alpha/rank)·B A to the role's base weights
/// (init_from, or its transformer_override_safetensor) as the model held them, in float32; adapter export writes
/// <c>pytorch_lora_weights.safetensors</c> alone (see <see cref="LoraExportFormat"/>).
/// </summary>
public static partial class CheckpointExporter
{
    public const string TransformerFolder = "transformer";

    /// <summary>Test hook: called with the temporary folder once it is complete, just before it is renamed into place.</summary>
    internal static Action<string>? BeforeRename { get; set; }

    /// <summary>A checkpoint folder as is (it must be loadable), or the newest loadable checkpoint of a run folder.</summary>
    public static string ResolveCheckpoint(string path, TextWriter? log = null)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new UserError("export: no checkpoint given");
        return CheckpointManager.Resolve(path, "export", log is null ? null : log.WriteLine);
    }

    public static ExportResult Export(ExportRequest request, IFamilyCatalog? families = null, TextWriter? log = null)
    {
        if (string.IsNullOrWhiteSpace(request.Role)) throw new UserError("export: no role given");
        if (string.IsNullOrWhiteSpace(request.OutputDir)) throw new UserError("export: no output folder given");

        var checkpoint = ResolveCheckpoint(request.Checkpoint, log);
        var (step, savedRoles) = ReadMetadata(checkpoint);
        var config = ReadRecipe(checkpoint, families ?? ModelFamilyRegistry.Default);
        var role = request.Role;
        var roleConfig = CheckRole(checkpoint, config, savedRoles, role);
        if (request.Ema && role != "student")
            throw new UserError($"export: --ema: EMA weights exist only for the student (callbacks.ema tracks the student), not for role '{role}'");
        bool isLora = ReadLoraRoles(checkpoint).Contains(role);
        if (isLora != roleConfig.Lora.Enable)
            throw new UserError($"export: checkpoint '{checkpoint}' {(isLora ? "holds LoRA adapters" : "holds full weights")} for role '{role}' " +
                                $"but its recipe says roles.{role}.lora.enable: {(roleConfig.Lora.Enable ? "true" : "false")}");
        if (!isLora && request.LoraFormat is not null)
            throw new UserError($"export: --lora-format: role '{role}' was not trained with LoRA (roles.{role}.lora.enable is false), so there is no adapter to " +
                                "merge or write; export without --lora-format");
        LoraExportFormat? loraFormat = isLora ? request.LoraFormat ?? LoraExportFormat.Merged : null;

        var output = Path.TrimEndingDirectorySeparator(Path.GetFullPath(request.OutputDir));
        CheckOutput(output, request.Overwrite);

        DiffusersModelFolder baseModel;
        try { baseModel = DiffusersModelFolder.Resolve(roleConfig.InitFrom); }
        catch (UserError e) { throw new UserError($"export: the base model of role '{role}' (roles.{role}.init_from in {checkpoint}'s recipe) cannot be used: {e.Message}", e); }
        var baseRoot = baseModel.Root is not null && SamePath(Path.Combine(baseModel.Root, TransformerFolder), baseModel.ComponentFolder)
            ? baseModel.Root : null;
        foreach (var (what, dir) in new[] { ("the checkpoint", checkpoint), ("the base model", baseRoot ?? baseModel.ComponentFolder) })
            if (Overlaps(output, dir))
                throw new UserError($"export: the output folder '{output}' overlaps {what} '{dir}'; choose another --out");

        log?.WriteLine($"export: role '{role}'{(request.Ema ? " (EMA weights)" : "")}{(isLora ? $" (LoRA, {(loraFormat == LoraExportFormat.Merged ? "merged" : "adapter only")})" : "")} " +
                       $"of {checkpoint} (step {step}); base model {baseRoot ?? baseModel.ComponentFolder}");

        var weightsPath = isLora ? CheckpointManager.RoleAdapterPath(checkpoint, role) : CheckpointManager.RoleWeightsPath(checkpoint, role);
        if (!File.Exists(weightsPath))
            throw new UserError($"export: checkpoint '{checkpoint}' lists role '{role}' but has no weights file {weightsPath}");
        var weights = SafeTensors.Load(weightsPath);
        var extra = new List<Tensor>();
        try
        {
            if (!isLora) CheckAgainstBase(weights, weightsPath, baseModel);
            if (request.Ema) ApplyEma(checkpoint, step, config, weights, extra);
            var lora = roleConfig.Lora;
            if (loraFormat == LoraExportFormat.Adapter)
                return WriteAdapter(request, checkpoint, step, role, output, baseRoot ?? baseModel.ComponentFolder,
                    LoraAdapters.ToDiffusers(weights, lora.Scale, weightsPath), lora, log);
            if (loraFormat == LoraExportFormat.Merged)
            {
                // The frozen base as the role loaded it (its override file if any), in the dtype it was held in, plus B A.
                var (baseWeights, baseSource) = ModelBase.ResolveBaseWeights(roleConfig, baseModel);
                Dictionary<string, Tensor> merged;
                try { merged = LoraAdapters.Merge(baseWeights, weights, lora.Scale, Precision.Parse(config.Training.DitPrecision), $"{weightsPath} + {baseSource}"); }
                finally { foreach (var t in baseWeights.Values) t.Dispose(); }
                extra.AddRange(weights.Values);
                weights = merged;
                CheckAgainstBase(weights, baseSource, baseModel);
            }

            var tmp = $"{output}.tmp-{Guid.NewGuid():N}";
            try
            {
                var outTransformer = Path.Combine(tmp, TransformerFolder);
                FolderCopy.Stats copied;
                if (baseRoot is not null)
                    copied = FolderCopy.Copy(baseRoot, tmp, p => IsTransformerFileToReplace(p, baseModel.ComponentFolder));
                else
                    copied = FolderCopy.Copy(baseModel.ComponentFolder, outTransformer, p => IsTransformerFileToReplace(p, baseModel.ComponentFolder));
                Directory.CreateDirectory(outTransformer);
                File.Copy(baseModel.ConfigPath, Path.Combine(outTransformer, DiffusersModelFolder.ConfigFile));
                var outWeights = Path.Combine(outTransformer, CheckpointManager.WeightsFile);
                var metadata = ExportMetadata(checkpoint, step, role, request.Ema, isLora ? roleConfig.Lora : null);
                if (isLora) metadata["fastvideo_lora_merged"] = "true";
                SafeTensors.Save(outWeights, weights, metadata);

                BeforeRename?.Invoke(tmp);
                Publish(tmp, output, request.Overwrite);

                var result = new ExportResult(checkpoint, step, role, request.Ema, output, baseRoot ?? baseModel.ComponentFolder,
                    weights.Count, Path.Combine(output, TransformerFolder, CheckpointManager.WeightsFile), copied, loraFormat);
                log?.WriteLine($"export: wrote {output} ({weights.Count} tensors; base files: {copied.Linked} hard-linked, {copied.Copied} copied)");
                return result;
            }
            catch
            {
                try { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
                throw;
            }
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
            foreach (var t in extra) t.Dispose();
        }
    }

    /// <summary>Moves the finished temporary folder into place (replacing an existing one only with overwrite).</summary>
    /// <summary>The safetensors metadata every export writes: where the weights came from (and the LoRA setting).</summary>
    private static Dictionary<string, string> ExportMetadata(string checkpoint, int step, string role, bool ema, LoraOptions? lora)
    {
        var ci = System.Globalization.CultureInfo.InvariantCulture;
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["fastvideo_checkpoint"] = checkpoint,
            ["fastvideo_step"] = step.ToString(ci),
            ["fastvideo_role"] = role,
            ["fastvideo_ema"] = ema ? "true" : "false",
        };
        if (lora is not null)
        {
            metadata["fastvideo_lora_rank"] = lora.Rank!.Value.ToString(ci);
            metadata["fastvideo_lora_alpha"] = lora.EffectiveAlpha.ToString(ci);
        }
        return metadata;
    }

    private static void Publish(string tmp, string output, bool overwrite)
    {
        // Re-check at the end: another process may have created the folder meanwhile.
        CheckOutput(output, overwrite);
        string? aside = null;
        if (Directory.Exists(output))
        {
            aside = $"{output}.old-{Guid.NewGuid():N}";
            Directory.Move(output, aside);
        }
        Directory.Move(tmp, output);
        if (aside is not null) Directory.Delete(aside, recursive: true);
    }

    /// <summary>
    /// <c>--lora-format adapter</c>: <c>&lt;out&gt;/pytorch_lora_weights.safetensors</c> alone, with Diffusers' Wan keys
    /// (<c>transformer.blocks.N.attn1.to_q.lora_A.weight</c>, ...) and alpha/rank multiplied into B, so that
    /// <c>WanPipeline.load_lora_weights(out)</c> on the base model reproduces the merged model.
    /// </summary>
    private static ExportResult WriteAdapter(ExportRequest request, string checkpoint, int step, string role, string output, string baseModel,
        List<KeyValuePair<string, Tensor>> tensors, LoraOptions lora, TextWriter? log)
    {
        var tmp = $"{output}.tmp-{Guid.NewGuid():N}";
        try
        {
            Directory.CreateDirectory(tmp);
            var metadata = ExportMetadata(checkpoint, step, role, request.Ema, lora);
            metadata["fastvideo_base_model"] = baseModel;
            // The file has no PEFT metadata (lora_adapter_metadata), so Diffusers scales by 1: alpha/rank is in B.
            metadata["fastvideo_lora_scale_in_b"] = lora.Scale.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
            SafeTensors.Save(Path.Combine(tmp, LoraAdapters.DiffusersFileName), tensors, metadata);
            BeforeRename?.Invoke(tmp);
            Publish(tmp, output, request.Overwrite);
        }
        catch
        {
            try { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
        finally
        {
            foreach (var (_, t) in tensors) t.Dispose();
        }
        log?.WriteLine($"export: wrote {Path.Combine(output, LoraAdapters.DiffusersFileName)} ({tensors.Count} tensors, LoRA rank {lora.Rank}, " +
                       $"alpha {lora.EffectiveAlpha}; alpha/rank = {lora.Scale:R} is multiplied into lora_B) for the base model {baseModel}");
        return new ExportResult(checkpoint, step, role, request.Ema, output, baseModel, tensors.Count,
            Path.Combine(output, LoraAdapters.DiffusersFileName), new FolderCopy.Stats(0, 0, 0), LoraExportFormat.Adapter);
    }

    /// <summary>The roles whose checkpoint weights are LoRA adapters.</summary>
    public static IReadOnlyList<string> ReadLoraRoles(string checkpoint) =>
        CheckpointManager.LoraRoles(JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, CheckpointManager.MetadataFile)))!);

    /// <summary>The checkpoint's step and the roles whose weights it holds (the trainable ones).</summary>
    public static (int Step, IReadOnlyList<string> Roles) ReadMetadata(string checkpoint)
    {
        var path = Path.Combine(checkpoint, "metadata.json");
        JsonNode meta;
        try { meta = JsonNode.Parse(File.ReadAllText(path)) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new UserError($"export: '{path}' is not valid JSON: {e.Message}", e); }
        var format = meta["format"]?.GetValue<string>();
        if (format != CheckpointManager.Format)
            throw new UserError($"export: checkpoint '{checkpoint}' has format '{format}', expected {CheckpointManager.Format}");
        var roles = meta["roles"]?.AsArray().Select(r => r!.GetValue<string>()).ToList() ?? [];
        return (meta["step"]!.GetValue<int>(), roles);
    }

    private static RunConfig ReadRecipe(string checkpoint, IFamilyCatalog families)
    {
        var path = Path.Combine(checkpoint, "recipe.yaml");
        if (!File.Exists(path)) throw new UserError($"export: checkpoint '{checkpoint}' has no recipe.yaml");
        try { return RecipeLoader.LoadText(File.ReadAllText(path), path, [], families); }
        catch (UserError e) { throw new UserError($"export: the recipe saved with checkpoint '{checkpoint}' does not load: {e.Message}", e); }
    }

    private static RoleConfig CheckRole(string checkpoint, RunConfig config, IReadOnlyList<string> savedRoles, string role)
    {
        string Available() => string.Join(", ", config.Roles.Select(kv =>
            $"{kv.Key} ({(savedRoles.Contains(kv.Key) ? "trainable" : "frozen, not in the checkpoint")})"));
        if (!config.Roles.TryGetValue(role, out var rc))
            throw new UserError($"export: checkpoint '{checkpoint}' has no role '{role}'; its roles: {Available()}. " +
                                $"Exportable: {string.Join(", ", savedRoles)}");
        if (!savedRoles.Contains(role))
            throw new UserError($"export: role '{role}' was frozen (trainable: false) in checkpoint '{checkpoint}', so the checkpoint holds " +
                                $"no weights for it; they are unchanged from its init_from '{rc.InitFrom}'. Exportable roles: {string.Join(", ", savedRoles)}");
        if (string.IsNullOrWhiteSpace(rc.InitFrom))
            throw new UserError($"export: role '{role}' has no init_from in the recipe of checkpoint '{checkpoint}'");
        return rc;
    }

    private static void CheckOutput(string output, bool overwrite)
    {
        if (File.Exists(output)) throw new UserError($"export: --out '{output}' is a file; expected a folder to create");
        if (Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any() && !overwrite)
            throw new UserError($"export: --out '{output}' exists and is not empty; pass --overwrite to replace it");
    }

    /// <summary>The base transformer's own weights (any format) and config.json: the export writes its own.</summary>
    private static bool IsTransformerFileToReplace(string path, string componentFolder)
    {
        if (!SamePath(Path.GetDirectoryName(path)!, componentFolder)) return false;
        var name = Path.GetFileName(path);
        return name == DiffusersModelFolder.ConfigFile
            || name.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".safetensors.index.json", StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".bin.index.json", StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".pt", StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".pth", StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>The checkpoint's weights must carry exactly the base model's tensor names and shapes (Diffusers names).</summary>
    private static void CheckAgainstBase(IReadOnlyDictionary<string, Tensor> weights, string weightsPath, DiffusersModelFolder baseModel)
    {
        var baseShapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var f in baseModel.WeightFiles)
            foreach (var (k, info) in SafeTensors.ReadHeader(f))
                baseShapes[k] = info.Shape;
        var missing = baseShapes.Keys.Where(k => !weights.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var unexpected = weights.Keys.Where(k => !baseShapes.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var shape = weights.Where(kv => baseShapes.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value.shape))
            .Select(kv => $"{kv.Key}: base [{string.Join(", ", baseShapes[kv.Key])}], checkpoint [{string.Join(", ", kv.Value.shape)}]").ToList();
        if (missing.Count + unexpected.Count + shape.Count == 0) return;
        static string Cap(List<string> l) => string.Join(", ", l.Take(10)) + (l.Count > 10 ? $", ... and {l.Count - 10} more" : "");
        throw new UserError($"export: the weights in '{weightsPath}' do not match the base model {baseModel} " +
            $"({missing.Count} missing, {unexpected.Count} unexpected, {shape.Count} with another shape)" +
            (missing.Count > 0 ? $"\n  missing: {Cap(missing)}" : "") +
            (unexpected.Count > 0 ? $"\n  unexpected: {Cap(unexpected)}" : "") +
            (shape.Count > 0 ? $"\n  shape: {Cap(shape)}" : ""));
    }

    /// <summary>
    /// Replaces the student's trainable tensors by the EMA shadows of the checkpoint's EMA callback, converted to each
    /// tensor's dtype (as <c>EmaCallback.Swap</c> does when it copies them into the live parameters).
    /// </summary>
    private static void ApplyEma(string checkpoint, int step, RunConfig config, Dictionary<string, Tensor> weights, List<Tensor> owned)
    {
        var valuesPath = Path.Combine(checkpoint, "training_state.json");
        var tensorsPath = Path.Combine(checkpoint, "training_state.safetensors");
        if (!File.Exists(valuesPath) || !File.Exists(tensorsPath))
            throw new UserError($"export: --ema: checkpoint '{checkpoint}' has no training state (training_state.json/.safetensors)");
        var values = JsonNode.Parse(File.ReadAllText(valuesPath))!.AsObject();
        var header = SafeTensors.ReadHeader(tensorsPath);

        // The EMA callback is the one whose state has "started" and "student_ema.*" tensors (built-in name: "ema").
        string? name = null;
        foreach (var (cb, _) in config.Callbacks)
        {
            var prefix = $"callbacks.{cb}.student_ema.";
            if (values.ContainsKey($"callbacks.{cb}.started") && header.Keys.Any(k => k.StartsWith(prefix, StringComparison.Ordinal)))
            { name = cb; break; }
        }
        if (name is null)
            throw new UserError($"export: --ema: checkpoint '{checkpoint}' has no EMA state (its recipe has no callbacks.ema); " +
                                "export without --ema, or train with an ema callback");
        if (values[$"callbacks.{name}.started"]?.GetValue<bool>() != true)
        {
            var startIter = (config.Callbacks.First(c => c.Key == name).Value as Callbacks.EmaOptions)?.StartIter;
            throw new UserError($"export: --ema: EMA never started in checkpoint '{checkpoint}' (step {step}" +
                                (startIter is not null ? $", callbacks.{name}.start_iter {startIter}" : "") +
                                "); export without --ema or from a later checkpoint");
        }

        var shadowPrefix = $"callbacks.{name}.student_ema.";
        var shadows = SafeTensors.Load(tensorsPath, keyFilter: k => k.StartsWith(shadowPrefix, StringComparison.Ordinal));
        try
        {
            foreach (var (key, shadow) in shadows)
            {
                var param = key[shadowPrefix.Length..];
                if (!weights.TryGetValue(param, out var live))
                    throw new UserError($"export: --ema: checkpoint '{checkpoint}' has an EMA weight '{param}' that the student's weights lack");
                if (!live.shape.SequenceEqual(shadow.shape))
                    throw new UserError($"export: --ema: EMA weight '{param}' has shape [{string.Join(", ", shadow.shape)}], the student's [{string.Join(", ", live.shape)}]");
                weights[param] = shadow.to_type(live.dtype).contiguous();
                owned.Add(live);
            }
        }
        finally
        {
            foreach (var t in shadows.Values)
                if (!weights.Values.Any(w => ReferenceEquals(w, t))) t.Dispose();
        }
    }

    private static bool SamePath(string a, string b) =>
        string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(a)), Path.TrimEndingDirectorySeparator(Path.GetFullPath(b)),
            OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);

    /// <summary>True if one folder is the other or inside it.</summary>
    private static bool Overlaps(string a, string b)
    {
        var x = Path.TrimEndingDirectorySeparator(Path.GetFullPath(a)) + Path.DirectorySeparatorChar;
        var y = Path.TrimEndingDirectorySeparator(Path.GetFullPath(b)) + Path.DirectorySeparatorChar;
        var cmp = OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        return x.StartsWith(y, cmp) || y.StartsWith(x, cmp);
    }
}

using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using FastVideo.Configs;
using FastVideo.Weights;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>
/// LoRA on a whole transformer (FastVideo fastvideo/train/utils/lora.py): choosing the layers, adding the adapters,
/// merging them into the base weights (in a module or in weight files) and the Diffusers adapter file
/// (<c>pytorch_lora_weights.safetensors</c>, the keys <c>WanLoraLoaderMixin.load_lora_weights</c> reads).
/// Adapter tensors are named as the module names them: <c>&lt;layer&gt;.lora_A.weight</c> [rank, in] and
/// <c>&lt;layer&gt;.lora_B.weight</c> [out, rank]; their layer's base weight is <c>&lt;layer&gt;.weight</c>.
/// </summary>
public static partial class LoraAdapters
{
    public const string LoraA = ".lora_A.weight";
    public const string LoraB = ".lora_B.weight";

    /// <summary>The file name Diffusers' <c>load_lora_weights(folder)</c> looks for.</summary>
    public const string DiffusersFileName = "pytorch_lora_weights.safetensors";

    /// <summary>The prefix of the transformer's keys in a Diffusers LoRA file.</summary>
    public const string DiffusersPrefix = "transformer.";

    /// <summary>The layers of <paramref name="module"/> that can take an adapter, by module name, in module order.</summary>
    public static IReadOnlyList<(string Name, LoraLinear Layer)> CapableLayers(nn.Module module) =>
        module.named_modules().Where(m => m.module is LoraLinear).Select(m => (m.name, (LoraLinear)m.module)).ToList();

    /// <summary>
    /// Upstream's choice of layers: those whose module name contains one of the target names (substrings), among the
    /// <paramref name="layerNames"/> that <paramref name="capable"/> (the family's choice; null = all) lets take an
    /// adapter. <paramref name="upstreamName"/> gives a layer's name in FastVideo's own DiT where it differs (a target
    /// may name either). With upstream's default list, names a family does not have are skipped; an explicitly given
    /// name that matches no LoRA-capable layer is an error (it would silently adapt nothing), unless it is FastVideo's
    /// name of layers the family keeps from LoRA as FastVideo does (the recipe's notes say so); so is a choice of no
    /// layer at all.
    /// </summary>
    public static IReadOnlyList<string> SelectTargets(IReadOnlyList<string> layerNames, LoraOptions options, string what,
        Func<string, bool>? capable = null, Func<string, string?>? upstreamName = null)
    {
        var targets = options.EffectiveTargetModules;
        var capableNames = layerNames.Where(n => capable?.Invoke(n) ?? true).ToList();
        bool Upstream(string n, string t) => upstreamName?.Invoke(n) is { } u && u.Contains(t, StringComparison.Ordinal);
        bool Matches(string n, string t) => n.Contains(t, StringComparison.Ordinal) || Upstream(n, t);
        string Capable() => string.Join(", ", capableNames.Select(n => BlockIndex().Replace(n, "blocks.N.")).Distinct());
        if (options.TargetModules is not null)
            foreach (var t in targets)
                if (!capableNames.Any(n => Matches(n, t)) && !layerNames.Except(capableNames).Any(n => Upstream(n, t)))
                    throw new UserError($"{what}.target_modules: '{t}' matches no LoRA-capable layer (module names containing it are adapted; " +
                                        $"the LoRA-capable layers are {Capable()})");
        var chosen = capableNames.Where(n => targets.Any(t => Matches(n, t))).ToList();
        if (chosen.Count == 0)
            throw new UserError($"{what}.target_modules: no LoRA-capable layer matches [{string.Join(", ", targets)}] (the LoRA-capable layers are {Capable()})");
        return chosen;
    }

    [GeneratedRegex(@"(?<=^|\.|_)blocks\.\d+\.")]
    private static partial Regex BlockIndex();

    /// <summary>
    /// Freezes every parameter of <paramref name="module"/> and adds a trainable float32 adapter (rank, alpha of
    /// <paramref name="options"/>; A drawn from <paramref name="generator"/>, B = 0) to each chosen layer, in module
    /// order. Returns the adapted layers' names. <paramref name="what"/> names the options in errors (<c>roles.student.lora</c>);
    /// <paramref name="capable"/> (a family's choice, by module name) narrows the LoRA-capable layers.
    /// </summary>
    public static IReadOnlyList<string> Enable(nn.Module module, LoraOptions options, Generator generator, string what, Func<string, bool>? capable = null,
        Func<string, string?>? upstreamName = null)
    {
        var all = CapableLayers(module);
        var layers = all.Where(l => capable?.Invoke(l.Name) ?? true).ToList();
        var chosen = SelectTargets(all.Select(l => l.Name).ToList(), options, what, capable, upstreamName).ToHashSet(StringComparer.Ordinal);
        foreach (var p in module.parameters()) p.requires_grad = false;
        int rank = options.Rank ?? throw new UserError($"{what}.rank: required when lora.enable is true");
        foreach (var (name, layer) in layers)
            if (chosen.Contains(name)) layer.AddAdapter(rank, options.EffectiveAlpha, generator);
        return layers.Where(l => chosen.Contains(l.Name)).Select(l => l.Name).ToList();
    }

    /// <summary>The module's trainable parameters by name (the module's own tensors, no copies).</summary>
    public static Dictionary<string, Tensor> TrainableState(nn.Module module) =>
        module.named_parameters().Where(p => p.parameter.requires_grad)
            .ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);

    /// <summary>
    /// The module's state with every adapter merged: <c>&lt;layer&gt;.weight</c> = W + (alpha/rank)·B A in float32 and no
    /// adapter keys; every other tensor as held. New tensors for merged weights, the module's own for the rest.
    /// </summary>
    public static Dictionary<string, Tensor> MergedState(nn.Module module)
    {
        var state = module.state_dict();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (k, v) in state)
            if (!k.EndsWith(LoraA, StringComparison.Ordinal) && !k.EndsWith(LoraB, StringComparison.Ordinal)) result[k] = v;
        foreach (var (name, layer) in CapableLayers(module))
            if (layer.HasAdapter) result[name + ".weight"] = layer.MergedWeight();
        return result;
    }

    /// <summary>The layer names of an adapter state (<c>&lt;layer&gt;.lora_A.weight</c> keys), checked to come in A/B pairs.</summary>
    public static IReadOnlyList<string> AdapterLayers(IReadOnlyDictionary<string, Tensor> adapters, string source)
    {
        var bad = adapters.Keys.Where(k => !k.EndsWith(LoraA, StringComparison.Ordinal) && !k.EndsWith(LoraB, StringComparison.Ordinal)).ToList();
        if (bad.Count > 0)
            throw new UserError($"'{source}': {bad.Count} tensor(s) are not LoRA factors (<layer>.lora_A.weight / <layer>.lora_B.weight): {string.Join(", ", bad.Take(10))}");
        var layers = adapters.Keys.Select(k => k[..^LoraA.Length]).Distinct().Order(StringComparer.Ordinal).ToList();
        foreach (var layer in layers)
        {
            if (!adapters.TryGetValue(layer + LoraA, out var a) || !adapters.TryGetValue(layer + LoraB, out var b))
                throw new UserError($"'{source}': layer '{layer}' has only one of lora_A.weight / lora_B.weight");
            if (a.dim() != 2 || b.dim() != 2 || a.shape[0] != b.shape[1])
                throw new UserError($"'{source}': layer '{layer}' has lora_A [{string.Join(", ", a.shape)}] and lora_B [{string.Join(", ", b.shape)}]; expected [rank, in] and [out, rank]");
        }
        return layers;
    }

    /// <summary>
    /// Merges adapters into base weights at the file level, as <see cref="LoraLinear.MergedWeight"/> does in a model:
    /// every floating-point base tensor is first cast to <paramref name="heldAs"/> (the dtype the trained model held
    /// the frozen base in), then to float32, and each adapted <c>&lt;layer&gt;.weight</c> gets + scale · B A. Returns new
    /// tensors (float32), keyed as <paramref name="baseWeights"/>. Float32 so that updates smaller than a bf16 step survive.
    /// </summary>
    public static Dictionary<string, Tensor> Merge(IReadOnlyDictionary<string, Tensor> baseWeights, IReadOnlyDictionary<string, Tensor> adapters,
        double scale, ScalarType heldAs, string source)
    {
        var layers = AdapterLayers(adapters, source);
        foreach (var layer in layers)
        {
            if (!baseWeights.TryGetValue(layer + ".weight", out var w))
                throw new UserError($"'{source}': the adapter of layer '{layer}' has no base weight '{layer}.weight' in the base model");
            var (a, b) = (adapters[layer + LoraA], adapters[layer + LoraB]);
            if (w.dim() != 2 || w.shape[0] != b.shape[0] || w.shape[1] != a.shape[1])
                throw new UserError($"'{source}': the adapter of layer '{layer}' (A [{string.Join(", ", a.shape)}], B [{string.Join(", ", b.shape)}]) " +
                                    $"does not fit its base weight [{string.Join(", ", w.shape)}]");
        }
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var noGrad = no_grad();
            foreach (var (k, w) in baseWeights)
            {
                using var scope = NewDisposeScope();
                var held = w.is_floating_point() ? w.to_type(heldAs).to_type(ScalarType.Float32) : w;
                result[k] = held.clone().DetachFromDisposeScope();
            }
            foreach (var layer in layers)
            {
                using var scope = NewDisposeScope();
                var key = layer + ".weight";
                var a = adapters[layer + LoraA].to_type(ScalarType.Float32);
                var b = adapters[layer + LoraB].to_type(ScalarType.Float32);
                var merged = result[key].add(b.matmul(a), alpha: scale).DetachFromDisposeScope();
                result[key].Dispose();
                result[key] = merged;
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>
    /// An adapter state as Diffusers' Wan LoRA file: keys <c>transformer.&lt;layer&gt;.lora_A.weight</c> /
    /// <c>...lora_B.weight</c>, float32, with alpha/rank multiplied into B. Diffusers' <c>load_lora_weights</c> for
    /// Wan passes no network alphas and, without PEFT metadata in the file, builds its LoraConfig with
    /// lora_alpha = r (scale 1), so the baked B reproduces the model with any Diffusers version, and with loaders
    /// that read plain A/B pairs. New tensors.
    /// </summary>
    public static List<KeyValuePair<string, Tensor>> ToDiffusers(IReadOnlyDictionary<string, Tensor> adapters, double scale, string source)
    {
        var layers = AdapterLayers(adapters, source);
        var result = new List<KeyValuePair<string, Tensor>>();
        using var noGrad = no_grad();
        foreach (var layer in layers)
        {
            using var scope = NewDisposeScope();
            var a = adapters[layer + LoraA].to_type(ScalarType.Float32).clone();
            var b = adapters[layer + LoraB].to_type(ScalarType.Float32);
            b = scale == 1.0 ? b.clone() : b * scale;
            result.Add(new(DiffusersPrefix + layer + LoraA, a.DetachFromDisposeScope()));
            result.Add(new(DiffusersPrefix + layer + LoraB, b.DetachFromDisposeScope()));
        }
        return result;
    }

    /// <summary>
    /// Applies a Diffusers LoRA file for the transformer to <paramref name="module"/> as Diffusers does: each
    /// <c>transformer.&lt;layer&gt;.lora_A/B.weight</c> pair becomes a frozen adapter of that layer with scale
    /// lora_alpha / r from the file's PEFT metadata (<c>lora_adapter_metadata</c>) when it has one, else 1.
    /// Returns the adapted layers. Keys of other formats (kohya <c>.alpha</c>, <c>diffusion_model.</c>, text
    /// encoders, <c>lora_B.bias</c>) are refused.
    /// </summary>
    public static IReadOnlyList<string> LoadDiffusers(nn.Module module, string path)
    {
        if (!File.Exists(path)) throw new UserError($"LoRA file '{path}' does not exist");
        var header = SafeTensors.ReadHeader(path);
        var foreign = header.Keys.Where(k => !k.StartsWith(DiffusersPrefix, StringComparison.Ordinal)
            || (!k.EndsWith(LoraA, StringComparison.Ordinal) && !k.EndsWith(LoraB, StringComparison.Ordinal))).ToList();
        if (foreign.Count > 0)
            throw new UserError($"LoRA file '{path}': {foreign.Count} key(s) are not Diffusers transformer LoRA factors " +
                                $"(transformer.<layer>.lora_A.weight / lora_B.weight), e.g. {string.Join(", ", foreign.Take(5))}");
        double? scale = MetadataScale(path);

        var loaded = SafeTensors.Load(path);
        try
        {
            var adapters = loaded.ToDictionary(kv => kv.Key[DiffusersPrefix.Length..], kv => kv.Value, StringComparer.Ordinal);
            var layers = AdapterLayers(adapters, path);
            var capable = CapableLayers(module).ToDictionary(l => l.Name, l => l.Layer, StringComparer.Ordinal);
            var unknown = layers.Where(l => !capable.ContainsKey(l)).ToList();
            if (unknown.Count > 0)
                throw new UserError($"LoRA file '{path}': {unknown.Count} layer(s) are not LoRA-capable layers of this model: {string.Join(", ", unknown.Take(10))}");
            foreach (var layer in layers)
            {
                var (a, b) = (adapters[layer + LoraA], adapters[layer + LoraB]);
                var target = capable[layer];
                if (a.shape[1] != target.InFeatures || b.shape[0] != target.OutFeatures)
                    throw new UserError($"LoRA file '{path}': layer '{layer}' has A [{string.Join(", ", a.shape)}], B [{string.Join(", ", b.shape)}]; " +
                                        $"the model's layer is [{target.OutFeatures}, {target.InFeatures}]");
                if (target.HasAdapter) throw new UserError($"LoRA file '{path}': layer '{layer}' already has an adapter");
            }
            foreach (var layer in layers)
            {
                var (a, b) = (adapters[layer + LoraA], adapters[layer + LoraB]);
                capable[layer].SetAdapter(a, b, (scale ?? 1.0) * a.shape[0], trainable: false);
            }
            return layers;
        }
        finally
        {
            foreach (var t in loaded.Values) t.Dispose();
        }
    }

    /// <summary>lora_alpha / r from the file's PEFT metadata for the transformer, or null when it has none.</summary>
    private static double? MetadataScale(string path)
    {
        if (!SafeTensors.ReadMetadata(path).TryGetValue("lora_adapter_metadata", out var raw)) return null;
        JsonObject meta;
        try { meta = JsonNode.Parse(raw) as JsonObject ?? throw new JsonException("not an object"); }
        catch (JsonException e) { throw new UserError($"LoRA file '{path}': its lora_adapter_metadata is not a JSON object: {e.Message}"); }
        foreach (var k in new[] { "rank_pattern", "alpha_pattern" })
            if (meta[DiffusersPrefix + k] is JsonObject { Count: > 0 })
                throw new UserError($"LoRA file '{path}': per-layer {k} in its metadata is not supported");
        foreach (var k in new[] { "use_rslora", "use_dora" })
            if (meta[DiffusersPrefix + k] is JsonValue v && v.TryGetValue<bool>(out var on) && on)
                throw new UserError($"LoRA file '{path}': {k} adapters are not supported");
        if (meta[DiffusersPrefix + "lora_alpha"] is not JsonValue alpha || meta[DiffusersPrefix + "r"] is not JsonValue r) return null;
        return alpha.GetValue<double>() / r.GetValue<double>();
    }
}

namespace FastVideo.Configs;

/// <summary>
/// FastVideo's recipe form (<c>models.&lt;role&gt;._target_</c>, <c>method._target_</c>, <c>callbacks.&lt;name&gt;</c>,
/// <c>training</c>, <c>pipeline</c>; upstream-recipe-format.md) read into the raw tree the loader binds: each class
/// path becomes the family, method or callback name its registry entry declares it for. The other form may name
/// class paths too (a role's, the method's or a callback's <c>_target_</c>); they are resolved the same way.
/// </summary>
internal static class FastVideoForm
{
    public const string TargetKey = "_target_";

    /// <summary>The top-level sections of FastVideo's form.</summary>
    public static IReadOnlyList<string> Sections { get; } = ["models", "method", "training", "callbacks", "pipeline"];

    /// <summary>FastVideo's form is the one with a <c>models:</c> section, or, without one, with neither
    /// <c>recipe:</c> nor <c>roles:</c> and a <c>method._target_</c> (so a FastVideo recipe missing its models is told so).</summary>
    public static bool Detect(RawMap root) =>
        root.Get("models") is not null
        || (root.Get("recipe") is null && root.Get("roles") is null && root.Get("method") is RawMap method && method.Get(TargetKey) is not null);

    /// <summary>
    /// Keys FastVideo's own recipes carry and FastVideo ignores: dropped with a warning when the record they would bind
    /// into does not have them. (section path, key, method the rule is for (null: any), why FastVideo ignores it).
    /// </summary>
    private static readonly (string Section, string Key, string? Method, string Why)[] IgnoredKeys =
    [
        ("training.vsa", "decay_rate", null, "FastVideo's training config has no such key"),
        ("training.vsa", "decay_interval_steps", null, "FastVideo's training config has no such key"),
        ("method", "attn_kind", "self_forcing", "FastVideo's SelfForcingMethod does not read it"),
    ];

    /// <summary>
    /// Training keys whose falsy value (0, false, "", an empty list) FastVideo replaces by a truthy default
    /// (<c>int(x or default)</c>, config.py); here the value is kept as written and <c>config show</c> says so.
    /// </summary>
    private static readonly (string Path, string FastVideoValue)[] FalsyDefaults =
    [
        ("distributed.num_gpus", "1"), ("distributed.tp_size", "1"), ("distributed.sp_size", "num_gpus"),
        ("distributed.hsdp_replicate_dim", "1"), ("distributed.hsdp_shard_dim", "num_gpus"),
        ("data.train_batch_size", "1"), ("data.preprocessed_data_type", "t2v"),
        ("optimizer.lr_scheduler", "constant"), ("optimizer.min_lr_ratio", "0.5"),
        ("loop.gradient_accumulation_steps", "1"),
        ("tracker.project_name", "fastvideo"),
        ("model.weighting_scheme", "uniform"), ("model.logit_std", "1.0"), ("model.mode_scale", "1.0"),
        ("dit_precision", "fp32"), ("model_path", "models.student.init_from"),
    ];

    /// <summary>
    /// FastVideo's form into the loader's tree: <c>recipe.method</c> from <c>method._target_</c>, each role's
    /// <c>family</c> from its <c>_target_</c> (the role section keeps its name, <c>models</c>), callbacks under their
    /// registry names; in <c>training</c> a null value means the default (as FastVideo's <c>x or default</c>) and the
    /// keys FastVideo ignores are dropped with a warning.
    /// </summary>
    public static RawMap Normalize(RawMap root, RecipeBinder binder, IFamilyCatalog families, IMethodCatalog methods,
        ICallbackCatalog callbacks)
    {
        foreach (var (key, _) in root.Entries)
        {
            if (Sections.Contains(key.Text)) continue;
            if (key.Text is "recipe" or "roles")
                throw binder.Error(key, key.Text, "this recipe is in FastVideo's form (models:), which names families and the method by " +
                                                  "_target_; recipe:/roles: belong to the other form: use one form per file");
            throw binder.UnknownKey(key, key.Text, Sections);
        }

        var models = Roles(root, binder, families);
        var (methodName, methodTarget, method) = Method(root, binder, methods);
        var recipe = new RawMap(methodTarget.Line, methodTarget.OverrideSource);
        recipe.Entries.Add((Synthetic("method", methodTarget), Synthetic(methodName, methodTarget)));

        var result = new RawMap(root.Line, root.OverrideSource);
        result.Entries.Add((Synthetic("recipe", methodTarget), recipe));
        result.Entries.Add((root.Entries.First(e => e.Key.Text == "models").Key, models));
        result.Entries.Add((root.Entries.First(e => e.Key.Text == "method").Key, DropIgnored(method, "method", methods.OptionsType(methodName), methodName, binder)));
        result.Entries.Add(Training(root, binder));
        if (root.TryGetEntry("callbacks", out var cbKey, out var cbValue))
            result.Entries.Add((cbKey, Callbacks(cbValue, binder, callbacks)));
        if (root.TryGetEntry("pipeline", out var pKey, out var pValue))
            result.Entries.Add((pKey, pValue));
        return result;
    }

    /// <summary>
    /// In the other form: a role's or the method's <c>_target_</c> names the family or method (it must agree with
    /// <c>family</c> / <c>recipe.method</c> when those are given too); callbacks may name theirs. Changes
    /// <paramref name="root"/> in place.
    /// </summary>
    public static void ResolveTargets(RawMap root, RecipeBinder binder, IFamilyCatalog families, IMethodCatalog methods,
        ICallbackCatalog callbacks)
    {
        if (root.Get("roles") is RawMap roles)
            foreach (var (key, value) in roles.Entries.ToList())
            {
                if (value is not RawMap role || !role.TryGetEntry(TargetKey, out var targetKey, out var target)) continue;
                var path = $"roles.{key.Text}";
                var family = Resolve(target, $"{path}.{TargetKey}", "model", families, families.FamilyNames, binder);
                if (role.Get("family") is RawScalar { Value: string given } givenNode && given != family)
                    throw binder.Error(givenNode, $"{path}.family", $"'{given}' does not match _target_, which names family '{family}'");
                var copy = new RawMap(role.Line, role.OverrideSource);
                foreach (var entry in role.Entries.Where(e => e.Key.Text != TargetKey && e.Key.Text != "family")) copy.Entries.Add(entry);
                copy.Entries.Insert(0, (Synthetic("family", targetKey), Synthetic(family, target)));
                roles.Set(key, copy);
            }

        if (root.TryGetEntry("callbacks", out var cbKey, out var cbValue) && cbValue is RawMap)
            root.Set(cbKey, Callbacks(cbValue, binder, callbacks));

        if (root.Get("method") is RawMap method && method.TryGetEntry(TargetKey, out var methodKey, out var methodTarget))
        {
            var name = Resolve(methodTarget, $"method.{TargetKey}", "method", methods, methods.Names, binder);
            if (root.Get("recipe") is not RawMap recipe)
            {
                if (!RecipeBinder.IsNull(root.Get("recipe"))) return; // not a map: the binder reports it
                recipe = new RawMap(methodKey.Line, methodKey.OverrideSource);
                root.Set(Synthetic("recipe", methodKey), recipe);
            }
            if (recipe.Get("method") is RawScalar { Value: string given } && given != name)
                throw binder.Error(methodTarget, $"method.{TargetKey}", $"names method '{name}', but recipe.method is '{given}'");
            if (RecipeBinder.IsNull(recipe.Get("method"))) recipe.Set(Synthetic("method", methodKey), Synthetic(name, methodTarget));
            root.Set(root.Entries.First(e => e.Key.Text == "method").Key, WithoutTarget(method));
        }

    }

    /// <summary><c>models</c>: each role's <c>_target_</c> becomes its <c>family</c>.</summary>
    private static RawMap Roles(RawMap root, RecipeBinder binder, IFamilyCatalog families)
    {
        var node = root.Get("models");
        if (node is not RawMap models || models.Entries.Count == 0)
            throw binder.Error(node, "models", RecipeBinder.IsNull(node) || node is RawMap
                ? "expected at least one role, e.g. student: {_target_: fastvideo.train.models.wan.WanModel, init_from: ...}"
                : $"expected a map of role name -> options, got {node!.Describe()}");
        var result = new RawMap(models.Line, models.OverrideSource);
        foreach (var (key, value) in models.Entries)
        {
            var path = $"models.{key.Text}";
            if (string.IsNullOrWhiteSpace(key.Text)) throw binder.Error(key, path, "role names must not be empty");
            if (value is not RawMap role)
                throw binder.Error(value, path, $"expected a map with _target_ and the role's options, got {value.Describe()}");
            if (!role.TryGetEntry(TargetKey, out var targetKey, out var target))
                throw binder.Error(key, $"{path}.{TargetKey}",
                    "required value is missing: the role's model class, e.g. fastvideo.train.models.wan.WanModel");
            if (role.TryGetEntry("family", out var familyKey, out _))
                throw binder.Error(familyKey, $"{path}.family", "FastVideo's form names the family by _target_; remove family");
            var family = Resolve(target, $"{path}.{TargetKey}", "model", families, families.FamilyNames, binder);
            var copy = new RawMap(role.Line, role.OverrideSource);
            foreach (var entry in role.Entries)
                copy.Entries.Add(entry.Key.Text == TargetKey ? (Synthetic("family", targetKey), Synthetic(family, target)) : entry);
            result.Entries.Add((key, copy));
        }
        return result;
    }

    private static (string Name, RawNode Target, RawMap Options) Method(RawMap root, RecipeBinder binder, IMethodCatalog methods)
    {
        var node = root.Get("method");
        if (node is not RawMap method)
            throw binder.Error(node, "method", RecipeBinder.IsNull(node)
                ? "required section is missing: FastVideo's form names the method by method._target_, e.g. fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod"
                : $"expected a map with _target_ and the method's options, got {node!.Describe()}");
        if (method.Get(TargetKey) is not { } target)
            throw binder.Error(method, $"method.{TargetKey}",
                "required value is missing: the method's class, e.g. fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod");
        return (Resolve(target, $"method.{TargetKey}", "method", methods, methods.Names, binder), target, WithoutTarget(method));
    }

    /// <summary><c>training</c>: required (as FastVideo; it may be <c>{}</c>); null values are dropped (they mean the
    /// default there); FastVideo's falsy-to-default replacements are noted; ignored keys dropped with a warning.</summary>
    private static (RawScalar, RawNode) Training(RawMap root, RecipeBinder binder)
    {
        if (!root.TryGetEntry("training", out var key, out var node))
            throw binder.Error(null, "training", "required section is missing (FastVideo's form requires it; it may be empty: training: {})");
        if (node is not RawMap training)
            throw binder.Error(node, "training", $"expected a map (it may be empty: training: {{}}), got {node.Describe()}");
        var result = new RawMap(training.Line, training.OverrideSource);
        foreach (var (k, v) in training.Entries)
        {
            if (RecipeBinder.IsNull(v)) continue;
            if (v is RawMap section && RecordShape.Of(typeof(TrainingConfig)).FirstOrDefault(p => p.Key == k.Text).Property is { } property
                && RecordShape.IsRecord(property.PropertyType))
            {
                var cleaned = new RawMap(section.Line, section.OverrideSource);
                cleaned.Entries.AddRange(section.Entries.Where(e => !RecipeBinder.IsNull(e.Value)));
                result.Entries.Add((k, DropIgnored(cleaned, $"training.{k.Text}", property.PropertyType, null, binder)));
                continue;
            }
            result.Entries.Add((k, v));
        }
        foreach (var (path, fastVideoValue) in FalsyDefaults)
        {
            var at = Find(result, path);
            if (at is RawScalar { Value: 0L or 0.0 or false or "" } or RawList { Items.Count: 0 } or RawMap { Entries.Count: 0 })
                binder.Note(RecipeNoteKind.DiffersFromFastVideo, at, $"training.{path}",
                    $"{at.Describe()} is kept as written; FastVideo replaces a falsy value by its default ({fastVideoValue})");
        }
        return (key, result);
    }

    /// <summary>
    /// <c>callbacks</c> under their registry names: a <c>_target_</c> names the callback (the entry is renamed to it);
    /// without one the name must be a callback's (FastVideo's bare names grad_clip, validation, ema are).
    /// </summary>
    private static RawNode Callbacks(RawNode node, RecipeBinder binder, ICallbackCatalog callbacks)
    {
        if (node is not RawMap map) return node; // null: none; anything else: the loader reports it
        var result = new RawMap(map.Line, map.OverrideSource);
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in map.Entries)
        {
            var path = $"callbacks.{key.Text}";
            string name;
            if (value is RawMap options && options.Get(TargetKey) is { } target)
                name = Resolve(target, $"{path}.{TargetKey}", "callback", callbacks, callbacks.Names, binder);
            else if (callbacks.Names.Contains(key.Text))
                name = key.Text;
            else
                throw binder.Error(key, path, Unknown(key.Text, callbacks.Names));
            if (seen.TryGetValue(name, out var first))
                throw binder.Error(key, path, $"callback '{name}' is already given as callbacks.{first}; give each callback once");
            seen[name] = key.Text;
            result.Entries.Add((name == key.Text ? key : new RawScalar(name, name, key.Line, key.OverrideSource), WithoutTarget(value)));
        }
        return result;
    }

    private static string Unknown(string name, IReadOnlyCollection<string> known) =>
        Names.Suggest(name, known) is { } suggestion
            ? $"unknown callback '{name}'; did you mean '{suggestion}'? (known: {string.Join(", ", known)})"
            : $"unknown callback '{name}' (known: {string.Join(", ", known)})";

    /// <summary>
    /// The registry name a class path names. An unsupported one is one error naming it, its line, the nearest
    /// supported class path and every supported one of its kind.
    /// </summary>
    private static string Resolve(RawNode target, string path, string kind, IClassPathCatalog catalog,
        IReadOnlyCollection<string> names, RecipeBinder binder)
    {
        if (target is not RawScalar { Value: string classPath } || string.IsNullOrWhiteSpace(classPath))
            throw binder.Error(target, path, $"expected a class path (package.module.ClassName), got {target.Describe()}");
        classPath = classPath.Trim();
        if (catalog.NameOfClassPath(classPath) is { } name && names.Contains(name)) return name;
        var supported = names.Select(n => (Name: n, Path: catalog.ClassPathOf(n))).Where(s => s.Path is not null).ToList();
        var nearest = supported.Count == 0 ? null
            : supported.MinBy(s => Names.Distance(classPath.ToLowerInvariant(), s.Path!.ToLowerInvariant())).Path;
        var list = supported.Count == 0 ? "none" : string.Join(", ", supported.Select(s => $"{s.Path} ({s.Name})"));
        throw binder.Error(target, path, $"unsupported target '{classPath}': FastVideoSharp does not implement this {kind}" +
            (nearest is null ? "" : $"; nearest supported target: '{nearest}'") + $"; supported {kind}s: {list}");
    }

    /// <summary>The keys of <see cref="IgnoredKeys"/> under <paramref name="section"/> that <paramref name="record"/>
    /// does not bind: dropped, each with a warning.</summary>
    private static RawMap DropIgnored(RawMap map, string section, Type record, string? method, RecipeBinder binder)
    {
        var known = RecordShape.Of(record).Select(p => p.Key).ToHashSet(StringComparer.Ordinal);
        var result = new RawMap(map.Line, map.OverrideSource);
        foreach (var (key, value) in map.Entries)
        {
            var rule = IgnoredKeys.FirstOrDefault(r => r.Section == section && r.Key == key.Text && (r.Method is null || r.Method == method));
            if (rule.Key is not null && !known.Contains(key.Text))
            {
                binder.Note(RecipeNoteKind.Ignored, key, $"{section}.{key.Text}", $"ignored, as FastVideo does ({rule.Why})");
                continue;
            }
            result.Entries.Add((key, value));
        }
        return result;
    }

    /// <summary>The map without <see cref="TargetKey"/>; anything else as it is.</summary>
    public static RawNode WithoutTarget(RawNode node)
    {
        if (node is not RawMap map || map.Get(TargetKey) is null) return node;
        var copy = new RawMap(map.Line, map.OverrideSource);
        copy.Entries.AddRange(map.Entries.Where(e => e.Key.Text != TargetKey));
        return copy;
    }

    private static RawMap WithoutTarget(RawMap map) => (RawMap)WithoutTarget((RawNode)map);

    /// <summary>A scalar the normalisation writes, located where the value it stands for was.</summary>
    private static RawScalar Synthetic(string text, RawNode at) => new(text, text, at.Line, at.OverrideSource);

    private static RawNode? Find(RawMap map, string dotted)
    {
        RawNode? current = map;
        foreach (var segment in dotted.Split('.'))
            current = (current as RawMap)?.Get(segment);
        return current;
    }
}

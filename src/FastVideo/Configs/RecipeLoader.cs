using System.Globalization;

namespace FastVideo.Configs;

/// <summary>
/// Loads a recipe: YAML -> raw tree (with lines) -> <c>--set</c> overrides -> typed <see cref="RunConfig"/> ->
/// sanity checks. Every mistake is a <see cref="RecipeError"/> naming the file/line (or <c>--set</c>) and key path.
/// </summary>
public static class RecipeLoader
{
    /// <summary>Top-level sections, in the order the printer writes them.</summary>
    public static IReadOnlyList<string> Sections { get; } = ["recipe", "roles", "method", "training", "callbacks", "pipeline"];

    public static IReadOnlyList<string> WeightingSchemes { get; } = ["uniform", "logit_normal", "mode"];

    public static IReadOnlyList<string> LrSchedulers { get; } =
        ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "cosine_with_min_lr", "polynomial", "piecewise_constant"];


    public static IReadOnlyList<string> GradientCheckpointingTypes { get; } = ["full", "ops", "block_skip"];

    /// <summary>FastVideo's class-path key (reference spec 1.5): under <c>models.&lt;role&gt;</c>, <c>method</c> and
    /// <c>callbacks.&lt;name&gt;</c> it names the family, method or callback by a class path its registry entry
    /// declares; in the other form it may stand for a role's <c>family</c>, <c>recipe.method</c> or a callback's name.</summary>
    public const string TargetKey = FastVideoForm.TargetKey;

    /// <summary>FastVideo's attention backends (its AttentionBackendEnum), for a role's <c>attention_backend</c>.</summary>
    public static IReadOnlyList<string> AttentionBackends { get; } =
    [
        "FLASH_ATTN", "TORCH_SDPA", "SAGE_ATTN", "SAGE_ATTN_THREE", "ATTN_QAT_INFER", "ATTN_QAT_TRAIN", "VIDEO_SPARSE_ATTN",
        "VIDEO_SPARSE_ATTN_H3", "BSA_ATTN", "VMOBA_ATTN", "SLA_ATTN", "SAGE_SLA_ATTN", "NABLA_ATTN", "NO_ATTENTION",
    ];

    /// <summary>The backends that compute exact softmax attention, which is what every role computes here.</summary>
    public static IReadOnlyList<string> ExactAttentionBackends { get; } = ["FLASH_ATTN", "TORCH_SDPA"];

    /// <summary>FastVideo's quantization methods (<c>pipeline.dit_config.quant_config</c>).</summary>
    public static IReadOnlyList<string> QuantizationMethods { get; } = ["AbsMaxFP8", "FP8", "NVFP4", "nvfp4_qat", "nvfp4_qat_train", "fp8_qat_train"];

    /// <summary>FastVideo's <c>training.data.preprocessed_data_type</c> values; the loader reads t2v.</summary>
    public static IReadOnlyList<string> PreprocessedDataTypes { get; } = ["t2v", "t2va", "text_only"];

    /// <summary>Reads and loads the recipe file at <paramref name="path"/>, in either form (<see cref="RecipeForm"/>);
    /// errors name the path as given. <paramref name="overrides"/> are <c>a.b.c=VALUE</c> (<c>--set</c>) or
    /// <c>--a.b.c=VALUE</c> (FastVideo's command-line flags). <paramref name="methods"/> and
    /// <paramref name="callbacks"/> default to the built-in registries (<c>MethodRegistry.Default</c>,
    /// <c>CallbackRegistry.Default</c>), where user methods and callbacks register.</summary>
    public static RunConfig Load(string path, IReadOnlyList<string> overrides, IFamilyCatalog families,
        IMethodCatalog? methods = null, ICallbackCatalog? callbacks = null)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new RecipeError(path, null, "", "recipe file not found");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecipeError(path, null, "", $"cannot read the recipe file: {e.Message}");
        }
        return LoadText(text, path, overrides, families, methods, callbacks);
    }

    /// <summary>Loads recipe YAML given as text; <paramref name="sourceName"/> is used in error messages.</summary>
    public static RunConfig LoadText(string yaml, string sourceName, IReadOnlyList<string> overrides, IFamilyCatalog families,
        IMethodCatalog? methods = null, ICallbackCatalog? callbacks = null)
    {
        methods ??= Train.Methods.MethodRegistry.Default;
        callbacks ??= Train.Callbacks.CallbackRegistry.Default;
        var root = RawYaml.ParseDocument(yaml, sourceName);
        // Overrides apply to the file's own keys, before the form is read (as upstream: --models.student.init_from X).
        RecipeOverrides.Apply(root, overrides);
        var binder = new RecipeBinder(sourceName);

        var form = FastVideoForm.Detect(root) ? RecipeForm.FastVideo : RecipeForm.RecipeRoles;
        if (form == RecipeForm.FastVideo)
        {
            root = FastVideoForm.Normalize(root, binder, families, methods, callbacks);
        }
        else
        {
            foreach (var (key, _) in root.Entries)
                if (!Sections.Contains(key.Text))
                    throw binder.UnknownKey(key, key.Text, Sections);
            FastVideoForm.ResolveTargets(root, binder, families, methods, callbacks);
        }
        PipelineKeys.DropIgnored(root, binder);
        var rolesKey = form == RecipeForm.FastVideo ? "models" : "roles";

        var recipe = (RecipeSection)binder.BindRecord(typeof(RecipeSection), root.Get("recipe"), "recipe");
        CheckRecipeSection(recipe, root, binder, families, methods);

        var config = new RunConfig
        {
            Form = form,
            Recipe = recipe,
            Roles = BindRoles(root, rolesKey, recipe, binder, families),
            Method = BindMethod(root.Get("method"), recipe.Method, binder, methods),
            Training = (TrainingConfig)binder.BindRecord(typeof(TrainingConfig), root.Get("training"), "training"),
            Callbacks = BindCallbacks(root.Get("callbacks"), binder, callbacks),
            Pipeline = (PipelineConfig)binder.BindRecord(typeof(PipelineConfig), root.Get("pipeline"), "pipeline"),
        };
        // Every missing required value (roles' init_from, method and callback options) in one message.
        binder.ThrowIfMissing();
        CheckOptions(config.Method, "method", root, binder);
        foreach (var (name, options) in config.Callbacks)
            CheckOptions(options, $"callbacks.{name}", root, binder);
        CheckOptions(config.Pipeline.DitConfig, "pipeline.dit_config", root, binder);
        CheckRoles(config, root, rolesKey, binder);
        Validate(config, root, rolesKey, binder);
        RecipeDifferences.Note(config, root, rolesKey, binder);
        // Raw is rebuilt from the typed config so it carries every default and each role's resolved family.
        return config with { Raw = RecipeTree.ToPlain(config), Notes = binder.Notes.OrderBy(n => n.Line ?? int.MaxValue).ToList() };
    }

    /// <summary>
    /// Binds a code-built options map (e.g. <c>{"decay": 0.99}</c>) into <typeparamref name="T"/> with the same rules
    /// and errors as a recipe's <c>method:</c> / <c>callbacks.&lt;name&gt;</c>: unknown keys, wrong types, missing
    /// required values, the record's own checks. <paramref name="path"/> prefixes the key paths in errors.
    /// </summary>
    public static T BindOptions<T>(IReadOnlyDictionary<string, object?>? values, string path) where T : class =>
        (T)BindOptions(typeof(T), values, path);

    /// <inheritdoc cref="BindOptions{T}"/>
    public static object BindOptions(Type optionsType, IReadOnlyDictionary<string, object?>? values, string path)
    {
        const string source = "options";
        var binder = new RecipeBinder(source);
        var node = values is null ? null : RecipeBinder.FromPlain(values);
        var options = binder.BindRecord(optionsType, node is null ? null : FastVideoForm.WithoutTarget(node), path);
        binder.ThrowIfMissing();
        if (options is ICheckedOptions checkedOptions && checkedOptions.Check().FirstOrDefault() is { } problem)
            throw new RecipeError(source, null, Key(path, problem.Key), problem.Detail);
        return options;
    }

    private static void CheckRecipeSection(RecipeSection recipe, RawMap root, RecipeBinder binder, IFamilyCatalog families,
        IMethodCatalog methods)
    {
        // Null (or absent) is allowed: a dry use may not name a method; an empty name is a mistake.
        if (recipe.Method is { } method)
        {
            var at = Locate(root, "recipe.method");
            if (string.IsNullOrWhiteSpace(method))
                throw binder.Error(at, "recipe.method", "expected a method name, got an empty string");
            if (!methods.Names.Contains(method))
                throw binder.Error(at, "recipe.method", Unknown("method", method, methods.Names));
        }
        if (recipe.Family is { } family)
            CheckFamily(family, Locate(root, "recipe.family"), "recipe.family", binder, families);
    }

    private static string Unknown(string what, string name, IReadOnlyCollection<string> known)
    {
        var list = string.Join(", ", known);
        var suggestion = Names.Suggest(name, known);
        return suggestion is null
            ? $"unknown {what} '{name}' (known: {list})"
            : $"unknown {what} '{name}'; did you mean '{suggestion}'? (known: {list})";
    }

    private static void CheckFamily(string family, RawNode? at, string path, RecipeBinder binder, IFamilyCatalog families)
    {
        if (string.IsNullOrWhiteSpace(family))
            throw binder.Error(at, path, "expected a family name, got an empty string");
        if (families.FamilyNames.Contains(family)) return;
        throw binder.Error(at, path, Unknown("family", family, families.FamilyNames));
    }

    private static IReadOnlyDictionary<string, RoleConfig> BindRoles(RawMap root, string rolesKey, RecipeSection recipe,
        RecipeBinder binder, IFamilyCatalog families)
    {
        var node = root.Get(rolesKey);
        if (RecipeBinder.IsNull(node))
            throw binder.Error(node, rolesKey, "required value is missing (at least one role, e.g. roles.student.init_from)");
        if (node is not RawMap rolesMap)
            throw binder.Error(node, rolesKey, $"expected a map of role name -> options, got {node!.Describe()}");
        if (rolesMap.Entries.Count == 0)
            throw binder.Error(rolesMap, rolesKey, "expected at least one role, e.g. student: {init_from: ...}");

        var roles = new Dictionary<string, RoleConfig>();
        foreach (var (key, value) in rolesMap.Entries)
        {
            var path = $"{rolesKey}.{key.Text}";
            if (string.IsNullOrWhiteSpace(key.Text))
                throw binder.Error(key, path, "role names must not be empty");
            // "critic:" with nothing under it reads as an empty role, so the error is about its missing keys.
            var roleMap = value as RawMap ?? (RecipeBinder.IsNull(value)
                ? new RawMap(value.Line, value.OverrideSource)
                : throw binder.Error(value, path, $"expected a map of role options, got {value.Describe()}"));

            var family = ResolveFamily(roleMap, path, recipe, binder, families);
            var type = families.RoleConfigType(family);
            if (!typeof(RoleConfig).IsAssignableFrom(type))
                throw new InvalidOperationException($"family '{family}' role type {type} does not derive from RoleConfig");

            var role = (RoleConfig)binder.BindRecord(type, roleMap, path);
            // An absent init_from is recorded by the binder (required); an empty one is missing too.
            if (role.InitFrom is { } given && string.IsNullOrWhiteSpace(given))
                binder.Missing(roleMap.Get("init_from"), $"{path}.init_from");
            // `with` keeps the family's subclass (record copy is virtual).
            roles[key.Text] = role with { Family = family };
        }
        return roles;
    }

    /// <summary>The role's own <c>family</c>, else <c>recipe.family</c>; checked against the catalog.</summary>
    private static string ResolveFamily(RawMap roleMap, string path, RecipeSection recipe, RecipeBinder binder,
        IFamilyCatalog families)
    {
        var familyPath = $"{path}.family";
        var own = roleMap.Get("family");
        if (!RecipeBinder.IsNull(own))
        {
            if (own is not RawScalar { Value: string name })
                throw binder.Error(own, familyPath, $"expected a family name, got {own!.Describe()}");
            CheckFamily(name, own, familyPath, binder, families);
            return name;
        }
        if (recipe.Family is { } fallback) return fallback; // already checked as recipe.family
        throw binder.Error(roleMap, familyPath, "required value is missing (set it on the role or set recipe.family)");
    }

    /// <summary><c>method:</c> into the options type of <c>recipe.method</c> (checked to exist), or into plain
    /// <see cref="MethodOptions"/> when the recipe names no method.</summary>
    private static MethodOptions BindMethod(RawNode? node, string? method, RecipeBinder binder, IMethodCatalog methods)
    {
        var type = method is null ? typeof(MethodOptions) : methods.OptionsType(method);
        if (!typeof(MethodOptions).IsAssignableFrom(type))
            throw new InvalidOperationException($"method '{method}' options type {type} does not derive from MethodOptions");
        if (method is null && node is RawMap map)
        {
            // Without a method only the common options are known: say so instead of "unknown key".
            var common = RecordShape.Of(typeof(MethodOptions)).Select(p => p.Key).ToList();
            foreach (var (key, _) in map.Entries)
                if (!common.Contains(key.Text))
                    throw binder.Error(key, $"method.{key.Text}",
                        $"recipe.method is not set, so no method declares this option (set recipe.method: {string.Join(", ", methods.Names)})");
        }
        return (MethodOptions)binder.BindRecord(type, node, "method");
    }

    private static IReadOnlyList<KeyValuePair<string, object>> BindCallbacks(RawNode? node, RecipeBinder binder,
        ICallbackCatalog callbacks)
    {
        if (RecipeBinder.IsNull(node)) return [];
        if (node is not RawMap map)
            throw binder.Error(node, "callbacks", $"expected a map of callback name -> options, got {node!.Describe()}");
        var result = new List<KeyValuePair<string, object>>();
        foreach (var (key, value) in map.Entries)
        {
            var path = $"callbacks.{key.Text}";
            if (!callbacks.Names.Contains(key.Text))
                throw binder.Error(key, path, Unknown("callback", key.Text, callbacks.Names));
            // A callback with no options ("ema:") is enabled with its defaults.
            result.Add(KeyValuePair.Create(key.Text, binder.BindRecord(callbacks.OptionsType(key.Text), value, path)));
        }
        return result;
    }

    /// <summary>Runs an options record's own checks; the first problem is reported at its key's line.</summary>
    private static void CheckOptions(object options, string path, RawMap root, RecipeBinder binder)
    {
        if (options is not ICheckedOptions checkedOptions) return;
        if (checkedOptions.Check().FirstOrDefault() is not { } problem) return;
        var keyPath = Key(path, problem.Key);
        throw binder.Error(Locate(root, keyPath), keyPath, problem.Detail);
    }

    /// <summary>
    /// Each role's own checks (a family's role record may have some), its <c>lora</c> block's, and LoRA only on a
    /// trainable role (as upstream).
    /// </summary>
    private static void CheckRoles(RunConfig config, RawMap root, string rolesKey, RecipeBinder binder)
    {
        foreach (var (name, role) in config.Roles)
        {
            CheckOptions(role, $"{rolesKey}.{name}", root, binder);
            CheckOptions(role.Lora, $"{rolesKey}.{name}.lora", root, binder);
            if (role.Lora.Enable && !role.Trainable)
            {
                var path = $"{rolesKey}.{name}.lora.enable";
                throw binder.Error(Locate(root, path), path, "LoRA training requires trainable: true for the role");
            }
        }
    }

    private static string Key(string path, string key) => key.Length == 0 ? path : key[0] == '[' ? path + key : $"{path}.{key}";

    /// <summary>Sanity checks that belong at the edge: values no part of the program could make sense of.</summary>
    private static void Validate(RunConfig config, RawMap root, string rolesKey, RecipeBinder binder)
    {
        var t = config.Training;
        AtLeast(t.Data.TrainBatchSize, 1, "training.data.train_batch_size");
        AtLeast(t.Loop.GradientAccumulationSteps, 1, "training.loop.gradient_accumulation_steps");
        AtLeast(t.Loop.MaxTrainSteps, 0, "training.loop.max_train_steps");
        if (!(t.Data.TrainingCfgRate is >= 0 and <= 1))
            Fail("training.data.training_cfg_rate", $"must be between 0 and 1, got {Num(t.Data.TrainingCfgRate)}");
        if (!(t.Optimizer.LearningRate >= 0)) // also rejects NaN
            Fail("training.optimizer.learning_rate", $"must be >= 0, got {Num(t.Optimizer.LearningRate)}");
        foreach (var beta in t.Optimizer.Betas)
            if (!(beta is >= 0 and < 1))
                Fail("training.optimizer.betas", $"each beta must be in [0, 1), got {Num(beta)}");

        OneOf(t.Model.WeightingScheme, WeightingSchemes, "training.model.weighting_scheme");
        OneOf(t.Optimizer.LrScheduler, LrSchedulers, "training.optimizer.lr_scheduler");
        OneOf(t.DitPrecision, Precision.Names, "training.dit_precision");
        OneOf(t.ComputePrecision, ["auto", .. Precision.Names], "training.compute_precision");
        // Activation checkpointing is applied by each role's family (a family that cannot apply it refuses the role).
        if (t.Model.EnableGradientCheckpointingType is { } modelCkpt)
            OneOf(modelCkpt, GradientCheckpointingTypes, "training.model.enable_gradient_checkpointing_type");
        foreach (var (name, role) in config.Roles)
        {
            if (role.EnableGradientCheckpointingType is { } roleCkpt)
                OneOf(roleCkpt, GradientCheckpointingTypes, $"{rolesKey}.{name}.enable_gradient_checkpointing_type");
            // FastVideo upper-cases the name (coerce_attn_backend); a name it does not know is an error there too.
            if (role.AttentionBackend is { } backend)
                OneOf(backend.Trim().ToUpperInvariant(), AttentionBackends, $"{rolesKey}.{name}.attention_backend");
        }
        OneOf(t.Data.PreprocessedDataType, PreprocessedDataTypes, "training.data.preprocessed_data_type");
        if (config.Pipeline.DitConfig.QuantConfig is { } quant)
            OneOf(quant, QuantizationMethods, "pipeline.dit_config.quant_config");
        if (!(t.Vsa.Sparsity is >= 0 and < 1))
            Fail("training.vsa.sparsity", $"must be in [0, 1), got {Num(t.Vsa.Sparsity)}");
        CheckOptions(t.Distributed, "training.distributed", root, binder);
        return;

        void AtLeast(int value, int min, string path)
        {
            if (value < min) Fail(path, $"must be >= {min}, got {value}");
        }

        void OneOf(string value, IReadOnlyList<string> allowed, string path)
        {
            if (allowed.Contains(value)) return;
            var suggestion = Names.Suggest(value, allowed);
            var hint = suggestion is null ? "" : $"; did you mean '{suggestion}'?";
            Fail(path, $"invalid value \"{value}\"{hint} (expected one of: {string.Join(", ", allowed)})");
        }

        void Fail(string path, string detail) => throw binder.Error(Locate(root, path), path, detail);
    }

    private static string Num(double d) => d.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>The node at a dotted path (list items as <c>key[i]</c>), or its deepest existing ancestor (for the
    /// error line).</summary>
    internal static RawNode? Locate(RawMap root, string path)
    {
        RawNode? found = null;
        RawNode? current = root;
        foreach (var segment in path.Split('.'))
        {
            var bracket = segment.IndexOf('[');
            var name = bracket < 0 ? segment : segment[..bracket];
            if (current is not RawMap map || map.Get(name) is not { } next) break;
            found = current = next;
            if (bracket < 0) continue;
            foreach (var index in segment[(bracket + 1)..].TrimEnd(']').Split("]["))
            {
                if (current is not RawList list || !int.TryParse(index, out var i) || i < 0 || i >= list.Items.Count) return found;
                found = current = list.Items[i];
            }
        }
        return found;
    }
}

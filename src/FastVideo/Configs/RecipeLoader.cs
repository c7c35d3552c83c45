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

    public static IReadOnlyList<string> DitPrecisions { get; } = ["fp32", "bf16", "fp16"];

    public static IReadOnlyList<string> GradientCheckpointingTypes { get; } = ["full", "ops", "block_skip"];

    /// <summary>Reads and loads the recipe file at <paramref name="path"/>; errors name the path as given.</summary>
    public static RunConfig Load(string path, IReadOnlyList<string> overrides, IFamilyCatalog families)
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
        return LoadText(text, path, overrides, families);
    }

    /// <summary>Loads recipe YAML given as text; <paramref name="sourceName"/> is used in error messages.</summary>
    public static RunConfig LoadText(string yaml, string sourceName, IReadOnlyList<string> overrides, IFamilyCatalog families)
    {
        var root = RawYaml.ParseDocument(yaml, sourceName);
        RecipeOverrides.Apply(root, overrides);
        var binder = new RecipeBinder(sourceName);

        foreach (var (key, _) in root.Entries)
            if (!Sections.Contains(key.Text))
                throw binder.UnknownKey(key, key.Text, Sections);

        var recipe = (RecipeSection)binder.BindRecord(typeof(RecipeSection), root.Get("recipe"), "recipe");
        CheckRecipeSection(recipe, root, binder, families);

        var config = new RunConfig
        {
            Recipe = recipe,
            Roles = BindRoles(root, recipe, binder, families),
            Method = binder.FreeMap(root.Get("method"), "method"),
            Training = (TrainingConfig)binder.BindRecord(typeof(TrainingConfig), root.Get("training"), "training"),
            Callbacks = BindCallbacks(root.Get("callbacks"), binder),
            Pipeline = (PipelineConfig)binder.BindRecord(typeof(PipelineConfig), root.Get("pipeline"), "pipeline"),
        };
        Validate(config, root, binder);
        // Raw is rebuilt from the typed config so it carries every default and each role's resolved family.
        return config with { Raw = RecipeTree.ToPlain(config) };
    }

    private static void CheckRecipeSection(RecipeSection recipe, RawMap root, RecipeBinder binder, IFamilyCatalog families)
    {
        // Null (or absent) is allowed: a dry use may not name a method; an empty name is a mistake.
        if (recipe.Method is { } method && string.IsNullOrWhiteSpace(method))
            throw binder.Error(Locate(root, "recipe.method"), "recipe.method", "expected a method name, got an empty string");
        if (recipe.Family is { } family)
            CheckFamily(family, Locate(root, "recipe.family"), "recipe.family", binder, families);
    }

    private static void CheckFamily(string family, RawNode? at, string path, RecipeBinder binder, IFamilyCatalog families)
    {
        if (string.IsNullOrWhiteSpace(family))
            throw binder.Error(at, path, "expected a family name, got an empty string");
        if (families.FamilyNames.Contains(family)) return;
        var known = string.Join(", ", families.FamilyNames);
        var suggestion = Names.Suggest(family, families.FamilyNames);
        throw binder.Error(at, path, suggestion is null
            ? $"unknown family '{family}' (known: {known})"
            : $"unknown family '{family}'; did you mean '{suggestion}'? (known: {known})");
    }

    private static IReadOnlyDictionary<string, RoleConfig> BindRoles(RawMap root, RecipeSection recipe, RecipeBinder binder,
        IFamilyCatalog families)
    {
        var node = root.Get("roles");
        if (RecipeBinder.IsNull(node))
            throw binder.Error(node, "roles", "required value is missing (at least one role, e.g. roles.student.init_from)");
        if (node is not RawMap rolesMap)
            throw binder.Error(node, "roles", $"expected a map of role name -> options, got {node!.Describe()}");
        if (rolesMap.Entries.Count == 0)
            throw binder.Error(rolesMap, "roles", "expected at least one role, e.g. student: {init_from: ...}");

        var roles = new Dictionary<string, RoleConfig>();
        foreach (var (key, value) in rolesMap.Entries)
        {
            var path = $"roles.{key.Text}";
            if (string.IsNullOrWhiteSpace(key.Text))
                throw binder.Error(key, path, "role names must not be empty");
            // "critic:" with nothing under it reads as an empty role, so the error is about its missing keys.
            var roleMap = value as RawMap ?? (RecipeBinder.IsNull(value)
                ? new RawMap(value.Line, value.FromOverride)
                : throw binder.Error(value, path, $"expected a map of role options, got {value.Describe()}"));

            var family = ResolveFamily(roleMap, path, recipe, binder, families);
            var type = families.RoleConfigType(family);
            if (!typeof(RoleConfig).IsAssignableFrom(type))
                throw new InvalidOperationException($"family '{family}' role type {type} does not derive from RoleConfig");

            var role = (RoleConfig)binder.BindRecord(type, roleMap, path);
            if (string.IsNullOrWhiteSpace(role.InitFrom))
                throw binder.Error(roleMap.Get("init_from") ?? roleMap, $"{path}.init_from", "required value is missing");
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

    private static IReadOnlyList<KeyValuePair<string, IReadOnlyDictionary<string, object?>>> BindCallbacks(RawNode? node,
        RecipeBinder binder)
    {
        if (RecipeBinder.IsNull(node)) return [];
        if (node is not RawMap map)
            throw binder.Error(node, "callbacks", $"expected a map of callback name -> options, got {node!.Describe()}");
        // A callback with no options ("ema:") is enabled with an empty options map.
        return map.Entries
            .Select(e => KeyValuePair.Create(e.Key.Text, binder.FreeMap(e.Value, $"callbacks.{e.Key.Text}")))
            .ToList();
    }

    /// <summary>Sanity checks that belong at the edge: values no part of the program could make sense of.</summary>
    private static void Validate(RunConfig config, RawMap root, RecipeBinder binder)
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
        OneOf(t.DitPrecision, DitPrecisions, "training.dit_precision");
        // Accepted options are applied or refused: these two exist upstream but not here yet, and running without
        // them would silently train something else (more memory, dense attention) than the recipe asks for.
        if (t.Model.EnableGradientCheckpointingType is { } modelCkpt)
        {
            OneOf(modelCkpt, GradientCheckpointingTypes, "training.model.enable_gradient_checkpointing_type");
            NotYet("training.model.enable_gradient_checkpointing_type", "activation checkpointing");
        }
        foreach (var (name, role) in config.Roles)
            if (role.EnableGradientCheckpointingType is { } roleCkpt)
            {
                OneOf(roleCkpt, GradientCheckpointingTypes, $"roles.{name}.enable_gradient_checkpointing_type");
                NotYet($"roles.{name}.enable_gradient_checkpointing_type", "activation checkpointing");
            }
        if (t.Vsa.Sparsity != 0)
            NotYet("training.vsa.sparsity", "video sparse attention (VSA)");
        return;

        void NotYet(string path, string what) =>
            Fail(path, $"{what} is not implemented in FastVideoSharp yet; remove this key (training then runs without it)");

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

    /// <summary>The node at a dotted path, or its deepest existing ancestor (for the error line).</summary>
    private static RawNode? Locate(RawMap root, string path)
    {
        RawNode? found = null;
        RawNode? current = root;
        foreach (var segment in path.Split('.'))
        {
            if (current is not RawMap map || map.Get(segment) is not { } next) break;
            found = current = next;
        }
        return found;
    }
}

using System.Reflection;
using FastVideo.Configs;
using FastVideo.Models.Vae;

namespace FastVideo.Train.Models;

/// <summary>Family name -> plugin. <see cref="Default"/> holds the built-in families; users may register more.</summary>
public sealed class ModelFamilyRegistry : IFamilyCatalog
{
    private readonly Dictionary<string, ModelFamily> _families = new(StringComparer.Ordinal);
    private readonly ClassPathIndex _classPaths = new();
    private readonly List<string> _order = [];   // registration order: built-ins first

    public static ModelFamilyRegistry Default { get; } = CreateBuiltIn();

    public static ModelFamilyRegistry CreateBuiltIn()
    {
        var r = new ModelFamilyRegistry();
        r.Register(Wan.WanModel.Family);
        r.Register(Wan.WanCausalModel.Family);
        r.Register(Hunyuan.HunyuanModel.Family);
        return r;
    }

    public void Register(ModelFamily family)
    {
        if (string.IsNullOrWhiteSpace(family.Name)) throw new ArgumentException("family name must not be empty");
        if (!typeof(RoleConfig).IsAssignableFrom(family.RoleConfigType))
            throw new ArgumentException($"family '{family.Name}': RoleConfigType must derive from RoleConfig");
        if (_families.ContainsKey(family.Name)) throw new ArgumentException($"family '{family.Name}' is already registered");
        _classPaths.Add("family", family.Name, family.ClassPaths);
        _families[family.Name] = family;
        _order.Add(family.Name);
    }

    public IReadOnlyCollection<string> FamilyNames => _families.Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();

    public IReadOnlyList<ModelFamily> Families => FamilyNames.Select(n => _families[n]).ToArray();

    public Type RoleConfigType(string family) => Get(family).RoleConfigType;

    public string? NameOfClassPath(string classPath) => _classPaths.NameOfClassPath(classPath);

    public string? ClassPathOf(string name) => _classPaths.ClassPathOf(name);

    public ModelFamily Get(string family) => _families.TryGetValue(family, out var f)
        ? f
        : throw new UserError($"unknown model family '{family}' (known: {string.Join(", ", FamilyNames)})");

    /// <summary>The family whose transformer class is <paramref name="transformerClass"/> (a config.json's
    /// <c>_class_name</c>); the first registered when several claim it, null when none does.</summary>
    public ModelFamily? ForTransformerClass(string? transformerClass) => transformerClass is null
        ? null
        : _order.Select(n => _families[n]).FirstOrDefault(f => f.TransformerClass == transformerClass);

    /// <summary>
    /// A frozen model for sampling outside training (<c>generate</c>, evaluation), built by its family from a model
    /// folder as a training role would be.
    /// </summary>
    public ModelBase CreateForInference(InferenceModel request)
    {
        var family = Get(request.Family);
        var blank = request.RoleOptions is { Count: > 0 } given
            ? (RoleConfig)RecipeLoader.BindOptions(family.RoleConfigType,
                new Dictionary<string, object?>(given) { ["init_from"] = request.ModelPath }, $"roles.{request.Role}")
            : (RoleConfig)Activator.CreateInstance(family.RoleConfigType)!;
        var options = blank with
        {
            Family = request.Family, InitFrom = request.ModelPath, Trainable = false, FlowShift = request.FlowShift,
            NegativePromptEmbeds = request.NegativePromptEmbeds,
        };
        var run = new RunConfig
        {
            Recipe = new RecipeSection { Family = request.Family },
            Roles = new Dictionary<string, RoleConfig> { [request.Role] = options },
            Training = new TrainingConfig { Device = request.Device, DitPrecision = request.Precision, ComputePrecision = request.ComputePrecision },
            Pipeline = request.Pipeline ?? new PipelineConfig(),
        };
        return family.Create(new ModelBuildContext(request.Role, options, run, family));
    }

    /// <summary>Builds the model of one role; the role's options were bound and validated by the recipe loader.</summary>
    public ModelBase Create(string role, RoleConfig options, RunConfig run)
    {
        var family = Get(options.Family ?? run.Recipe.Family ?? throw new UserError($"roles.{role}.family: no family given and recipe.family is not set"));
        var model = family.Create(new ModelBuildContext(role, options, run, family));
        if (options.Lora.Enable && !model.IsLora)
        {
            // The family built the role without calling EnableLoraIfConfigured: training would update every weight.
            model.Dispose();
            throw new UserError($"roles.{role}.lora.enable: the '{family.Name}' family does not support LoRA");
        }
        if (model.CheckpointingType is { } requested && model.AppliedCheckpointing is null)
        {
            model.Dispose();
            var key = options.EnableGradientCheckpointingType is null ? "training.model" : $"roles.{role}";
            throw new UserError($"{key}.enable_gradient_checkpointing_type: the {family.Name} family does not implement activation checkpointing " +
                                $"('{requested}' was asked for role '{role}'); remove the key (training then keeps all activations)");
        }
        return model;
    }

    /// <summary>Loads families from user assemblies: every public <see cref="IModelFamilyProvider"/> with a parameterless constructor.</summary>
    public void LoadPlugins(IEnumerable<string> assemblyPaths)
    {
        foreach (var path in assemblyPaths)
        {
            if (!File.Exists(path)) throw new UserError($"family plugin assembly '{path}' does not exist");
            Assembly asm;
            try { asm = Assembly.LoadFrom(Path.GetFullPath(path)); }
            catch (BadImageFormatException) { throw new UserError($"family plugin '{path}' is not a .NET assembly"); }
            var providers = asm.GetExportedTypes()
                .Where(t => typeof(IModelFamilyProvider).IsAssignableFrom(t) && !t.IsAbstract && t.GetConstructor(Type.EmptyTypes) is not null)
                .ToList();
            if (providers.Count == 0) throw new UserError($"family plugin '{path}' has no public IModelFamilyProvider with a parameterless constructor");
            foreach (var t in providers)
                foreach (var f in ((IModelFamilyProvider)Activator.CreateInstance(t)!).Families()) Register(f);
        }
    }

    /// <summary>Role options of a family as (yaml key, type, default) for <c>fastvideo families</c>.</summary>
    public static IReadOnlyList<(string Key, string Type, string Default)> DescribeOptions(Type roleConfigType) =>
        OptionListing.Describe(roleConfigType).Select(o => (o.Key, o.Type, o.Default)).ToList();
}

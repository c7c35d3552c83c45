using FastVideo.Configs;
using FastVideo.Train.Models;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods;

/// <summary>
/// A method by name. <see cref="OptionsType"/> is the record its <c>method:</c> options bind into (a
/// <see cref="MethodOptions"/> subclass; the recipe loader binds it once, with line-numbered errors);
/// <see cref="CheckRoles"/> validates the recipe's roles before any weights load (names the role and what is wrong);
/// <see cref="Create"/> builds the method from the loaded role models. Declare one with <see cref="Of{TOptions}"/>.
/// </summary>
public sealed record MethodDescriptor(
    string Name,
    string Description,
    Type OptionsType,
    Action<RunConfig> CheckRoles,
    Func<RunConfig, IReadOnlyDictionary<string, ModelBase>, TrainingMethod> Create)
{
    /// <summary>A method whose options are <typeparamref name="TOptions"/>; <paramref name="create"/> gets them typed
    /// (from <see cref="RunConfig.Method"/>).</summary>
    public static MethodDescriptor Of<TOptions>(string name, string description, Action<RunConfig> checkRoles,
        Func<RunConfig, TOptions, IReadOnlyDictionary<string, ModelBase>, TrainingMethod> create) where TOptions : MethodOptions =>
        new(name, description, typeof(TOptions), checkRoles, (config, roles) => create(config, config.MethodOptions<TOptions>(), roles));
}

public sealed class MethodRegistry : IMethodCatalog
{
    private readonly Dictionary<string, MethodDescriptor> _methods = new(StringComparer.Ordinal);

    public static MethodRegistry Default { get; } = CreateBuiltIn();

    public static MethodRegistry CreateBuiltIn()
    {
        var r = new MethodRegistry();
        r.Register(FineTuning.FineTuneMethod.Descriptor);
        r.Register(DistributionMatching.DMD2Method.Descriptor);
        return r;
    }

    public void Register(MethodDescriptor method)
    {
        if (string.IsNullOrWhiteSpace(method.Name)) throw new ArgumentException("method name must not be empty");
        if (!typeof(MethodOptions).IsAssignableFrom(method.OptionsType) || method.OptionsType.IsAbstract
            || method.OptionsType.GetConstructor(Type.EmptyTypes) is null)
            throw new ArgumentException($"method '{method.Name}': OptionsType must be a MethodOptions record with a parameterless constructor");
        if (!_methods.TryAdd(method.Name, method)) throw new ArgumentException($"method '{method.Name}' is already registered");
    }

    public IReadOnlyCollection<string> Names => _methods.Keys.Order(StringComparer.Ordinal).ToArray();

    public IReadOnlyList<MethodDescriptor> Methods => Names.Select(n => _methods[n]).ToArray();

    public Type OptionsType(string method) => Get(method).OptionsType;

    /// <summary>Every method with its options, defaults and descriptions (what <c>fastvideo methods</c> prints).</summary>
    public string Describe()
    {
        var sb = new System.Text.StringBuilder();
        foreach (var m in Methods)
        {
            sb.Append($"{m.Name}: {m.Description}\n");
            sb.Append("  options (method.*):\n");
            sb.Append(OptionListing.Format(m.OptionsType, "    "));
        }
        return sb.ToString();
    }

    public MethodDescriptor Get(string? name) =>
        name is null ? throw new UserError($"recipe.method: not set (known methods: {string.Join(", ", Names)})")
        : _methods.TryGetValue(name, out var m) ? m
        : throw new UserError($"recipe.method: unknown method '{name}' (known: {string.Join(", ", Names)})");

    /// <summary>Requires <paramref name="role"/> to exist with the given trainability (shared by the methods' role checks).</summary>
    public static void RequireRole(RunConfig config, string method, string role, bool trainable)
    {
        if (!config.Roles.TryGetValue(role, out var rc))
            throw new UserError($"roles.{role}: method '{method}' needs a {(trainable ? "trainable" : "frozen")} '{role}' role, and the recipe has none (roles: {string.Join(", ", config.Roles.Keys)})");
        if (rc.Trainable != trainable)
            throw new UserError($"roles.{role}.trainable: method '{method}' needs '{role}' to be {(trainable ? "trainable" : "frozen")} (trainable: {(trainable ? "true" : "false")})");
    }
}

/// <summary>Builds the roles and the method of a recipe, checking everything cheap before any weights load.</summary>
public static class TrainingBuilder
{
    /// <summary>
    /// Builds inside a dispose scope: module parameters and buffers survive it (modules register them), and so must
    /// any other tensor a family or method keeps from its constructor (detach it with DetachFromDisposeScope); the
    /// loaded weights and every conversion in between are freed when the build returns.
    /// </summary>
    public static TrainingMethod Build(RunConfig config, ModelFamilyRegistry? families = null, MethodRegistry? methods = null)
    {
        families ??= ModelFamilyRegistry.Default;
        var method = (methods ?? MethodRegistry.Default).Get(config.Recipe.Method);
        method.CheckRoles(config);
        CheckSharedLatentSpace(config, families);

        using var scope = NewDisposeScope();
        var models = new Dictionary<string, ModelBase>(StringComparer.Ordinal);
        try
        {
            foreach (var (role, rc) in config.Roles) models[role] = families.Create(role, rc, config);
            return method.Create(config, models);
        }
        catch
        {
            foreach (var m in models.Values) m.Dispose();
            throw;
        }
    }

    /// <summary>Roles of one method exchange latents, so their families must share a latent space.</summary>
    public static void CheckSharedLatentSpace(RunConfig config, ModelFamilyRegistry families)
    {
        var spaces = config.Roles.Select(kv =>
        {
            var family = kv.Value.Family ?? config.Recipe.Family ?? throw new UserError($"roles.{kv.Key}.family: no family given and recipe.family is not set");
            return (Role: kv.Key, Family: family, Space: families.Get(family).LatentSpace);
        }).ToList();
        var distinct = spaces.Select(s => s.Space).Distinct().ToList();
        if (distinct.Count > 1)
            throw new UserError("roles: the roles' families do not share a latent space: " +
                string.Join(", ", spaces.Select(s => $"{s.Role} ({s.Family}: {s.Space})")));
    }
}

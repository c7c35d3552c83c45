using FastVideo.Configs;
using FastVideo.Train.Models;

namespace FastVideo.Train.Methods;

/// <summary>
/// A method by name: <see cref="CheckRoles"/> validates the recipe's roles before any weights load (names the role
/// and what is wrong), <see cref="Create"/> builds the method from the loaded role models.
/// </summary>
public sealed record MethodDescriptor(
    string Name,
    Action<RunConfig> CheckRoles,
    Func<RunConfig, IReadOnlyDictionary<string, ModelBase>, TrainingMethod> Create);

public sealed class MethodRegistry
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
        if (!_methods.TryAdd(method.Name, method)) throw new ArgumentException($"method '{method.Name}' is already registered");
    }

    public IReadOnlyCollection<string> Names => _methods.Keys.Order(StringComparer.Ordinal).ToArray();

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
    public static TrainingMethod Build(RunConfig config, ModelFamilyRegistry? families = null, MethodRegistry? methods = null)
    {
        families ??= ModelFamilyRegistry.Default;
        var method = (methods ?? MethodRegistry.Default).Get(config.Recipe.Method);
        method.CheckRoles(config);
        CheckSharedLatentSpace(config, families);

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

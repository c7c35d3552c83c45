using FastVideo.Configs;
using FastVideo.Train.Models;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods;

/// <summary>Method name -> descriptor. <see cref="Default"/> holds the built-in methods; users may register more.</summary>
public sealed class MethodRegistry : IMethodCatalog
{
    private readonly Dictionary<string, MethodDescriptor> _methods = new(StringComparer.Ordinal);
    private readonly ClassPathIndex _classPaths = new();

    public static MethodRegistry Default { get; } = CreateBuiltIn();

    public static MethodRegistry CreateBuiltIn()
    {
        var r = new MethodRegistry();
        r.Register(FineTuning.FineTuneMethod.Descriptor);
        r.Register(FineTuning.DiffusionForcingSFTMethod.Descriptor);
        r.Register(FineTuning.TeacherForcingSFTMethod.Descriptor);
        r.Register(DistributionMatching.DMD2Method.Descriptor);
        r.Register(DistributionMatching.SelfForcingMethod.Descriptor);
        r.Register(DistributionMatching.StreamingLongTuningMethod.Descriptor);
        r.Register(KnowledgeDistillation.KDMethod.Descriptor);
        r.Register(KnowledgeDistillation.KDCausalMethod.Descriptor);
        r.Register(ConsistencyModel.CausalConsistencyDistillationMethod.Descriptor);
        return r;
    }

    public void Register(MethodDescriptor method)
    {
        if (string.IsNullOrWhiteSpace(method.Name)) throw new ArgumentException("method name must not be empty");
        if (!typeof(MethodOptions).IsAssignableFrom(method.OptionsType) || method.OptionsType.IsAbstract
            || method.OptionsType.GetConstructor(Type.EmptyTypes) is null)
            throw new ArgumentException($"method '{method.Name}': OptionsType must be a MethodOptions record with a parameterless constructor");
        if (_methods.ContainsKey(method.Name)) throw new ArgumentException($"method '{method.Name}' is already registered");
        _classPaths.Add("method", method.Name, method.ClassPaths);
        _methods[method.Name] = method;
    }

    public IReadOnlyCollection<string> Names => _methods.Keys.Order(StringComparer.Ordinal).ToArray();

    public IReadOnlyList<MethodDescriptor> Methods => Names.Select(n => _methods[n]).ToArray();

    public Type OptionsType(string method) => Get(method).OptionsType;

    public string? NameOfClassPath(string classPath) => _classPaths.NameOfClassPath(classPath);

    public string? ClassPathOf(string name) => _classPaths.ClassPathOf(name);

    /// <summary>Every method with its options, defaults and descriptions (what <c>fastvideo methods</c> prints).</summary>
    public string Describe()
    {
        var sb = new System.Text.StringBuilder();
        foreach (var m in Methods)
        {
            sb.Append($"{m.Name}: {m.Description}\n");
            if (m.ClassPaths.Count > 0) sb.Append($"  FastVideo class path (method._target_): {string.Join(", ", m.ClassPaths)}\n");
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

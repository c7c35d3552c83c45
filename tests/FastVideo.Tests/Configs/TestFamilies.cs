using FastVideo.Configs;
using FastVideo.Train.Methods.DistributionMatching;
using FastVideo.Train.Methods.FineTuning;

namespace FastVideo.Tests.Configs;

/// <summary>A family with its own role option, to check roles bind into the family's record type.</summary>
public record WanCausalRoleConfigForTest : RoleConfig
{
    public int NumFramesPerBlock { get; init; } = 3;
}

/// <summary>The two families the recipe tests know: "wan" (plain RoleConfig) and "wan_causal" (subclass).</summary>
public sealed class TestFamilies : IFamilyCatalog
{
    public static readonly TestFamilies Instance = new();

    public IReadOnlyCollection<string> FamilyNames { get; } = ["wan", "wan_causal"];

    public Type RoleConfigType(string family) => family switch
    {
        "wan" => typeof(RoleConfig),
        "wan_causal" => typeof(WanCausalRoleConfigForTest),
        _ => throw new ArgumentException($"unknown family {family}"),
    };

    /// <summary>The real families' class paths.</summary>
    private readonly ClassPathIndex _classPaths = Index(("wan", ["fastvideo.train.models.wan.WanModel"]),
        ("wan_causal", ["fastvideo.train.models.wan.WanCausalModel"]));

    public string? NameOfClassPath(string classPath) => _classPaths.NameOfClassPath(classPath);

    public string? ClassPathOf(string name) => _classPaths.ClassPathOf(name);

    internal static ClassPathIndex Index(params (string Name, string[] Paths)[] entries)
    {
        var index = new ClassPathIndex();
        foreach (var (name, paths) in entries) index.Add("entry", name, paths);
        return index;
    }
}

/// <summary>A method's options for the recipe tests: typed values plus a free map for checking raw value casting.</summary>
public sealed record ProbeOptions : MethodOptions
{
    public long Steps { get; init; } = 1;
    public double Lr { get; init; }
    public bool Flag { get; init; }
    public string? Note { get; init; }
    /// <summary>A free map: its values keep the types the YAML (or --set) gave them.</summary>
    public IReadOnlyDictionary<string, object?> Extra { get; init; } = new Dictionary<string, object?>();
}

/// <summary>The built-in methods (dmd2, finetune) plus "probe" (<see cref="ProbeOptions"/>), as the recipe tests see them.</summary>
public sealed class TestMethods : IMethodCatalog
{
    public static readonly TestMethods Instance = new();

    private readonly Dictionary<string, Type> _types = new()
    {
        ["dmd2"] = typeof(DMD2Options),
        ["finetune"] = typeof(FineTuneOptions),
        ["probe"] = typeof(ProbeOptions),
    };

    public IReadOnlyCollection<string> Names => _types.Keys.Order().ToArray();

    public Type OptionsType(string method) => _types[method];

    /// <summary>The built-in methods' class paths (from their descriptors) and a made-up one for "probe".</summary>
    private readonly ClassPathIndex _classPaths = TestFamilies.Index(
        ("dmd2", [.. FastVideo.Train.Methods.DistributionMatching.DMD2Method.Descriptor.ClassPaths]),
        ("finetune", [.. FastVideo.Train.Methods.FineTuning.FineTuneMethod.Descriptor.ClassPaths]),
        ("probe", ["tests.methods.ProbeMethod"]));

    public string? NameOfClassPath(string classPath) => _classPaths.NameOfClassPath(classPath);

    public string? ClassPathOf(string name) => _classPaths.ClassPathOf(name);
}

using FastVideo.Configs;

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
}

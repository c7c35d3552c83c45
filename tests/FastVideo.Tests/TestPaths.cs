namespace FastVideo.Tests;

internal static class TestPaths
{
    /// <summary>The repository root (the folder holding FastVideo.slnx).</summary>
    public static string RepoRoot { get; } = FindRoot();

    public static string Fixture(params string[] parts) => Path.Combine([RepoRoot, "tests", "fixtures", .. parts]);

    public static string TempDir(string prefix)
    {
        var d = Path.Combine(Path.GetTempPath(), $"fv-{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }

    private static string FindRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "FastVideo.slnx"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("cannot find the repository root (FastVideo.slnx)");
    }
}

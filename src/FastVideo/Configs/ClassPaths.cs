namespace FastVideo.Configs;

/// <summary>
/// What a registry offers FastVideo's recipe form: the class paths (<c>_target_</c>) its entries declare. A family,
/// method or callback declares them on its registry entry (<c>ClassPaths</c>), so one registered from a user assembly
/// can be named by a class path too.
/// </summary>
public interface IClassPathCatalog
{
    /// <summary>The name of the entry that declares <paramref name="classPath"/>, or null.</summary>
    string? NameOfClassPath(string classPath);

    /// <summary>The class path an entry is written with (the first it declares), or null when it declares none.</summary>
    string? ClassPathOf(string name);
}

/// <summary>
/// Class path -> entry name, for the registries. An entry declares its module path first (the one written back) and
/// then the package re-exports Python also resolves (<c>fastvideo.train.models.wan.WanModel</c> and
/// <c>fastvideo.train.models.wan.wan.WanModel</c> are the same class).
/// </summary>
public sealed class ClassPathIndex : IClassPathCatalog
{
    private readonly Dictionary<string, string> _byPath = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _first = new(StringComparer.Ordinal);

    /// <summary>Adds <paramref name="name"/>'s class paths; <paramref name="what"/> ("family", "method", ...) names the
    /// entry kind in errors. A path declared twice (by two entries, or by a family copied with <c>with</c> that kept its
    /// parent's paths) is refused.</summary>
    public void Add(string what, string name, IReadOnlyList<string> classPaths)
    {
        foreach (var path in classPaths)
        {
            if (string.IsNullOrWhiteSpace(path) || path.Any(char.IsWhiteSpace) || !path.Contains('.') || path.StartsWith('.') || path.EndsWith('.'))
                throw new ArgumentException($"{what} '{name}': class path '{path}' is not a dotted Python path such as package.module.ClassName");
            if (_byPath.TryGetValue(path, out var other))
                throw new ArgumentException($"{what} '{name}': class path '{path}' is already declared by {what} '{other}'");
        }
        foreach (var path in classPaths) _byPath[path] = name;
        if (classPaths.Count > 0) _first[name] = classPaths[0];
    }

    public string? NameOfClassPath(string classPath) => _byPath.GetValueOrDefault(classPath);

    public string? ClassPathOf(string name) => _first.GetValueOrDefault(name);
}

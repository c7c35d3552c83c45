using System.Collections;

namespace FastVideo.Configs;

/// <summary>
/// Typed recipe -> plain tree (Dictionary&lt;string, object?&gt; in recipe order, List&lt;object?&gt;, bool, long,
/// double, string, null). This is <see cref="RunConfig.Raw"/> and what <see cref="RecipePrinter"/> prints; loading
/// its YAML gives back an equal config.
/// </summary>
internal static class RecipeTree
{
    public static Dictionary<string, object?> ToPlain(RunConfig config) => new()
    {
        ["recipe"] = Record(config.Recipe),
        ["roles"] = config.Roles.ToDictionary(r => r.Key, r => (object?)Record(r.Value)),
        ["method"] = Record(config.Method),
        ["training"] = Record(config.Training),
        ["callbacks"] = config.Callbacks.ToDictionary(c => c.Key, c => (object?)Record(c.Value)),
        ["pipeline"] = Record(config.Pipeline),
    };

    /// <summary>
    /// The typed recipe in FastVideo's form: <c>models.&lt;role&gt;</c> with <c>_target_</c> (the family's class path)
    /// and the role's options without <c>family</c> and without null ones (null means the default in both forms, and
    /// FastVideo's constructors take no None for e.g. flow_shift); <c>method</c> and each callback with their
    /// <c>_target_</c>; <c>training</c> and <c>pipeline</c> as in the other form. Loading its YAML gives back an equal config.
    /// </summary>
    /// <exception cref="UserError">A family, the method or a callback declares no class path.</exception>
    public static Dictionary<string, object?> ToFastVideoPlain(RunConfig config, IFamilyCatalog families, IMethodCatalog methods,
        ICallbackCatalog callbacks)
    {
        var method = config.Recipe.Method ?? throw new UserError("FastVideo's form needs a method (method._target_); this recipe names none (recipe.method)");
        var models = new Dictionary<string, object?>();
        foreach (var (role, options) in config.Roles)
        {
            var family = options.Family ?? config.Recipe.Family ?? throw new InvalidOperationException($"role '{role}' has no family");
            var entry = new Dictionary<string, object?> { [FastVideoForm.TargetKey] = ClassPath(families, "family", family) };
            foreach (var (key, value) in Record(options))
                if (key != "family" && value is not null) entry[key] = value;
            models[role] = entry;
        }
        return new Dictionary<string, object?>
        {
            ["models"] = models,
            ["method"] = Targeted(ClassPath(methods, "method", method), config.Method),
            ["training"] = Record(config.Training),
            ["callbacks"] = config.Callbacks.ToDictionary(c => c.Key, c => (object?)Targeted(ClassPath(callbacks, "callback", c.Key), c.Value)),
            ["pipeline"] = Record(config.Pipeline),
        };
    }

    private static Dictionary<string, object?> Targeted(string classPath, object options)
    {
        var result = new Dictionary<string, object?> { [FastVideoForm.TargetKey] = classPath };
        foreach (var (key, value) in Record(options)) result[key] = value;
        return result;
    }

    private static string ClassPath(IClassPathCatalog catalog, string what, string name) =>
        catalog.ClassPathOf(name) ?? throw new UserError(
            $"{what} '{name}' declares no FastVideo class path, so the recipe cannot be written in FastVideo's form (its registry entry's ClassPaths is empty)");

    private static Dictionary<string, object?> Record(object record)
    {
        var result = new Dictionary<string, object?>();
        foreach (var (key, property) in RecordShape.Of(record.GetType()))
            result[key] = Value(property.GetValue(record), key);
        return result;
    }

    private static object? Value(object? value, string path) => value switch
    {
        null => null,
        string or bool or long or double => value,
        int i => (long)i,
        float f => (double)f,
        Enum e => Names.ToSnakeCase(e.ToString()),
        // data_path is always written as its most general form, folder -> weight.
        IReadOnlyList<DataSource> sources => sources.ToDictionary(s => s.Path, s => (object?)(long)s.Weight),
        IReadOnlyDictionary<string, object?> map => Free(map, path),
        IEnumerable list => list.Cast<object?>().Select((item, i) => Value(item, $"{path}[{i}]")).ToList(),
        _ when RecordShape.IsRecord(value.GetType()) => Record(value),
        _ => throw new ArgumentException($"recipe value at {path} has unsupported type {value.GetType()}"),
    };

    /// <summary>Deep copy of a free map, normalising numbers to long/double so the tree has one shape.</summary>
    private static Dictionary<string, object?> Free(IEnumerable<KeyValuePair<string, object?>> map, string path)
    {
        var result = new Dictionary<string, object?>();
        foreach (var (key, value) in map)
            result[key] = FreeValue(value, $"{path}.{key}");
        return result;
    }

    private static object? FreeValue(object? value, string path) => value switch
    {
        null => null,
        string or bool or long or double => value,
        int i => (long)i,
        float f => (double)f,
        IEnumerable<KeyValuePair<string, object?>> map => Free(map, path),
        IEnumerable list and not string => list.Cast<object?>().Select((item, i) => FreeValue(item, $"{path}[{i}]")).ToList(),
        _ => throw new ArgumentException($"free recipe map value at {path} has unsupported type {value.GetType()}"),
    };
}

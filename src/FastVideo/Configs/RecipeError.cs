namespace FastVideo.Configs;

/// <summary>
/// A mistake in a recipe or in a <c>--set</c> override. The message always names where the bad value came from
/// (file and line, or <c>--set</c>) and the dotted key path, e.g.
/// <c>recipe.yaml:12: training.optimizer.learning_rat: unknown key; did you mean 'learning_rate'?</c>.
/// </summary>
public sealed class RecipeError : UserError
{
    /// <summary>Creates the error; the message is <c>Source[:Line]: [KeyPath: ]Detail</c>.</summary>
    public RecipeError(string source, int? line, string keyPath, string detail)
        : base(Format(source, line, keyPath, detail))
    {
        Source = source;
        Line = line;
        KeyPath = keyPath;
        Detail = detail;
    }

    /// <summary>
    /// One error for several mistakes of one kind (e.g. every missing required value): a single mistake is returned
    /// as it is; several give <c>Source: N what:</c> followed by one indented line per mistake, each with its own
    /// location. <see cref="Errors"/> holds them.
    /// </summary>
    public static RecipeError Combine(IReadOnlyList<RecipeError> errors, string source, string what)
    {
        if (errors.Count == 0) throw new ArgumentException("no errors to combine", nameof(errors));
        if (errors.Count == 1) return errors[0];
        var detail = $"{errors.Count} {what}:" + string.Concat(errors.Select(e => $"\n  {e.Message}"));
        return new RecipeError(source, null, "", detail) { _errors = errors.ToList() };
    }

    private IReadOnlyList<RecipeError>? _errors;

    /// <summary>The single mistakes this error reports (just itself unless it was made by <see cref="Combine"/>).</summary>
    public IReadOnlyList<RecipeError> Errors => _errors ?? [this];

    /// <summary>Dotted path of the offending key, e.g. <c>training.optimizer.learning_rate</c>; empty when the error
    /// is not about one key (a YAML syntax error, a malformed override).</summary>
    public string KeyPath { get; }

    /// <summary>1-based line in the recipe file, or null when the value came from an override (or has no line,
    /// e.g. a required top-level section that is absent).</summary>
    public int? Line { get; }

    /// <summary>The recipe file name as given, or <c>--set</c> when the value came from an override.</summary>
    public new string Source { get; }

    /// <summary>What is wrong, without the location prefix.</summary>
    public string Detail { get; }

    private static string Format(string source, int? line, string keyPath, string detail)
    {
        var where = line is null ? source : $"{source}:{line}";
        return keyPath.Length == 0 ? $"{where}: {detail}" : $"{where}: {keyPath}: {detail}";
    }
}

namespace FastVideo.Configs;

/// <summary>The two forms a recipe file can take; both load into the same <see cref="RunConfig"/>.</summary>
public enum RecipeForm
{
    /// <summary><c>recipe: {family, method}</c>, <c>roles.&lt;role&gt;</c> (with <c>family</c>), <c>method</c>, ...</summary>
    RecipeRoles,
    /// <summary>FastVideo's released form: <c>models.&lt;role&gt;._target_</c>, <c>method._target_</c>,
    /// <c>callbacks.&lt;name&gt;[._target_]</c>, <c>training</c>, <c>pipeline</c>.</summary>
    FastVideo,
}

public enum RecipeNoteKind
{
    /// <summary>A key FastVideo's recipes carry and FastVideo ignores: loaded and ignored, as there.</summary>
    Ignored,
    /// <summary>A value that means something else here than in FastVideo (e.g. a falsy value FastVideo replaces by
    /// its default); the recipe loads and runs with the meaning stated.</summary>
    DiffersFromFastVideo,
    /// <summary>A feature the recipe asks for that FastVideoSharp does not implement: the recipe loads (config show
    /// prints it) and training refuses it.</summary>
    NotImplemented,
}

/// <summary>
/// Something about a loaded recipe that is not an error: a warning (<see cref="RecipeNoteKind.Ignored"/>), a
/// difference from FastVideo, or a feature training will refuse. Located like a <see cref="RecipeError"/>.
/// </summary>
public sealed record RecipeNote(RecipeNoteKind Kind, string Source, int? Line, string KeyPath, string Detail)
{
    /// <summary>"warning", "differs from FastVideo" or "not implemented".</summary>
    public string Label => Kind switch
    {
        RecipeNoteKind.Ignored => "warning",
        RecipeNoteKind.DiffersFromFastVideo => "differs from FastVideo",
        _ => "not implemented",
    };

    /// <summary><c>label: source[:line]: key: detail</c>.</summary>
    public override string ToString()
    {
        var where = Line is null ? Source : $"{Source}:{Line}";
        return KeyPath.Length == 0 ? $"{Label}: {where}: {Detail}" : $"{Label}: {where}: {KeyPath}: {Detail}";
    }

    /// <summary>The error training raises for a <see cref="RecipeNoteKind.NotImplemented"/> note.</summary>
    public RecipeError ToError() => new(Source, Line, KeyPath, Detail);
}

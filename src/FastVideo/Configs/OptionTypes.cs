namespace FastVideo.Configs;

// How methods and callbacks declare their recipe options. An options type is a record with a parameterless
// constructor whose public init properties are the options: the YAML key is the snake_case property name, the default
// is the property initialiser, a C# `required` property has no default (the recipe must set it), and
// [System.ComponentModel.Description] is the text `fastvideo methods` prints. The recipe binder fills it once, when
// the recipe is loaded, with the same rules and errors as `training:`.

/// <summary>
/// Options every method accepts (<c>method:</c>). A method's own options record derives from this one, as a family's
/// role record derives from <see cref="RoleConfig"/>.
/// </summary>
public record MethodOptions
{
    /// <summary>Steps of the <c>piecewise_constant</c> LR schedule (<c>training.optimizer.lr_scheduler</c>).</summary>
    [System.ComponentModel.Description("rules of the piecewise_constant LR schedule, \"m1:s1,m2:s2,...,m_last\" (LR multiplier m1 until step s1, ...), e.g. \"1:100,0.1:200,0.01\"")]
    public string? LrStepRules { get; init; }
}

/// <summary>
/// An options record whose values need checks beyond their types (ranges, choices that depend on each other). The
/// loader runs <see cref="Check"/> once every value is bound and reports the first problem at its YAML line.
/// </summary>
public interface ICheckedOptions
{
    /// <summary>Every problem, each with its key relative to the record (<c>"dmd_denoising_steps"</c>,
    /// <c>"sampling_steps[1]"</c>, <c>"cfg_uncond.text"</c>) and what is wrong.</summary>
    IEnumerable<OptionProblem> Check();
}

/// <summary>One problem found by <see cref="ICheckedOptions.Check"/>.</summary>
public sealed record OptionProblem(string Key, string Detail);

/// <summary>What the recipe loader needs to know of the methods (implemented by the method registry).</summary>
public interface IMethodCatalog : IClassPathCatalog
{
    IReadOnlyCollection<string> Names { get; }
    /// <summary>The record type (a <see cref="MethodOptions"/> subclass or MethodOptions itself) that binds <c>method:</c>.</summary>
    Type OptionsType(string method);
}

/// <summary>What the recipe loader needs to know of the callbacks (implemented by the callback registry).</summary>
public interface ICallbackCatalog : IClassPathCatalog
{
    IReadOnlyCollection<string> Names { get; }
    /// <summary>The record type that binds <c>callbacks.&lt;name&gt;</c>.</summary>
    Type OptionsType(string callback);
}

/// <summary>
/// On an <c>IReadOnlyList</c> of numbers: a string of comma-separated items is accepted too, as
/// <c>--set method.dmd_denoising_steps=1000,757</c> gives it.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class CommaSeparatedAttribute : Attribute;

/// <summary>On an <c>IReadOnlyList&lt;string&gt;</c>: a single string is a one-item list (not split: prompts hold commas).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class SingleStringAsListAttribute : Attribute;

/// <summary>On a property: its recipe key when FastVideo does not spell it as the property's snake_case name
/// (<c>discrete_cd_N</c>).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class RecipeKeyAttribute(string key) : Attribute
{
    public string Key { get; } = key;
}

/// <summary>On an enum member: other spellings the recipe may use for it (its snake_case name is always accepted).</summary>
[AttributeUsage(AttributeTargets.Field)]
public sealed class AliasesAttribute(params string[] names) : Attribute
{
    public IReadOnlyList<string> Names { get; } = names;
}

/// <summary>
/// An options record some of whose values mean something else here than in FastVideo (e.g. a FastVideo pipeline
/// class that samples differently): the loader notes each, and <c>config show</c> prints them.
/// </summary>
public interface IFastVideoDifferences
{
    /// <summary>Each difference, with its key relative to the record and what differs.</summary>
    IEnumerable<OptionProblem> DifferencesFromFastVideo();
}

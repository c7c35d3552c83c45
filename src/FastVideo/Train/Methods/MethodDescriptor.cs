using FastVideo.Configs;
using FastVideo.Train.Models;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods;

/// <summary>
/// A method by name. <see cref="OptionsType"/> is the record its <c>method:</c> options bind into (a
/// <see cref="MethodOptions"/> subclass; the recipe loader binds it once, with line-numbered errors);
/// <see cref="CheckRoles"/> validates the recipe's roles before any weights load (names the role and what is wrong);
/// <see cref="Create"/> builds the method from the loaded role models. Declare one with <see cref="Of{TOptions}"/>.
/// </summary>
public sealed record MethodDescriptor(
    string Name,
    string Description,
    Type OptionsType,
    Action<RunConfig> CheckRoles,
    Func<RunConfig, IReadOnlyDictionary<string, ModelBase>, TrainingMethod> Create)
{
    /// <summary>
    /// FastVideo class paths (<c>method._target_</c>) that name this method, the one written back first (e.g.
    /// <c>fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod</c>); set it with <c>with { ClassPaths = ... }</c>.
    /// </summary>
    public IReadOnlyList<string> ClassPaths { get; init; } = [];

    /// <summary>
    /// The method's per-sample random draws go through <see cref="FastVideo.Distributed.DataParallelDraws"/> (e.g.
    /// <see cref="TrainingMethod.PerSampleNoise"/>), so a data-parallel run draws what one process would; a run on
    /// several processes refuses a method without it.
    /// </summary>
    public bool DataParallelDraws { get; init; }

    /// <summary>A method whose options are <typeparamref name="TOptions"/>; <paramref name="create"/> gets them typed
    /// (from <see cref="RunConfig.Method"/>).</summary>
    public static MethodDescriptor Of<TOptions>(string name, string description, Action<RunConfig> checkRoles,
        Func<RunConfig, TOptions, IReadOnlyDictionary<string, ModelBase>, TrainingMethod> create) where TOptions : MethodOptions =>
        new(name, description, typeof(TOptions), checkRoles, (config, roles) => create(config, config.MethodOptions<TOptions>(), roles));
}

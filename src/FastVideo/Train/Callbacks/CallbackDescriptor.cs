using FastVideo.Configs;
using FastVideo.Train.Methods;
using FastVideo.Train.State;

namespace FastVideo.Train.Callbacks;

/// <summary>
/// A callback by name (its <c>callbacks.&lt;name&gt;</c> key). <see cref="OptionsType"/> is the record its options bind
/// into (the recipe loader binds it once, with line-numbered errors); <see cref="Create"/> builds the callback from
/// it. Declare one with <see cref="Of{TOptions}"/>.
/// </summary>
public sealed record CallbackDescriptor(string Name, string Description, Type OptionsType, Func<object, TrainCallback> Create)
{
    /// <summary>
    /// FastVideo class paths (<c>callbacks.&lt;name&gt;._target_</c>) that name this callback, the one written back
    /// first (e.g. <c>fastvideo.train.callbacks.grad_clip.GradNormClipCallback</c>).
    /// </summary>
    public IReadOnlyList<string> ClassPaths { get; init; } = [];

    public static CallbackDescriptor Of<TOptions>(string name, string description, Func<TOptions, TrainCallback> create)
        where TOptions : class =>
        new(name, description, typeof(TOptions), options => create(options as TOptions ?? throw new InvalidOperationException(
            $"callback '{name}' needs {typeof(TOptions).Name} options, got {options.GetType().Name}")));
}

using FastVideo.Configs;
using FastVideo.Train.Methods;
using FastVideo.Train.State;

namespace FastVideo.Train.Callbacks;

/// <summary>Callback name -> descriptor. <see cref="Default"/> holds the built-in callbacks; users may register more.</summary>
public sealed class CallbackRegistry : ICallbackCatalog
{
    private readonly Dictionary<string, CallbackDescriptor> _callbacks = new(StringComparer.Ordinal);
    private readonly ClassPathIndex _classPaths = new();

    public static CallbackRegistry Default { get; } = CreateBuiltIn();

    public static CallbackRegistry CreateBuiltIn()
    {
        var r = new CallbackRegistry();
        r.Register(CallbackDescriptor.Of<GradClipOptions>("grad_clip",
            "clips each role's gradients to a global L2 norm before the optimizer step; logs grad_norm/<role>",
            o => new GradNormClipCallback(o)) with { ClassPaths = FastVideoPaths("grad_clip", "GradNormClipCallback") });
        r.Register(CallbackDescriptor.Of<EmaOptions>("ema",
            "exponential moving average of the student's weights (fp32, CPU); validation and export --ema use it",
            o => new EmaCallback(o)) with { ClassPaths = FastVideoPaths("ema", "EMACallback") });
        r.Register(CallbackDescriptor.Of<ValidationOptions>("validation",
            "samples fixed prompts and seeds every every_steps steps: latents, GIFs and the synthetic evaluator's metrics",
            o => new ValidationCallback(o)) with { ClassPaths = FastVideoPaths("validation", "ValidationCallback") });
        return r;
    }

    /// <summary>FastVideo's module path of a built-in callback and the package's re-export.</summary>
    private static string[] FastVideoPaths(string module, string className) =>
        [$"fastvideo.train.callbacks.{module}.{className}", $"fastvideo.train.callbacks.{className}"];

    public void Register(CallbackDescriptor callback)
    {
        if (string.IsNullOrWhiteSpace(callback.Name)) throw new ArgumentException("callback name must not be empty");
        if (!RecordShapeCheck(callback.OptionsType))
            throw new ArgumentException($"callback '{callback.Name}': OptionsType must be a record with a parameterless constructor");
        if (_callbacks.ContainsKey(callback.Name)) throw new ArgumentException($"callback '{callback.Name}' is already registered");
        _classPaths.Add("callback", callback.Name, callback.ClassPaths);
        _callbacks[callback.Name] = callback;
    }

    private static bool RecordShapeCheck(Type t) => t.IsClass && !t.IsAbstract && t.GetConstructor(Type.EmptyTypes) is not null;

    public IReadOnlyCollection<string> Names => _callbacks.Keys.Order(StringComparer.Ordinal).ToArray();

    public IReadOnlyList<CallbackDescriptor> Callbacks => Names.Select(n => _callbacks[n]).ToArray();

    public CallbackDescriptor Get(string name) => _callbacks.TryGetValue(name, out var c)
        ? c
        : throw new UserError($"callbacks.{name}: unknown callback (known: {string.Join(", ", Names)})");

    public Type OptionsType(string callback) => Get(callback).OptionsType;

    public string? NameOfClassPath(string classPath) => _classPaths.NameOfClassPath(classPath);

    public string? ClassPathOf(string name) => _classPaths.ClassPathOf(name);

    /// <summary>Every callback with its options, defaults and descriptions (printed by <c>fastvideo methods</c>).</summary>
    public string Describe()
    {
        var sb = new System.Text.StringBuilder();
        foreach (var c in Callbacks)
        {
            sb.Append($"{c.Name}: {c.Description}\n");
            if (c.ClassPaths.Count > 0) sb.Append($"  FastVideo class path (callbacks.<name>._target_): {string.Join(", ", c.ClassPaths)}\n");
            sb.Append($"  options (callbacks.{c.Name}.*):\n");
            sb.Append(OptionListing.Format(c.OptionsType, "    "));
        }
        return sb.ToString();
    }

    /// <summary>Builds the recipe's callbacks in recipe order (their dispatch order) from their bound options.</summary>
    public IReadOnlyList<TrainCallback> Build(RunConfig config)
    {
        var list = new List<TrainCallback>();
        foreach (var (name, options) in config.Callbacks)
        {
            var cb = Get(name).Create(options);
            cb.Name = name;
            list.Add(cb);
        }
        ValidationCallback.Link(list);   // validation samples with the EMA callback's weights when asked
        return list;
    }
}

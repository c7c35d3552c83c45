using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FastVideo.Models.Layers;

/// <summary>Parameters a module's constructor makes by hand (TorchSharp's own layers make theirs this way too).</summary>
public static class ModuleParameter
{
    /// <summary>
    /// A parameter owned by its module (disposed with it) rather than by whatever dispose scope the module is built
    /// in, so a model built inside a scope keeps its weights; the tensors made to initialise it are freed here.
    /// </summary>
    public static Parameter Create(Func<Tensor> init, bool requiresGrad = true)
    {
        using var scope = NewDisposeScope();
        var p = new Parameter(init(), requiresGrad);
        p.DetachFromDisposeScope();
        return p;
    }
}

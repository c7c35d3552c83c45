using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FastVideo.Weights;

/// <summary>
/// Puts new tensors in place of a module's parameters and buffers, the way TorchSharp's own <c>Module.to</c> does
/// when it converts them: through the module's public property of that name if it has a settable one (Linear.weight,
/// Conv3d.bias, ...), else by re-registering the name and updating the fields that held the old tensor. Used to
/// give a module built on the meta device (shapes only, no memory, no random init) its real weights.
/// </summary>
internal static class ModuleTensors
{
    const BindingFlags Instance = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly;

    static readonly MethodInfo RegisterParameter =
        typeof(nn.Module).GetMethod("ConditionallyRegisterParameter", BindingFlags.Instance | BindingFlags.NonPublic, [typeof(string), typeof(Parameter)])
        ?? throw new MissingMethodException("TorchSharp's Module.ConditionallyRegisterParameter(string, Parameter) is gone; update ModuleTensors.");

    static readonly MethodInfo RegisterBuffer =
        typeof(nn.Module).GetMethod("ConditionallyRegisterBuffer", BindingFlags.Instance | BindingFlags.NonPublic, [typeof(string), typeof(Tensor), typeof(bool)])
        ?? throw new MissingMethodException("TorchSharp's Module.ConditionallyRegisterBuffer(string, Tensor, bool) is gone; update ModuleTensors.");

    static readonly FieldInfo BuffersField =
        typeof(nn.Module).GetField("_internal_buffers", BindingFlags.Instance | BindingFlags.NonPublic)
        ?? throw new MissingFieldException("TorchSharp's Module._internal_buffers is gone; update ModuleTensors.");

    /// <summary>
    /// Every buffer of the module and its submodules with whether it is persistent. TorchSharp's named_buffers()
    /// leaves out non-persistent buffers even when asked for them, so this reads the registrations themselves.
    /// </summary>
    public static List<(string Name, Tensor Buffer, bool Persistent)> AllBuffers(nn.Module root)
    {
        var result = new List<(string, Tensor, bool)>();
        foreach (var (prefix, module) in root.named_modules().Prepend(("", root)))
        {
            if (BuffersField.GetValue(module) is not IEnumerable<(string, (Tensor, bool))> buffers) continue;
            foreach (var (name, (buffer, persistent)) in buffers)
                result.Add((prefix.Length == 0 ? name : $"{prefix}.{name}", buffer, persistent));
        }
        return result;
    }

    /// <summary>
    /// Replaces the state entry <paramref name="key"/> (a parameter or persistent buffer, dotted as in state_dict)
    /// with <paramref name="data"/>, which the module then owns. A parameter keeps its requires_grad. The old
    /// tensor is disposed.
    /// </summary>
    public static void Replace(nn.Module root, IReadOnlyDictionary<string, nn.Module> modules, string key, Tensor data)
    {
        int dot = key.LastIndexOf('.');
        var owner = dot < 0 ? root : modules.TryGetValue(key[..dot], out var m) ? m
            : throw new InvalidOperationException($"state entry '{key}' has no owning module '{key[..dot]}'");
        var leaf = key[(dot + 1)..];

        var param = owner.named_parameters(recurse: false).Where(np => np.name == leaf).Select(np => np.parameter).FirstOrDefault();
        if (param is not null)
        {
            var replacement = new Parameter(data, requires_grad: param.requires_grad);
            replacement.DetachFromDisposeScope();
            var property = owner.GetType().GetProperties(BindingFlags.Instance | BindingFlags.Public)
                .FirstOrDefault(p => p.Name == leaf && p.CanWrite && p.PropertyType.IsAssignableFrom(typeof(Parameter)));
            if (property is not null)
            {
                property.SetValue(owner, replacement);   // TorchSharp's setters register the new one and dispose the old
                if (!param.IsInvalid) param.Dispose();
            }
            else
            {
                RegisterParameter.Invoke(owner, [leaf, replacement]);
                SetFields(owner, leaf, param, replacement);
                param.Dispose();
            }
            return;
        }

        var buffer = owner.named_buffers(recurse: false).Where(nb => nb.name == leaf).Select(nb => nb.buffer).FirstOrDefault()
            ?? throw new InvalidOperationException($"state entry '{key}' is neither a parameter nor a buffer of {owner.GetType().Name}");
        data.DetachFromDisposeScope();
        RegisterBuffer.Invoke(owner, [leaf, data, true]);
        SetFields(owner, leaf, buffer, data);
        buffer.Dispose();
    }

    /// <summary>Every field of the module (any visibility, base classes too) that held <paramref name="old"/> or is
    /// named as the component <paramref name="name"/>.</summary>
    static void SetFields(nn.Module owner, string name, Tensor old, Tensor replacement)
    {
        for (var type = owner.GetType(); type is not null && type != typeof(object); type = type.BaseType)
        {
            foreach (var field in type.GetFields(Instance))
            {
                if (!typeof(Tensor).IsAssignableFrom(field.FieldType) || !field.FieldType.IsInstanceOfType(replacement)) continue;
                if (ReferenceEquals(field.GetValue(owner), old) || field.ComponentName() == name)
                    field.SetValue(owner, replacement);
            }
        }
    }

    /// <summary>
    /// Tensors of the module (parameters, buffers including non-persistent ones, and tensor fields) that are on the
    /// meta device or were disposed: what would break its forward after a partial replacement.
    /// </summary>
    public static List<string> Unmaterialized(nn.Module root)
    {
        var bad = new List<string>();
        foreach (var (name, p) in root.named_parameters())
            if (p.IsInvalid || p.device_type == DeviceType.META) bad.Add(name);
        foreach (var (name, b, _) in AllBuffers(root))
            if (b.IsInvalid || b.device_type == DeviceType.META) bad.Add(name);
        foreach (var (prefix, module) in root.named_modules().Prepend(("", root)))
        {
            for (var type = module.GetType(); type is not null && type != typeof(object); type = type.BaseType)
            {
                foreach (var field in type.GetFields(Instance))
                {
                    if (!typeof(Tensor).IsAssignableFrom(field.FieldType) || field.GetValue(module) is not Tensor t) continue;
                    if (t.IsInvalid || t.device_type == DeviceType.META)
                        bad.Add($"{(prefix.Length == 0 ? "" : prefix + ".")}{field.Name} (field of {module.GetType().Name})");
                }
            }
        }
        return bad.Distinct().ToList();
    }
}

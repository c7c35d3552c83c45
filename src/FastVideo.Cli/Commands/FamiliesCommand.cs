using System.CommandLine;
using FastVideo.Train.Models;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo families</c>: the registered model families and the options their roles accept.</summary>
public static class FamiliesCommand
{
    internal static Command Create(ModelFamilyRegistry registry)
    {
        var command = new Command("families", "List the model families and the options their roles accept (roles.<role>.*).");
        command.SetAction(r => Run(registry, r.InvocationConfiguration.Output));
        return command;
    }

    public static int Run(ModelFamilyRegistry registry, TextWriter stdout)
    {
        foreach (var f in registry.Families)
        {
            stdout.WriteLine($"{f.Name}: {f.Description}");
            if (f.ClassPaths.Count > 0) stdout.WriteLine($"  FastVideo class path (models.<role>._target_): {string.Join(", ", f.ClassPaths)}");
            stdout.WriteLine($"  latent space: {f.LatentSpace}; defaults: flow_shift {f.Defaults.FlowShift}, text_len {f.Defaults.TextLen}, latent channels {f.Defaults.Vae.LatentChannels}");
            stdout.WriteLine("  role options (roles.<role>.*):");
            foreach (var (key, type, def) in ModelFamilyRegistry.DescribeOptions(f.RoleConfigType))
                stdout.WriteLine($"    {key,-38} {type,-8} default {def}");
        }
        return 0;
    }
}

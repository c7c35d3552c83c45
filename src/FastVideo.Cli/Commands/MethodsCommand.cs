using System.CommandLine;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo methods</c>: the registered training methods and callbacks with their options and defaults.</summary>
public static class MethodsCommand
{
    internal static Command Create(MethodRegistry methods, CallbackRegistry callbacks)
    {
        var command = new Command("methods", "List the training methods and callbacks with their options and defaults (method.*, callbacks.<name>.*).");
        command.SetAction(r => Run(methods, callbacks, r.InvocationConfiguration.Output));
        return command;
    }

    public static int Run(MethodRegistry methods, CallbackRegistry callbacks, TextWriter stdout)
    {
        stdout.Write(methods.Describe());
        stdout.WriteLine();
        stdout.WriteLine("callbacks (callbacks.<name>):");
        stdout.Write(callbacks.Describe());
        return 0;
    }
}

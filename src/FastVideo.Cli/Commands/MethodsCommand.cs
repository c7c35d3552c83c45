using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo methods</c>: the registered training methods and callbacks with their options and defaults.</summary>
public static class MethodsCommand
{
    public static int Run(string[] args, MethodRegistry methods, CallbackRegistry callbacks, TextWriter stdout)
    {
        if (args.Length > 0) throw new UserError("usage: fastvideo methods");
        stdout.Write(methods.Describe());
        stdout.WriteLine();
        stdout.WriteLine("callbacks (callbacks.<name>):");
        stdout.Write(callbacks.Describe());
        return 0;
    }
}

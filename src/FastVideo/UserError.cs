namespace FastVideo;

/// <summary>
/// A mistake in what the user gave us (recipe, files, data, arguments). The CLI prints its message alone, without
/// a stack trace, and exits with <see cref="ExitCode"/>. The message must name the file, key or row and say what was
/// expected.
/// </summary>
public class UserError : Exception
{
    public UserError(string message) : base(message) { }
    public UserError(string message, Exception inner) : base(message, inner) { }

    /// <summary>The process exit code the CLI returns for this error (see <see cref="ExitCodes"/>).</summary>
    public virtual int ExitCode => ExitCodes.BadInput;
}

/// <summary>
/// A file-system operation failed (disk full, read-only folder, permission, a file where a folder should be, a
/// corrupt file). The message names the path and what was being done; the last good checkpoint is left intact.
/// </summary>
public sealed class StorageError : UserError
{
    public StorageError(string message, Exception? inner = null) : base(message, inner!) { }
    public override int ExitCode => ExitCodes.Storage;
}

/// <summary>The run folder is held by another run, or already holds a run that this one would overwrite.</summary>
public sealed class RunFolderError : UserError
{
    public RunFolderError(string message) : base(message) { }
    public override int ExitCode => ExitCodes.RunFolder;
}

/// <summary>Process exit codes of the <c>fastvideo</c> command.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>An unexpected failure (a bug): one line, the stack trace only with <c>FASTVIDEO_DEBUG=1</c>.</summary>
    public const int Internal = 1;
    /// <summary>Bad arguments, recipe, weights or data.</summary>
    public const int BadInput = 2;
    /// <summary>The output folder is in use by another run, or holds a run and neither resume nor --overwrite was given.</summary>
    public const int RunFolder = 3;
    /// <summary>A file-system failure: disk full, read-only, permission, a file where a folder should be, corrupt JSON.</summary>
    public const int Storage = 4;
    /// <summary>Training stopped on a non-finite loss; the last good checkpoint is named.</summary>
    public const int TrainingStopped = 5;
    /// <summary>A multi-process run stopped because another of its processes failed, was killed, or disagreed (weights).</summary>
    public const int Distributed = 6;

    /// <summary>The code a failure ends the command with: a <see cref="UserError"/>'s own, 4 for an escaped
    /// file-system exception, else 1 (a bug).</summary>
    public static int For(Exception e) => e switch
    {
        UserError u => u.ExitCode,
        IOException or UnauthorizedAccessException => Storage,
        _ => Internal,
    };
}

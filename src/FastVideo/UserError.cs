namespace FastVideo;

/// <summary>
/// A mistake in what the user gave us (recipe, files, data, arguments). The CLI prints its message alone, without
/// a stack trace, and exits with code 2. The message must name the file, key or row and say what was expected.
/// </summary>
public class UserError : Exception
{
    public UserError(string message) : base(message) { }
    public UserError(string message, Exception inner) : base(message, inner) { }
}

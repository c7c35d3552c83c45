using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Weights;

/// <summary>A fresh folder under the system temp dir, deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } =
        Directory.CreateDirectory(System.IO.Path.Combine(System.IO.Path.GetTempPath(), "fv-weights-" + Guid.NewGuid().ToString("N"))).FullName;

    public string this[string relative] => System.IO.Path.Combine(Path, relative);

    /// <summary>Creates the parent folders of a relative path and writes text there; returns the full path.</summary>
    public string Write(string relative, string text)
    {
        var p = this[relative];
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(p)!);
        File.WriteAllText(p, text);
        return p;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>Tests that set process environment variables run alone (xunit runs other collections in parallel).</summary>
[CollectionDefinition("env", DisableParallelization = true)]
public sealed class EnvCollection { }

/// <summary>Sets environment variables for the duration of a test and restores the previous values.</summary>
internal sealed class EnvScope : IDisposable
{
    readonly Dictionary<string, string?> _saved = new();

    public EnvScope Set(string name, string? value)
    {
        if (!_saved.ContainsKey(name)) _saved[name] = Environment.GetEnvironmentVariable(name);
        Environment.SetEnvironmentVariable(name, value);
        return this;
    }

    public void Dispose()
    {
        foreach (var (k, v) in _saved) Environment.SetEnvironmentVariable(k, v);
    }
}

internal static class TensorAssert
{
    /// <summary>Same dtype, shape and bytes (exact, also for NaN payloads and half types).</summary>
    public static void Identical(Tensor expected, Tensor actual, string? name = null)
    {
        Assert.True(expected.dtype == actual.dtype, $"{name}: dtype {expected.dtype} vs {actual.dtype}");
        Assert.True(expected.shape.SequenceEqual(actual.shape),
            $"{name}: shape [{string.Join(",", expected.shape)}] vs [{string.Join(",", actual.shape)}]");
        Assert.Equal(Bytes(expected), Bytes(actual));
    }

    public static byte[] Bytes(Tensor t)
    {
        using var c = t.detach().cpu().contiguous();
        return c.numel() == 0 ? [] : c.bytes.ToArray();
    }
}

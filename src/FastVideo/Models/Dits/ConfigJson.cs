using System.Text.Json.Nodes;

namespace FastVideo.Models.Dits;

/// <summary>
/// Typed fields of a Diffusers <c>config.json</c>, absent (or null) fields taking the given default, with one wording
/// for a value of the wrong type: "&lt;source&gt;: &lt;key&gt; must be &lt;what&gt;, got &lt;value&gt;".
/// </summary>
internal sealed class ConfigJson(JsonObject json, string source)
{
    public string Source => source;

    public bool Has(string key) => json[key] is not null;

    public int Int(string key, int fallback) => Get(key, fallback, n => (int)n, "an integer");

    public double Double(string key, double fallback) => Get(key, fallback, n => (double)n, "a number");

    public bool Bool(string key, bool fallback) => Get(key, fallback, n => (bool)n, "true or false");

    public string? String(string key, string? fallback) => Get(key, fallback, n => (string?)n, "a string");

    /// <summary>A list of integers, or a single integer (read as a list of one).</summary>
    public int[] Ints(string key, int[] fallback) => Get(key, fallback,
        n => n is JsonArray a ? a.Select(x => (int)x!).ToArray() : [(int)n], "a list of integers");

    private T Get<T>(string key, T fallback, Func<JsonNode, T> read, string what)
    {
        if (json[key] is not { } node) return fallback;
        try { return read(node); }
        catch (Exception e) when (e is InvalidOperationException or FormatException or InvalidCastException or NullReferenceException)
        { throw new UserError($"{source}: {key} must be {what}, got {node.ToJsonString()}"); }
    }
}

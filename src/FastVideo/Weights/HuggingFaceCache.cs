namespace FastVideo.Weights;

/// <summary>
/// Read-only lookup in the standard local Hugging Face hub cache (the layout huggingface_hub writes):
/// <c>&lt;hub&gt;/models--&lt;org&gt;--&lt;name&gt;/refs/main</c> holds a commit hash and
/// <c>snapshots/&lt;hash&gt;/</c> holds the files. Nothing is ever downloaded.
/// </summary>
public static class HuggingFaceCache
{
    /// <summary>
    /// The hub cache folder and where it came from, with huggingface_hub's precedence: <c>$HF_HUB_CACHE</c>, the
    /// legacy <c>$HUGGINGFACE_HUB_CACHE</c>, <c>$HF_HOME/hub</c>, <c>$XDG_CACHE_HOME/huggingface/hub</c>,
    /// <c>~/.cache/huggingface/hub</c>.
    /// </summary>
    public static (string Path, string Origin) HubCacheDir()
    {
        static string? Env(string name) =>
            Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? ExpandHome(v) : null;

        if (Env("HF_HUB_CACHE") is string hub) return (hub, "$HF_HUB_CACHE");
        if (Env("HUGGINGFACE_HUB_CACHE") is string legacy) return (legacy, "$HUGGINGFACE_HUB_CACHE");
        if (Env("HF_HOME") is string home) return (Path.Combine(home, "hub"), "$HF_HOME/hub");
        if (Env("XDG_CACHE_HOME") is string xdg) return (Path.Combine(xdg, "huggingface", "hub"), "$XDG_CACHE_HOME/huggingface/hub");
        var user = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return (Path.Combine(user, ".cache", "huggingface", "hub"), "the default ~/.cache/huggingface/hub");
    }

    /// <summary>
    /// The snapshot folder of <paramref name="modelId"/> ("org/name"): the commit named by refs/main, else the only
    /// (or most recently written) snapshot. Not found is a <see cref="UserError"/> naming the folders searched.
    /// </summary>
    public static string FindSnapshot(string modelId)
    {
        var (hub, origin) = HubCacheDir();
        var repoDir = Path.Combine(hub, "models--" + modelId.Replace("/", "--"));
        var snapshots = Path.Combine(repoDir, "snapshots");

        string NotFound(string detail) =>
            $"Model '{modelId}' is not a local folder and was not found in the local Hugging Face cache: {detail}. " +
            $"Searched the hub cache '{hub}' (from {origin}), folder '{repoDir}'. Downloading is not supported (no " +
            "network access): download the model elsewhere (e.g. `huggingface-cli download " + modelId + "`) and set " +
            "HF_HUB_CACHE or HF_HOME to that cache, or point init_from at the local model folder " +
            "(a Diffusers pipeline folder with model_index.json, or a component folder with config.json and safetensors weights).";

        if (!Directory.Exists(repoDir))
            throw new UserError(NotFound("no such cached model"));

        var refMain = Path.Combine(repoDir, "refs", "main");
        if (File.Exists(refMain))
        {
            var hash = File.ReadAllText(refMain).Trim();
            var dir = Path.Combine(snapshots, hash);
            if (hash.Length > 0 && Directory.Exists(dir)) return Path.GetFullPath(dir);
            // refs/main points at a snapshot that is not there (interrupted download): fall back to what exists.
        }

        var candidates = Directory.Exists(snapshots)
            ? Directory.GetDirectories(snapshots).OrderByDescending(Directory.GetLastWriteTimeUtc).ToList()
            : [];
        if (candidates.Count == 0)
            throw new UserError(NotFound($"'{snapshots}' holds no snapshot (incomplete download?)"));
        return Path.GetFullPath(candidates[0]);
    }

    internal static string ExpandHome(string p) =>
        p == "~" || p.StartsWith("~/")
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), p.Length > 2 ? p[2..] : "")
            : p;
}

using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace FastVideo.Weights;

/// <summary>
/// One component (by default the transformer) of a Diffusers model, located on disk: its config.json and its
/// safetensors weight files. Built by <see cref="Resolve"/> from a pipeline folder, a bare component folder, or a
/// Hugging Face model id already present in the local cache (no downloads).
/// </summary>
public sealed partial class DiffusersModelFolder
{
    public const string ModelIndexFile = "model_index.json";
    public const string ConfigFile = "config.json";

    // Weight layouts in order of preference: Diffusers' own names, then the plain names our export writes.
    static readonly (string Single, string Index)[] WeightNames =
    [
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
        ("model.safetensors", "model.safetensors.index.json"),
    ];

    /// <summary>What the caller asked for (path or model id), for messages.</summary>
    public string Source { get; }
    /// <summary>The requested component name ("transformer", ...).</summary>
    public string Component { get; }
    /// <summary>Absolute path of the component folder (holds config.json and the weights).</summary>
    public string ComponentFolder { get; }
    /// <summary>The pipeline folder (has model_index.json), or null when the component folder stands alone.</summary>
    public string? Root { get; }
    /// <summary>The component's config.json.</summary>
    public string ConfigPath { get; }
    /// <summary>The safetensors files holding the weights: one file, or the shards in name order.</summary>
    public IReadOnlyList<string> WeightFiles { get; }
    /// <summary>The shard index (<c>*.safetensors.index.json</c>), or null for a single file or index-less shards.</summary>
    public string? IndexPath { get; }
    public bool IsSharded => IndexPath is not null || WeightFiles.Count > 1;

    DiffusersModelFolder(string source, string component, string componentFolder, string? root,
                         IReadOnlyList<string> weightFiles, string? indexPath)
    {
        Source = source;
        Component = component;
        ComponentFolder = componentFolder;
        Root = root;
        ConfigPath = Path.Combine(componentFolder, ConfigFile);
        WeightFiles = weightFiles;
        IndexPath = indexPath;
    }

    /// <summary>The folder of another pipeline component (e.g. "vae"), or null if there is no pipeline root or no such folder.</summary>
    public string? ComponentDir(string name)
    {
        if (Root is null) return null;
        var dir = Path.Combine(Root, name);
        return Directory.Exists(dir) ? dir : null;
    }

    public bool HasComponent(string name) => ComponentDir(name) is not null;

    /// <summary>A file shipped with the model (e.g. negative_prompt_embeds.safetensors): in the pipeline root, else in
    /// the component folder; null when neither has it.</summary>
    public string? FindFile(string fileName) =>
        new[] { Root, ComponentFolder }.Where(d => d is not null).Select(d => Path.Combine(d!, fileName)).FirstOrDefault(File.Exists);

    /// <summary>Like <see cref="ComponentDir"/> but a missing component is a <see cref="UserError"/>.</summary>
    public string RequireComponentDir(string name)
    {
        if (ComponentDir(name) is string dir) return dir;
        throw new UserError(Root is null
            ? $"Model '{Source}' is a bare '{Component}' folder ({ComponentFolder}) with no pipeline around it, so it has no " +
              $"'{name}' component. Point at the full Diffusers pipeline folder (the one with {ModelIndexFile})."
            : $"Model pipeline folder '{Root}' has no '{name}/' subfolder.");
    }

    /// <summary>The component's config.json as a JSON object.</summary>
    public JsonObject ReadConfig() => ReadJsonObject(ConfigPath, "config");

    internal static JsonObject ReadJsonObject(string path, string what)
    {
        if (!File.Exists(path)) throw new UserError($"The {what} file '{path}' does not exist.");
        JsonNode? node;
        try
        {
            using var fs = File.OpenRead(path);
            node = JsonNode.Parse(fs, documentOptions: new JsonDocumentOptions
            {
                AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip,
            });
        }
        catch (JsonException e)
        {
            throw new UserError($"The {what} file '{path}' is not valid JSON: {e.Message}", e);
        }
        return node as JsonObject
               ?? throw new UserError($"The {what} file '{path}' must contain a JSON object, found {node?.GetValueKind().ToString() ?? "null"}.");
    }

    // ------------------------------------------------------------------------------------------------ resolution

    /// <summary>
    /// Finds <paramref name="component"/> of the model named by <paramref name="pathOrModelId"/>:
    /// <list type="bullet">
    /// <item>a Diffusers pipeline folder (has model_index.json; the component is its subfolder),</item>
    /// <item>a bare component folder (config.json plus safetensors weights),</item>
    /// <item>a Hugging Face model id "org/name" found in the local Hugging Face cache.</item>
    /// </list>
    /// </summary>
    public static DiffusersModelFolder Resolve(string pathOrModelId, string component = "transformer")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(component);
        if (string.IsNullOrWhiteSpace(pathOrModelId))
            throw new UserError("No model given: expected a Diffusers model folder or a Hugging Face model id such as 'Wan-AI/Wan2.1-T2V-1.3B-Diffusers'.");

        var expanded = HuggingFaceCache.ExpandHome(pathOrModelId.Trim());
        if (Directory.Exists(expanded))
            return FromDirectory(pathOrModelId, Path.GetFullPath(expanded), component);
        if (File.Exists(expanded))
            throw new UserError(
                $"Model '{pathOrModelId}' is a file; expected a folder (a Diffusers pipeline folder with {ModelIndexFile}, " +
                $"or a component folder with {ConfigFile} and safetensors weights).");

        if (LooksLikeModelId(pathOrModelId))
        {
            var snapshot = HuggingFaceCache.FindSnapshot(pathOrModelId.Trim());
            return FromDirectory(pathOrModelId, snapshot, component);
        }
        throw new UserError(
            $"Model folder '{pathOrModelId}' does not exist (resolved to '{Path.GetFullPath(expanded)}'). Expected a " +
            "Diffusers pipeline folder, a component folder, or a Hugging Face model id 'org/name' in the local cache.");
    }

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex ModelIdPattern();

    /// <summary>"org/name" with exactly one slash and hub-legal characters (not absolute, not relative like ./x).</summary>
    internal static bool LooksLikeModelId(string s) => ModelIdPattern().IsMatch(s.Trim()) && !s.Contains("..");

    static DiffusersModelFolder FromDirectory(string source, string dir, string component)
    {
        // A pipeline: model_index.json (or, leniently, just a component subfolder with its config.json).
        var sub = Path.Combine(dir, component);
        bool hasIndex = File.Exists(Path.Combine(dir, ModelIndexFile));
        if (hasIndex || File.Exists(Path.Combine(sub, ConfigFile)))
        {
            if (!Directory.Exists(sub))
                throw new UserError(
                    $"Model '{source}': the pipeline folder '{dir}' has no '{component}/' subfolder " +
                    $"(found: {DescribeEntries(dir)}).");
            return FromComponentFolder(source, sub, component, root: dir);
        }

        // A bare component folder.
        if (File.Exists(Path.Combine(dir, ConfigFile)))
        {
            var parent = Path.GetDirectoryName(dir);
            var root = parent is not null && File.Exists(Path.Combine(parent, ModelIndexFile)) ? parent : null;
            return FromComponentFolder(source, dir, component, root);
        }

        throw new UserError(
            $"Model '{source}': '{dir}' is neither a Diffusers pipeline folder (expected {ModelIndexFile} and a " +
            $"'{component}/' subfolder) nor a component folder (expected {ConfigFile} and " +
            $"{WeightNames[0].Single} or {WeightNames[1].Single}). Found: {DescribeEntries(dir)}.");
    }

    static DiffusersModelFolder FromComponentFolder(string source, string dir, string component, string? root)
    {
        if (!File.Exists(Path.Combine(dir, ConfigFile)))
            throw new UserError($"Model '{source}': the component folder '{dir}' has no {ConfigFile}.");

        var found = WeightNames
            .Select(n => (n, single: File.Exists(Path.Combine(dir, n.Single)), index: File.Exists(Path.Combine(dir, n.Index)),
                          shards: ShardSet(dir, n.Single)))
            .Where(x => x.single || x.index || x.shards is not null)
            .ToList();
        if (found.Count > 1)
            throw new UserError(
                $"Model '{source}': the folder '{dir}' holds two sets of weights ({found[0].n.Single}* and " +
                $"{found[1].n.Single}*); keep only one so it is clear which to load.");
        if (found.Count == 0)
        {
            bool hasBin = Directory.EnumerateFiles(dir, "*.bin").Any();
            throw new UserError(
                $"Model '{source}': no safetensors weights in '{dir}'. Expected {WeightNames[0].Single}, " +
                $"{WeightNames[0].Index} with its shards, or {WeightNames[1].Single} / {WeightNames[1].Index}." +
                (hasBin ? " Only PyTorch .bin files are there; convert them to safetensors first." : ""));
        }

        var (names, single, index, shards) = found[0];
        // Diffusers gives the index precedence over a single file, so do we.
        if (index)
        {
            var indexPath = Path.Combine(dir, names.Index);
            var map = ShardIndex.Read(indexPath);
            return new DiffusersModelFolder(source, component, dir, root,
                map.ShardFiles.Select(f => Path.Combine(dir, f)).ToList(), indexPath);
        }
        if (single)
            return new DiffusersModelFolder(source, component, dir, root, [Path.Combine(dir, names.Single)], null);
        return new DiffusersModelFolder(source, component, dir, root, shards!, null);
    }

    [GeneratedRegex(@"^(?<stem>.+)-(?<k>\d{5})-of-(?<n>\d{5})\.safetensors$")]
    private static partial Regex ShardNamePattern();

    /// <summary>
    /// Shards without an index ("&lt;stem&gt;-0000k-of-0000n.safetensors" for the stem of <paramref name="singleName"/>):
    /// the complete, consistent set in order, null if there are none. An incomplete set is an error.
    /// </summary>
    static List<string>? ShardSet(string dir, string singleName)
    {
        var stem = Path.GetFileNameWithoutExtension(singleName);
        var shards = new List<(int k, int n, string path)>();
        foreach (var f in Directory.EnumerateFiles(dir, "*.safetensors"))
        {
            var m = ShardNamePattern().Match(Path.GetFileName(f));
            if (m.Success && m.Groups["stem"].Value == stem)
                shards.Add((int.Parse(m.Groups["k"].Value), int.Parse(m.Groups["n"].Value), f));
        }
        if (shards.Count == 0) return null;
        int total = shards[0].n;
        var ks = shards.Select(s => s.k).ToHashSet();
        if (shards.Any(s => s.n != total) || !Enumerable.Range(1, total).All(ks.Contains) || shards.Count != total)
            throw new UserError(
                $"The folder '{dir}' has an incomplete or inconsistent set of shards {stem}-*-of-*.safetensors " +
                $"(found {string.Join(", ", shards.Select(s => Path.GetFileName(s.path)).Order(StringComparer.Ordinal))}) " +
                "and no index file; expected shards 1..n of the same n.");
        return shards.OrderBy(s => s.k).Select(s => s.path).ToList();
    }

    static string DescribeEntries(string dir)
    {
        var names = Directory.EnumerateFileSystemEntries(dir)
            .Select(p => Path.GetFileName(p) + (Directory.Exists(p) ? "/" : ""))
            .Order(StringComparer.Ordinal).ToList();
        if (names.Count == 0) return "nothing (empty folder)";
        return string.Join(", ", names.Take(15)) + (names.Count > 15 ? $", ... ({names.Count} entries)" : "");
    }

    public override string ToString() =>
        $"{Component} of '{Source}' ({ComponentFolder}; {WeightFiles.Count} weight file(s){(IsSharded ? ", sharded" : "")})";
}

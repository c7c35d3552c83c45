using System.Text.Json.Nodes;

namespace FastVideo.Weights;

/// <summary>
/// A sharded-checkpoint index (<c>*.safetensors.index.json</c>): <c>{"metadata": {...}, "weight_map": {key: shard file}}</c>.
/// Shard files are named relative to the index's folder.
/// </summary>
internal sealed record ShardIndex(string IndexPath, IReadOnlyDictionary<string, string> WeightMap, IReadOnlyList<string> ShardFiles)
{
    public string Folder => Path.GetDirectoryName(Path.GetFullPath(IndexPath))!;

    public static ShardIndex Read(string indexPath)
    {
        var root = DiffusersModelFolder.ReadJsonObject(indexPath, "shard index");
        if (root["weight_map"] is not JsonObject map)
            throw new UserError($"The shard index '{indexPath}' has no 'weight_map' object (expected {{\"weight_map\": {{tensor name: shard file}}}}).");

        var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in map)
        {
            string? file = value is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
            // Shards live next to the index; a path that leaves the folder is a broken (or hostile) index.
            if (string.IsNullOrWhiteSpace(file) || Path.IsPathRooted(file) || file.Split('/', '\\').Contains(".."))
                throw new UserError(
                    $"The shard index '{indexPath}' maps '{key}' to {value?.ToJsonString() ?? "null"}; expected the file name of a shard in the same folder.");
            weightMap[key] = file;
        }
        if (weightMap.Count == 0)
            throw new UserError($"The shard index '{indexPath}' has an empty 'weight_map'.");

        var shards = weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        return new ShardIndex(indexPath, weightMap, shards);
    }
}

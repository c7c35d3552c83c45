using System.Text;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Tests;

/// <summary>Real-shaped model folders that take no disk space, for dry runs of full-size configs.</summary>
internal static class HeaderOnlyWeights
{
    /// <summary>
    /// Writes <paramref name="path"/>: a safetensors file whose header lists the parameters of
    /// <paramref name="metaModel"/> (built on the meta device) with their real names, shapes and dtype BF16, and whose
    /// data section is a sparse, never-written hole: the file is valid and takes no disk space. Returns the parameter count.
    /// </summary>
    public static long Write(nn.Module metaModel, string path)
    {
        var header = new JsonObject();
        long offset = 0, count = 0;
        foreach (var (name, tensor) in metaModel.state_dict())
        {
            long bytes = 2 * tensor.numel();
            header[name] = new JsonObject
            {
                ["dtype"] = "BF16",
                ["shape"] = new JsonArray(tensor.shape.Select(s => (JsonNode)s).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
            count += tensor.numel();
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((ulong)json.Length));
        fs.Write(json);
        fs.SetLength(8 + json.Length + offset);
        return count;
    }
}

using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace FastVideo.Data;

/// <summary>
/// Minimal safetensors for float32 tensors, private to the data layer (the shared safetensors library lives in
/// Weights/). Format: u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} padded with
/// spaces to a multiple of 8, then the raw little-endian tensor bytes.
/// </summary>
internal static class SafetensorsMini
{
    public static void WriteF32(string path, IReadOnlyDictionary<string, (long[] Shape, float[] Data)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new Dictionary<string, object>();
        if (metadata is not null) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var (name, (shape, data)) in tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (TensorBytes.ShapeProduct(shape) != data.Length) throw new ArgumentException($"{name}: data does not fill its shape");
            header[name] = new { dtype = "F32", shape, data_offsets = new[] { offset, offset + data.Length * 4L } };
            offset += data.Length * 4L;
        }
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padded = (json.Length + 7) / 8 * 8;
        var tmp = path + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
            fs.Write(len);
            fs.Write(json);
            for (int i = json.Length; i < padded; i++) fs.WriteByte((byte)' ');
            foreach (var (_, (_, data)) in tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                fs.Write(TensorDTypes.Encode(data, TensorDType.Float32));
        }
        File.Move(tmp, path, overwrite: true);
    }

    public static Dictionary<string, (long[] Shape, float[] Data)> ReadF32(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 8) throw new UserError($"{path}: too short for a safetensors file");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (n > (ulong)(bytes.Length - 8)) throw new UserError($"{path}: safetensors header length {n} exceeds the file");
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, (int)n));
        var result = new Dictionary<string, (long[], float[])>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") continue;
            var dtype = p.Value.GetProperty("dtype").GetString();
            if (dtype != "F32") throw new UserError($"{path}: tensor '{p.Name}' has dtype {dtype}; only F32 is read here");
            var shape = p.Value.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            var off = p.Value.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            long start = 8 + (long)n + off[0], len = off[1] - off[0];
            if (len != TensorBytes.ShapeProduct(shape) * 4 || start + len > bytes.Length)
                throw new UserError($"{path}: tensor '{p.Name}' offsets do not match its shape");
            var data = new float[len / 4];
            TensorDTypes.Decode(bytes.AsSpan((int)start, (int)len), TensorDType.Float32, data);
            result[p.Name] = (shape, data);
        }
        return result;
    }
}

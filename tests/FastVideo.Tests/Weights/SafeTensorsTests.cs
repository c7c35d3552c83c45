using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using FastVideo.Weights;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Weights;

public class SafeTensorsTests
{
    static Dictionary<string, Tensor> SampleTensors()
    {
        var g = new Generator(1234);
        var f32 = torch.randn([3, 4], generator: g);
        return new Dictionary<string, Tensor>
        {
            ["z.f32"] = f32,
            ["blocks.0.attn1.to_q.weight"] = torch.randn([2, 3, 5], generator: g).to(ScalarType.BFloat16),
            ["blocks.10.norm.weight"] = torch.randn([7], generator: g).to(ScalarType.Float16),
            ["a.f64"] = torch.tensor(new[] { 1.5, -2.25, double.MaxValue }),
            ["i64"] = torch.tensor(new long[] { long.MinValue, 0, 42 }),
            ["i32"] = torch.tensor(new[] { -1, 7 }),
            ["u8"] = torch.tensor(new byte[] { 0, 255, 3 }),
            ["mask"] = torch.tensor(new[] { true, false, true }),
            ["scalar"] = torch.tensor(3.25f),
            ["empty"] = torch.zeros(0, 3),
            // A non-contiguous view: must be written as its logical (row-major) values.
            ["transposed"] = f32.t(),
        };
    }

    [Fact]
    public void WriteReadWrite_IsByteIdentical_AndValuesSurvive()
    {
        using var dir = new TempDir();
        var tensors = SampleTensors();
        var meta = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "Ünïcode + <tags> & \"quotes\"" };

        SafeTensors.Save(dir["a.safetensors"], tensors, meta);
        var loaded = SafeTensors.Load(dir["a.safetensors"]);
        var loadedMeta = SafeTensors.ReadMetadata(dir["a.safetensors"]);
        SafeTensors.Save(dir["b.safetensors"], loaded, loadedMeta);

        Assert.Equal(File.ReadAllBytes(dir["a.safetensors"]), File.ReadAllBytes(dir["b.safetensors"]));
        Assert.Equal(meta, loadedMeta);
        Assert.Equal(tensors.Keys.Order(), loaded.Keys.Order());
        foreach (var (k, t) in tensors)
            TensorAssert.Identical(t, loaded[k], k);
        Assert.Equal(tensors["z.f32"].t().contiguous().data<float>().ToArray(), loaded["transposed"].data<float>().ToArray());
    }

    [Fact]
    public void Save_IsDeterministic_SortedKeys_PaddedHeader()
    {
        using var dir = new TempDir();
        var tensors = SampleTensors();
        SafeTensors.Save(dir["fwd.safetensors"], tensors, new Dictionary<string, string> { ["b"] = "2", ["a"] = "1" });
        SafeTensors.Save(dir["rev.safetensors"], tensors.Reverse(), new Dictionary<string, string> { ["a"] = "1", ["b"] = "2" });
        var bytes = File.ReadAllBytes(dir["fwd.safetensors"]);
        Assert.Equal(bytes, File.ReadAllBytes(dir["rev.safetensors"]));

        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0UL, n % 8);
        var headerText = Encoding.UTF8.GetString(bytes, 8, (int)n);
        Assert.StartsWith("{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\"},", headerText);
        Assert.InRange(headerText.Length - headerText.TrimEnd(' ').Length, 0, 7);   // only space padding
        Assert.EndsWith("}", headerText.TrimEnd(' '));

        using var doc = JsonDocument.Parse(headerText);
        var names = doc.RootElement.EnumerateObject().Select(p => p.Name).Where(n => n != "__metadata__").ToList();
        // Widest element first, then by name; so every tensor starts at a multiple of its element size.
        var expectedOrder = tensors.OrderByDescending(kv => kv.Value.element_size())
                                   .ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key).ToList();
        Assert.Equal(expectedOrder, names);
        Assert.Equal(["a.f64", "i64", "empty", "i32", "scalar", "transposed", "z.f32"], names.Take(7).ToArray());
        // Data is packed back to back in header order and fills the rest of the file exactly.
        long expectedStart = 0;
        foreach (var name in names)
        {
            var off = doc.RootElement.GetProperty(name).GetProperty("data_offsets");
            Assert.Equal(expectedStart, off[0].GetInt64());
            Assert.Equal(0, (8 + (long)n + expectedStart) % tensors[name].element_size());
            expectedStart = off[1].GetInt64();
        }
        Assert.Equal(bytes.Length - 8 - (long)n, expectedStart);
        Assert.Equal("BF16", doc.RootElement.GetProperty("blocks.0.attn1.to_q.weight").GetProperty("dtype").GetString());
        Assert.Equal("[]", doc.RootElement.GetProperty("scalar").GetProperty("shape").GetRawText());
    }

    /// <summary>A file built byte by byte, as another writer would (no padding, keys not sorted, metadata last).</summary>
    static byte[] HandBuiltFile(string header, params byte[][] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var ms = new MemoryStream();
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)h.Length);
        ms.Write(len);
        ms.Write(h);
        foreach (var d in data) ms.Write(d);
        return ms.ToArray();
    }

    static byte[] Floats(params float[] v) => v.SelectMany(BitConverter.GetBytes).ToArray();

    [Fact]
    public void Load_ReadsFileFromIndependentWriter()
    {
        using var dir = new TempDir();
        var header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}," +
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]}," +
                     "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[22,24]}," +
                     "\"__metadata__\":{\"format\":\"pt\"}}";
        // bf16: 1.0 = 0x3F80, -2.0 = 0xC000, 0.5 = 0x3F00; f16: 1.5 = 0x3E00 (little-endian bytes)
        var file = HandBuiltFile(header, Floats(1f, 2f, -3.5f, 1e-3f),
            [0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F], [0x00, 0x3E]);
        File.WriteAllBytes(dir["x.safetensors"], file);

        var info = SafeTensors.ReadHeader(dir["x.safetensors"]);
        Assert.Equal(["w", "b", "h"], info.Keys.ToArray());
        Assert.Equal("BF16", info["b"].Dtype);
        Assert.Equal(new long[] { 2, 2 }, info["w"].Shape);
        Assert.Equal((16L, 22L), (info["b"].DataStart, info["b"].DataEnd));
        Assert.Equal(ScalarType.BFloat16, info["b"].ScalarType);
        Assert.Equal("pt", SafeTensors.ReadMetadata(dir["x.safetensors"])["format"]);

        var t = SafeTensors.Load(dir["x.safetensors"]);
        Assert.Equal(new long[] { 2, 2 }, t["w"].shape);
        Assert.Equal(new[] { 1f, 2f, -3.5f, 1e-3f }, t["w"].data<float>().ToArray());
        Assert.Equal(ScalarType.BFloat16, t["b"].dtype);
        Assert.Equal(new[] { 1f, -2f, 0.5f }, t["b"].to(ScalarType.Float32).data<float>().ToArray());
        Assert.Equal(ScalarType.Float16, t["h"].dtype);
        Assert.Equal(1.5f, t["h"].to(ScalarType.Float32).item<float>());
    }

    [Fact]
    public void LargeTensors_AreStreamedInSlices_WithTheSameBytes()
    {
        using var dir = new TempDir();
        var g = new Generator(5);
        var tensors = new Dictionary<string, Tensor>
        {
            ["f32"] = torch.randn([1001], generator: g),                                   // 4004 bytes: 63 slices, last partial
            ["bf16"] = torch.randn([7, 13, 11], generator: g).to(ScalarType.BFloat16),
            ["f32.t"] = torch.randn([30, 17], generator: g).t(),                            // non-contiguous source
        };
        SafeTensors.Save(dir["whole.safetensors"], tensors);

        var saved = SafeTensors.ChunkBytes;
        try
        {
            // Slices of 64 bytes; other tests running meanwhile only get slower, never different bytes.
            SafeTensors.ChunkBytes = 64;
            SafeTensors.Save(dir["sliced.safetensors"], tensors);
            var loaded = SafeTensors.Load(dir["sliced.safetensors"], torch.CPU);
            foreach (var (k, t) in tensors) TensorAssert.Identical(t, loaded[k], k);
        }
        finally { SafeTensors.ChunkBytes = saved; }
        Assert.Equal(File.ReadAllBytes(dir["whole.safetensors"]), File.ReadAllBytes(dir["sliced.safetensors"]));
    }

    [Fact]
    public void Load_KeyFilter_LoadsOnlySelected()
    {
        using var dir = new TempDir();
        SafeTensors.Save(dir["m.safetensors"], SampleTensors());
        var t = SafeTensors.Load(dir["m.safetensors"], keyFilter: k => k.StartsWith("blocks."));
        Assert.Equal(["blocks.0.attn1.to_q.weight", "blocks.10.norm.weight"], t.Keys.Order(StringComparer.Ordinal).ToArray());
    }

    [Fact]
    public void Save_ReplacesExistingFileAndLeavesNoTempFiles()
    {
        using var dir = new TempDir();
        var p = dir["m.safetensors"];
        SafeTensors.Save(p, [KeyValuePair.Create("x", torch.ones(4))]);
        SafeTensors.Save(p, [KeyValuePair.Create("y", torch.zeros(2))]);
        Assert.Equal(["y"], SafeTensors.ReadHeader(p).Keys.ToArray());
        Assert.Equal(["m.safetensors"], Directory.GetFiles(dir.Path).Select(f => Path.GetFileName(f)).ToArray());
    }

    [Fact]
    public void Save_FailingMidWrite_KeepsOldFileAndRemovesTemp()
    {
        using var dir = new TempDir();
        var p = dir["m.safetensors"];
        SafeTensors.Save(p, [KeyValuePair.Create("x", torch.ones(4))]);
        var before = File.ReadAllBytes(p);

        // A meta tensor has a shape and dtype (so the header is written) but no data: copying it out fails mid-file.
        var meta = torch.empty([1000], dtype: ScalarType.Float32, device: new Device(DeviceType.META));
        Assert.ThrowsAny<System.Runtime.InteropServices.ExternalException>(() =>
            SafeTensors.Save(p, [KeyValuePair.Create("a", torch.ones(8)), KeyValuePair.Create("b", meta)]));

        Assert.Equal(before, File.ReadAllBytes(p));
        Assert.Equal(["m.safetensors"], Directory.GetFiles(dir.Path).Select(f => Path.GetFileName(f)).ToArray());
    }

    [Fact]
    public void Save_RejectsDuplicateNames()
    {
        using var dir = new TempDir();
        Assert.Throws<ArgumentException>(() => SafeTensors.Save(dir["d.safetensors"],
            [KeyValuePair.Create("x", torch.ones(1)), KeyValuePair.Create("x", torch.ones(1))]));
        Assert.False(File.Exists(dir["d.safetensors"]));
    }

    // ---------------------------------------------------------------------------------------------- errors

    static UserError LoadFails(TempDir dir, byte[] content)
    {
        var p = dir["bad.safetensors"];
        File.WriteAllBytes(p, content);
        var e = Assert.Throws<UserError>(() => SafeTensors.Load(p));
        Assert.Contains(p, e.Message);
        return e;
    }

    [Fact]
    public void Errors_NotASafetensorsFile()
    {
        using var dir = new TempDir();
        Assert.Contains("shorter than", LoadFails(dir, [1, 2, 3]).Message);
        // A text file: its first 8 bytes read as a huge header length.
        Assert.Contains("header length", LoadFails(dir, Encoding.UTF8.GetBytes("hello world, not tensors")).Message);
        Assert.Contains("not valid JSON", LoadFails(dir, HandBuiltFile("{\"a\": oops}")).Message);
        Assert.Contains("does not start with", LoadFails(dir, HandBuiltFile("[1,2,3]")).Message);
    }

    [Fact]
    public void Errors_TruncatedFile()
    {
        using var dir = new TempDir();
        SafeTensors.Save(dir["ok.safetensors"], SampleTensors());
        var full = File.ReadAllBytes(dir["ok.safetensors"]);

        var e = LoadFails(dir, full[..(full.Length - 3)]);
        Assert.Contains("beyond the data section", e.Message);
        Assert.Contains("truncated", e.Message);

        e = LoadFails(dir, full[..20]);   // cut inside the header
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void Errors_OffsetsAndSizes()
    {
        using var dir = new TempDir();
        var e = LoadFails(dir, HandBuiltFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", Floats(1, 2)));
        Assert.Contains("'w'", e.Message);
        Assert.Contains("beyond the data section", e.Message);

        e = LoadFails(dir, HandBuiltFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", Floats(1, 2)));
        Assert.Contains("'w' has 8 bytes of data but dtype F32 with shape [3] needs 12", e.Message);

        e = LoadFails(dir, HandBuiltFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", Floats(1, 2)));
        Assert.Contains("invalid data_offsets", e.Message);

        e = LoadFails(dir, HandBuiltFile("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", Floats(1, 2)));
        Assert.Contains("invalid shape", e.Message);

        e = LoadFails(dir, HandBuiltFile("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", Floats(1, 2)));
        Assert.Contains("'dtype'", e.Message);

        e = LoadFails(dir, HandBuiltFile("{\"__metadata__\":{\"step\":5}}"));
        Assert.Contains("__metadata__.step", e.Message);

        // null metadata is how some writers say "none": accepted.
        File.WriteAllBytes(dir["nullmeta.safetensors"], HandBuiltFile("{\"__metadata__\":null}"));
        Assert.Empty(SafeTensors.ReadMetadata(dir["nullmeta.safetensors"]));
    }

    [Fact]
    public void Errors_UnknownDtype_OnlyWhenLoaded()
    {
        using var dir = new TempDir();
        var p = dir["f8.safetensors"];
        File.WriteAllBytes(p, HandBuiltFile(
            "{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]},\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}",
            [1, 2], Floats(7)));

        // The header can be listed and the supported tensors loaded ...
        Assert.Null(SafeTensors.ReadHeader(p)["q"].ScalarType);
        Assert.Equal(7f, SafeTensors.Load(p, keyFilter: k => k == "w")["w"].item<float>());
        // ... but asking for the unsupported one names it.
        var e = Assert.Throws<UserError>(() => SafeTensors.Load(p));
        Assert.Contains(p, e.Message);
        Assert.Contains("'q'", e.Message);
        Assert.Contains("F8_E4M3", e.Message);
    }

    [Fact]
    public void Errors_MissingFileOrFolder()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<UserError>(() => SafeTensors.Load(dir["nope.safetensors"]));
        Assert.Contains("nope.safetensors", e.Message);
        e = Assert.Throws<UserError>(() => SafeTensors.ReadHeader(dir.Path));
        Assert.Contains("is a folder", e.Message);
    }
}

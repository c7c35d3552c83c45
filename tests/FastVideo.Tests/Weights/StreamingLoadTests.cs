using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using FastVideo.Models.Dits;
using FastVideo.Weights;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Weights;

/// <summary>
/// A module that can be built on the meta device, with what a DiT's state has: Linear weights of odd sizes (so the
/// vector kernels have tails), a bias-less Linear, a parameter held in a plain field and used by forward, and
/// persistent integer and bool buffers.
/// </summary>
internal sealed class StreamNet : nn.Module<Tensor, Tensor>
{
    public readonly Linear wide;
    public readonly Linear narrow;
    public readonly Parameter gain;

    public StreamNet(Device? device = null) : base(nameof(StreamNet))
    {
        wide = nn.Linear(67, 33, device: device);
        narrow = nn.Linear(33, 5, hasBias: false, device: device);
        gain = new Parameter(torch.ones(5, device: device));
        register_buffer("steps", torch.zeros(3, dtype: ScalarType.Int64, device: device));
        register_buffer("mask", torch.zeros(4, dtype: ScalarType.Bool, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => narrow.forward(wide.forward(x)) * gain;
}

public class StreamingLoadTests
{
    /// <summary>Values where conversions go wrong: infinities, signed zero, subnormals, round-to-even ties, the
    /// largest float (rounds to inf in bf16), NaN (where <paramref name="nan"/>).</summary>
    static readonly uint[] EdgeBits =
    [
        0x7F800000, 0xFF800000, 0x00000000, 0x80000000, 0x00000001, 0x806CE3EE, 0x3F808000, 0x3F818000, 0xBF808000,
        0x7F7FFFFF, 0x3F80FFFF, 0x477FE000, 0x33800000, 0x38800000, 0x387FC000,
    ];

    /// <summary>The state of a random <see cref="StreamNet"/> with floats in <paramref name="dtype"/>, edge values in
    /// wide.weight, and integer/bool buffers of their own.</summary>
    static Dictionary<string, Tensor> SourceState(ScalarType dtype, ulong seed, bool nan)
    {
        using var g = new Generator(seed, torch.device("cpu"));
        var net = new StreamNet();
        var state = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (k, t) in net.state_dict())
        {
            if (!t.is_floating_point()) continue;
            var v = torch.randn(t.shape, generator: g) * 3;
            if (k == "wide.weight")
            {
                var bits = MemoryMarshal.Cast<byte, uint>(v.bytes);
                for (int i = 0; i < EdgeBits.Length; i++) bits[i * 7] = EdgeBits[i];
                if (nan) { bits[1] = 0x7FC00000; bits[2] = 0xFFC00001; bits[3] = 0x7F800001; }
            }
            state[k] = v.to(dtype);
        }
        state["steps"] = torch.tensor(new long[] { long.MinValue, -1, (long)seed });
        state["mask"] = torch.tensor(new[] { true, false, false, true });
        return state;
    }

    static Dictionary<string, byte[]> Bytes(nn.Module m) =>
        m.state_dict().ToDictionary(kv => kv.Key, kv => TensorAssert.Bytes(kv.Value));

    static void AssertSameState(nn.Module expected, nn.Module actual, string what)
    {
        var e = expected.state_dict();
        var a = actual.state_dict();
        Assert.Equal(e.Keys.Order(StringComparer.Ordinal), a.Keys.Order(StringComparer.Ordinal));
        foreach (var (k, t) in e) TensorAssert.Identical(t, a[k], $"{what}: {k}");
    }

    [Theory]
    [InlineData(ScalarType.Float32, ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16, ScalarType.Float32)]
    [InlineData(ScalarType.Float16, ScalarType.Float32)]
    [InlineData(ScalarType.Float32, ScalarType.BFloat16)]
    [InlineData(ScalarType.BFloat16, ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16, ScalarType.BFloat16)]   // no kernel: through torch's copy_
    [InlineData(ScalarType.Float64, ScalarType.Float32)]    // no kernel: through torch's copy_
    public void Streaming_IsBitIdenticalToLoadingTensorsThenCopying(ScalarType source, ScalarType destination)
    {
        using var dir = new TempDir();
        // fp16 NaN payloads are not even stable inside libtorch (its scalar and vector paths differ): finite and inf only.
        var state = SourceState(source, 11, nan: source != ScalarType.Float16);
        SafeTensors.Save(dir["w.safetensors"], state);

        // The old path: every tensor read into memory, then copy_ into the module.
        var old = new StreamNet().to(destination);
        StateDict.LoadInto(old, SafeTensors.Load(dir["w.safetensors"]), "w");
        Assert.Equal(destination, old.wide.weight.dtype);
        Assert.Equal(ScalarType.Int64, old.get_buffer("steps")!.dtype);

        // Streamed into an existing module's tensors.
        var streamed = new StreamNet().to(destination);
        StateDict.LoadInto(streamed, WeightSet.FromFile(dir["w.safetensors"]), "w");
        AssertSameState(old, streamed, "LoadInto(WeightSet)");

        // Built on the meta device and materialized in the destination dtype.
        var materialized = new StreamNet(torch.META);
        StateDict.Materialize(materialized, WeightSet.FromFile(dir["w.safetensors"]), "w", destination);
        AssertSameState(old, materialized, "Materialize");

        // Loading really happened: the integer buffer holds the file's values, same-dtype floats the file's bytes.
        Assert.Equal(new long[] { long.MinValue, -1, 11 }, materialized.get_buffer("steps")!.data<long>().ToArray());
        if (source == destination)
            TensorAssert.Identical(state["wide.weight"], materialized.wide.weight, "wide.weight");
    }

    [Fact]
    public void Streaming_ManySmallChunks_OnEveryWorker_GivesTheSameBytes()
    {
        using var dir = new TempDir();
        SafeTensors.Save(dir["w.safetensors"], SourceState(ScalarType.BFloat16, 3, nan: true));
        var whole = new StreamNet(torch.META);
        StateDict.Materialize(whole, WeightSet.FromFile(dir["w.safetensors"]), "w", ScalarType.Float32);

        var saved = (TensorStreamer.ChunkBytes, TensorStreamer.MaxWorkers);
        try
        {
            // 6-byte chunks: work items split tensors mid-vector; other tests meanwhile only get slower.
            TensorStreamer.ChunkBytes = 6;
            TensorStreamer.MaxWorkers = 4;
            var sliced = new StreamNet(torch.META);
            StateDict.Materialize(sliced, WeightSet.FromFile(dir["w.safetensors"]), "w", ScalarType.Float32);
            AssertSameState(whole, sliced, "6-byte chunks");
            var intoExisting = new StreamNet();
            StateDict.LoadInto(intoExisting, WeightSet.FromFile(dir["w.safetensors"]), "w");
            AssertSameState(whole, intoExisting, "6-byte chunks into an existing module");
        }
        finally { (TensorStreamer.ChunkBytes, TensorStreamer.MaxWorkers) = saved; }
    }

    [Fact]
    public void Materialize_GivesAWorkingTrainableModule()
    {
        using var dir = new TempDir();
        var reference = new StreamNet();
        StateDict.SaveModule(reference, dir["w.safetensors"]);

        var m = new StreamNet(torch.META);
        StateDict.Materialize(m, WeightSet.FromFile(dir["w.safetensors"]), "w", ScalarType.Float32);
        Assert.Empty(ModuleTensors.Unmaterialized(m));
        // The field-held parameter and the Linear properties are the registered tensors (forward uses the fields).
        Assert.Same(m.gain, m.named_parameters().Single(np => np.name == "gain").parameter);
        Assert.Same(m.wide.weight, m.named_parameters().Single(np => np.name == "wide.weight").parameter);

        var x = torch.randn(2, 67);
        TensorAssert.Identical(reference.forward(x).detach(), m.forward(x).detach(), "forward");
        Assert.All(m.parameters(), p => Assert.True(p.requires_grad));
        m.forward(x).sum().backward();
        Assert.NotNull(m.gain.grad);
        Assert.NotNull(m.wide.weight.grad);
    }

    [Fact]
    public void Materialize_And_LoadInto_RefuseTheWrongKindOfModule()
    {
        using var dir = new TempDir();
        StateDict.SaveModule(new StreamNet(), dir["w.safetensors"]);
        var weights = WeightSet.FromFile(dir["w.safetensors"]);

        var e = Assert.Throws<ArgumentException>(() => StateDict.Materialize(new StreamNet(), weights, "w", ScalarType.Float32));
        Assert.Contains("meta device", e.Message);
        e = Assert.Throws<ArgumentException>(() => StateDict.LoadInto(new StreamNet(torch.META), weights, "w"));
        Assert.Contains("Materialize", e.Message);

        // A non-persistent buffer is in no file: it would stay without memory.
        var withCache = new StreamNet(torch.META);
        withCache.register_buffer("cache", torch.zeros(2, device: torch.META), persistent: false);
        e = Assert.Throws<ArgumentException>(() => StateDict.Materialize(withCache, weights, "w", ScalarType.Float32));
        Assert.Contains("cache", e.Message);
    }

    // ---------------------------------------------------------------------------------------------- sharded

    /// <summary>The state split into two shards named like Diffusers', with or without an index.</summary>
    static void WriteShards(TempDir dir, string sub, Dictionary<string, Tensor> state, bool index)
    {
        dir.Write($"{sub}/config.json", DiffusersModelFolderTests.TransformerConfig);
        var first = state.Where(kv => kv.Key.StartsWith("wide.")).ToList();
        var second = state.Where(kv => !kv.Key.StartsWith("wide.")).ToList();
        const string s1 = "diffusion_pytorch_model-00001-of-00002.safetensors", s2 = "diffusion_pytorch_model-00002-of-00002.safetensors";
        SafeTensors.Save(dir[$"{sub}/{s1}"], first);
        SafeTensors.Save(dir[$"{sub}/{s2}"], second);
        if (!index) return;
        var map = new JsonObject();
        foreach (var kv in first) map[kv.Key] = s1;
        foreach (var kv in second) map[kv.Key] = s2;
        dir.Write($"{sub}/diffusion_pytorch_model.safetensors.index.json",
            new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ShardedFolders_StreamLikeTheOldPath(bool index)
    {
        using var dir = new TempDir();
        WriteShards(dir, "m", SourceState(ScalarType.BFloat16, 5, nan: false), index);
        var folder = DiffusersModelFolder.Resolve(dir["m"]);
        Assert.True(folder.IsSharded);

        var old = new StreamNet();
        StateDict.LoadInto(old, StateDict.LoadWeights(folder), "m");
        var set = WeightSet.FromModelFolder(folder);
        Assert.Equal(2, set.Files.Count);
        Assert.Equal(2, set.Entries.Values.Select(e => e.File).Distinct().Count());

        var streamed = new StreamNet();
        StateDict.LoadInto(streamed, set, "m");
        AssertSameState(old, streamed, "sharded LoadInto");
        var materialized = new StreamNet(torch.META);
        StateDict.Materialize(materialized, WeightSet.FromFileOrFolder(dir["m"]), "m", ScalarType.Float32);
        AssertSameState(old, materialized, "sharded Materialize");
    }

    // ---------------------------------------------------------------------------------------------- errors

    [Fact]
    public void StrictChecks_SameMessageAsTheOldPath_AndNothingLoaded()
    {
        using var dir = new TempDir();
        var state = SourceState(ScalarType.Float32, 2, nan: false);
        state.Remove("narrow.weight");                                        // missing
        state["extra.weight"] = torch.ones(2);                                // unexpected
        state["wide.bias"] = torch.ones(34);                                  // shape
        state["steps"] = torch.ones(3);                                       // float where an integer buffer is
        state["gain"] = torch.ones(5, dtype: ScalarType.Int32);               // integer where a float is
        SafeTensors.Save(dir["bad.safetensors"], state);

        var m = new StreamNet();
        var before = Bytes(m);
        var oldError = Assert.Throws<UserError>(() => StateDict.LoadInto(m, SafeTensors.Load(dir["bad.safetensors"]), "bad"));
        var newError = Assert.Throws<UserError>(() => StateDict.LoadInto(m, WeightSet.FromFile(dir["bad.safetensors"]), "bad"));
        Assert.Equal(oldError.Message, newError.Message);
        Assert.Contains("1 missing, 1 unexpected, 1 with a different shape, 2 with a dtype of another kind. Nothing was loaded.", newError.Message);
        Assert.Contains("gain: model expects floating point (Float32), weights have Int32", newError.Message);
        Assert.Equal(before, Bytes(m));

        var meta = new StreamNet(torch.META);
        var metaError = Assert.Throws<UserError>(() =>
            StateDict.Materialize(meta, WeightSet.FromFile(dir["bad.safetensors"]), "bad", ScalarType.Float32));
        Assert.Equal(oldError.Message, metaError.Message);
        Assert.NotEmpty(ModuleTensors.Unmaterialized(meta));
    }

    [Fact]
    public void HeaderPointingPastTheEnd_IsAUserError_BeforeAnythingIsRead()
    {
        using var dir = new TempDir();
        SafeTensors.Save(dir["w.safetensors"], SourceState(ScalarType.Float32, 4, nan: false));
        var full = File.ReadAllBytes(dir["w.safetensors"]);
        File.WriteAllBytes(dir["cut.safetensors"], full[..(full.Length - 5)]);

        var e = Assert.Throws<UserError>(() => WeightSet.FromFile(dir["cut.safetensors"]));
        Assert.Contains(dir["cut.safetensors"], e.Message);
        Assert.Contains("beyond the data section", e.Message);
        e = Assert.Throws<UserError>(() => WeightSet.FromFileOrFolder(dir["cut.safetensors"]));
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void FileTruncatedAfterItsHeaderWasRead_IsAUserError_NamingFileAndTensor()
    {
        using var dir = new TempDir();
        var path = dir["w.safetensors"];
        SafeTensors.Save(path, SourceState(ScalarType.BFloat16, 4, nan: false));
        var set = WeightSet.FromFile(path);
        // The last tensor in the file loses its end (another process rewriting the file, a disk filling up).
        var last = set.Entries.MaxBy(kv => kv.Value.FileOffset);
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Write)) fs.SetLength(last.Value.FileOffset + 1);

        var e = Assert.Throws<UserError>(() => StateDict.LoadInto(new StreamNet(), set, "w"));
        Assert.Contains(path, e.Message);
        Assert.Contains($"'{last.Key}'", e.Message);
        Assert.Contains("truncated", e.Message);

        var meta = new StreamNet(torch.META);
        e = Assert.Throws<UserError>(() => StateDict.Materialize(meta, set, "w", ScalarType.Float32));
        Assert.Contains($"'{last.Key}'", e.Message);
        // Nothing half-made was put into the module.
        Assert.All(meta.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
    }

    [Fact]
    public void WeightSet_UnsupportedDtype_IsNamed_UnlessFilteredOut()
    {
        using var dir = new TempDir();
        var p = dir["f8.safetensors"];
        // One F8 tensor (2 bytes) and one F32 tensor.
        var header = "{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]},\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}";
        var h = System.Text.Encoding.UTF8.GetBytes(header);
        using (var fs = File.Create(p))
        {
            fs.Write(BitConverter.GetBytes((ulong)h.Length));
            fs.Write(h);
            fs.Write([1, 2]);
            fs.Write(BitConverter.GetBytes(7f));
        }
        var e = Assert.Throws<UserError>(() => WeightSet.FromFile(p));
        Assert.Contains("'q'", e.Message);
        Assert.Contains("F8_E4M3", e.Message);
        Assert.Equal(["w"], WeightSet.FromFile(p, k => k == "w").Entries.Keys.ToArray());
    }

    // ---------------------------------------------------------------------------------------------- kernels

    [Fact]
    public void Kernels_MatchLibtorch_OnEveryHalfAndOnRandomFloatBits()
    {
        // bf16 -> fp32 and fp16 -> fp32 for all 65536 bit patterns (vectorised in libtorch: 65536 is a multiple of its width).
        foreach (var (type, conv) in new[] { (ScalarType.BFloat16, TensorStreamer.Conversion.Bf16ToF32), (ScalarType.Float16, TensorStreamer.Conversion.F16ToF32) })
        {
            var src = torch.empty(65536, dtype: type);
            var bits = MemoryMarshal.Cast<byte, ushort>(src.bytes);
            for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)i;
            var expected = src.to(ScalarType.Float32);
            var got = torch.empty(65536, dtype: ScalarType.Float32);
            TensorStreamer.Convert(conv, src.bytes, got.bytes, 65536);
            if (type == ScalarType.BFloat16) TensorAssert.Identical(expected, got, "bf16->f32");
            else
            {
                // fp16 NaNs: compare as NaN-or-not (payload rules differ between libtorch's own paths); the rest bit for bit.
                var e = MemoryMarshal.Cast<byte, uint>(expected.bytes);
                var g = MemoryMarshal.Cast<byte, uint>(got.bytes);
                for (int i = 0; i < 65536; i++)
                    if (!float.IsNaN(BitConverter.UInt32BitsToSingle(e[i]))) Assert.True(e[i] == g[i], $"f16 {i:X4}: {e[i]:X8} vs {g[i]:X8}");
                    else Assert.True(float.IsNaN(BitConverter.UInt32BitsToSingle(g[i])), $"f16 {i:X4} should be NaN");
            }
        }

        // fp32 -> bf16 on a million random bit patterns (NaNs, subnormals, ties all occur) plus the edge values.
        const int n = 1 << 20;
        var f = torch.empty(n, dtype: ScalarType.Float32);
        var fb = MemoryMarshal.Cast<byte, uint>(f.bytes);
        var rng = new Random(7);
        for (int i = 0; i < n; i++) fb[i] = (uint)rng.NextInt64(0, 1L << 32);
        for (int i = 0; i < EdgeBits.Length; i++) fb[i * 3] = EdgeBits[i];
        for (int i = 0; i < 4096; i++) fb[n - 1 - i] = (fb[n - 1 - i] & 0xFFFF0000u) | 0x8000u;   // exact ties
        var want = f.to(ScalarType.BFloat16);
        var have = torch.empty(n, dtype: ScalarType.BFloat16);
        TensorStreamer.Convert(TensorStreamer.Conversion.F32ToBf16, f.bytes, have.bytes, n);
        TensorAssert.Identical(want, have, "f32->bf16");
    }

    // ---------------------------------------------------------------------------------------------- Wan

    [Theory]
    [InlineData("wan_tiny", ScalarType.Float32)]
    [InlineData("wan_tiny", ScalarType.BFloat16)]
    [InlineData("wan_tiny_sharded", ScalarType.Float32)]
    public void WanFromPretrained_EqualsTheOldBuildLoadCast(string fixture, ScalarType dtype)
    {
        var folder = DiffusersModelFolder.Resolve(TestPaths.Fixture(fixture));
        var config = WanTransformerConfig.FromJson(folder.ReadConfig(), folder.ConfigPath);
        using var old = new WanTransformer3DModel(config);
        StateDict.LoadInto(old, StateDict.LoadWeights(folder), fixture);
        old.to(dtype);

        using var loaded = WanTransformer3DModel.FromPretrained(TestPaths.Fixture(fixture), dtype);
        AssertSameState(old, loaded, fixture);
        Assert.Equal(dtype, loaded.ParamDtype);
        Assert.Empty(ModuleTensors.Unmaterialized(loaded));
    }
}

using System.Text.Json.Nodes;
using FastVideo.Weights;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Weights;

/// <summary>Names like a DiT: blocks.{i}.to_q.weight, blocks.{i}.scale_shift_table, ffn.{0,2}.*, buffers.</summary>
internal sealed class TinyBlock : nn.Module<Tensor, Tensor>
{
    readonly Linear to_q;
    readonly Linear to_k;
    readonly Parameter scale_shift_table;

    public TinyBlock() : base(nameof(TinyBlock))
    {
        to_q = nn.Linear(4, 4);
        to_k = nn.Linear(4, 4, hasBias: false);
        scale_shift_table = new Parameter(torch.randn(1, 2, 4));
        register_buffer("step_count", torch.tensor(new long[] { 3 }));            // persistent: saved
        register_buffer("rope_cache", torch.zeros(3), persistent: false);         // not part of the state
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => to_k.forward(to_q.forward(x)) + scale_shift_table.sum();
}

internal sealed class TinyNet : nn.Module<Tensor, Tensor>
{
    readonly ModuleList<TinyBlock> blocks;
    readonly Sequential ffn;

    public TinyNet(int seed) : base(nameof(TinyNet))
    {
        blocks = nn.ModuleList(new TinyBlock(), new TinyBlock());
        ffn = nn.Sequential(("0", nn.Linear(4, 8)), ("1", nn.GELU()), ("2", nn.Linear(8, 4)));
        RegisterComponents();
        // Weights from a local generator: the process-wide one is shared with tests running in parallel.
        using var g = new torch.Generator((ulong)seed, torch.device("cpu"));
        using var _ = torch.no_grad();
        foreach (var p in parameters()) p.copy_(torch.randn(p.shape, generator: g));
    }

    public override Tensor forward(Tensor x) => ffn.forward(blocks[1].forward(blocks[0].forward(x)));

    public Dictionary<string, byte[]> Snapshot() =>
        state_dict().ToDictionary(kv => kv.Key, kv => TensorAssert.Bytes(kv.Value));
}

public class StateDictTests
{
    static readonly string[] ExpectedKeys =
    [
        "blocks.0.scale_shift_table", "blocks.0.step_count", "blocks.0.to_k.weight", "blocks.0.to_q.bias", "blocks.0.to_q.weight",
        "blocks.1.scale_shift_table", "blocks.1.step_count", "blocks.1.to_k.weight", "blocks.1.to_q.bias", "blocks.1.to_q.weight",
        "ffn.0.bias", "ffn.0.weight", "ffn.2.bias", "ffn.2.weight",
    ];

    [Fact]
    public void SaveModule_LoadInto_RoundTrips()
    {
        using var dir = new TempDir();
        var a = new TinyNet(1);
        var b = new TinyNet(2);
        Assert.NotEqual(a.Snapshot()["ffn.0.weight"], b.Snapshot()["ffn.0.weight"]);

        StateDict.SaveModule(a, dir["m.safetensors"], metadata: new Dictionary<string, string> { ["format"] = "pt" });
        var header = SafeTensors.ReadHeader(dir["m.safetensors"]);
        Assert.Equal(ExpectedKeys, header.Keys.Order(StringComparer.Ordinal).ToArray());   // no non-persistent buffer
        Assert.Equal("I64", header["blocks.0.step_count"].Dtype);
        Assert.Equal(new long[] { 1, 2, 4 }, header["blocks.1.scale_shift_table"].Shape);

        var weights = StateDict.LoadSafetensorsFileOrFolder(dir["m.safetensors"]);
        StateDict.LoadInto(b, weights, dir["m.safetensors"]);
        Assert.Equal(a.Snapshot(), b.Snapshot());

        // Loading did not replace the parameter objects (optimizers hold them), and they still train.
        var p = b.named_parameters().Single(np => np.name == "ffn.0.weight").parameter;
        Assert.True(p.requires_grad);
        b.forward(torch.ones(2, 4)).sum().backward();
        Assert.NotNull(p.grad);
    }

    [Fact]
    public void SaveModule_WithDtype_ConvertsFloatsOnly_AndLoadConvertsBack()
    {
        using var dir = new TempDir();
        var a = new TinyNet(1);
        StateDict.SaveModule(a, dir["bf16.safetensors"], ScalarType.BFloat16);

        var header = SafeTensors.ReadHeader(dir["bf16.safetensors"]);
        Assert.Equal("BF16", header["ffn.0.weight"].Dtype);
        Assert.Equal("I64", header["blocks.0.step_count"].Dtype);
        // The module itself is untouched by saving in another dtype.
        Assert.All(a.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));

        var b = new TinyNet(2);
        StateDict.LoadInto(b, SafeTensors.Load(dir["bf16.safetensors"]), "bf16 file");
        var got = b.state_dict()["ffn.0.weight"];
        Assert.Equal(ScalarType.Float32, got.dtype);
        var expected = a.state_dict()["ffn.0.weight"].to(ScalarType.BFloat16).to(ScalarType.Float32);
        TensorAssert.Identical(expected, got);
        Assert.False(a.state_dict()["ffn.0.weight"].allclose(got, rtol: 0, atol: 0));   // bf16 really rounded
    }

    /// <summary>Writes the module as a component folder split into two shards plus an index, by hand.</summary>
    static void WriteShardedFolder(TempDir dir, string sub, TinyNet net, bool extraUnlistedTensor = false)
    {
        dir.Write($"{sub}/config.json", DiffusersModelFolderTests.TransformerConfig);
        var state = net.state_dict();
        var first = state.Where(kv => kv.Key.StartsWith("blocks.")).ToList();
        var second = state.Where(kv => !kv.Key.StartsWith("blocks.")).ToList();
        if (extraUnlistedTensor) second.Add(KeyValuePair.Create("not_in_index", torch.ones(2)));
        const string s1 = "diffusion_pytorch_model-00001-of-00002.safetensors", s2 = "diffusion_pytorch_model-00002-of-00002.safetensors";
        SafeTensors.Save(dir[$"{sub}/{s1}"], first);
        SafeTensors.Save(dir[$"{sub}/{s2}"], second);

        var map = new JsonObject();
        foreach (var kv in first) map[kv.Key] = s1;
        foreach (var kv in second.Where(kv => kv.Key != "not_in_index")) map[kv.Key] = s2;
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = 0 }, ["weight_map"] = map };
        dir.Write($"{sub}/diffusion_pytorch_model.safetensors.index.json", index.ToJsonString());
    }

    [Fact]
    public void ShardedFolder_LoadsExactlyWhatTheSingleFileHolds()
    {
        using var dir = new TempDir();
        var net = new TinyNet(7);
        dir.Write("single/config.json", DiffusersModelFolderTests.TransformerConfig);
        StateDict.SaveModule(net, dir["single/diffusion_pytorch_model.safetensors"]);
        WriteShardedFolder(dir, "sharded", net, extraUnlistedTensor: true);

        var single = StateDict.LoadWeights(DiffusersModelFolder.Resolve(dir["single"]));
        var shardedFolder = DiffusersModelFolder.Resolve(dir["sharded"]);
        Assert.True(shardedFolder.IsSharded);
        var sharded = StateDict.LoadWeights(shardedFolder);

        // The index is the authority: the shard's unlisted tensor is not loaded.
        Assert.Equal(single.Keys.Order(StringComparer.Ordinal), sharded.Keys.Order(StringComparer.Ordinal));
        foreach (var (k, t) in single) TensorAssert.Identical(t, sharded[k], k);

        // The same folder also works as an override path (folder with an index, or the index file itself).
        Assert.Equal(single.Count, StateDict.LoadSafetensorsFileOrFolder(dir["sharded"]).Count);
        Assert.Equal(single.Count,
            StateDict.LoadSafetensorsFileOrFolder(dir["sharded/diffusion_pytorch_model.safetensors.index.json"]).Count);
    }

    [Fact]
    public void ShardedFolder_MissingShardOrKey_IsAnError()
    {
        using var dir = new TempDir();
        var net = new TinyNet(7);

        WriteShardedFolder(dir, "gone", net);
        var folder = DiffusersModelFolder.Resolve(dir["gone"]);
        File.Delete(dir["gone/diffusion_pytorch_model-00002-of-00002.safetensors"]);
        var e = Assert.Throws<UserError>(() => StateDict.LoadWeights(folder));
        Assert.Contains("diffusion_pytorch_model-00002-of-00002.safetensors", e.Message);
        Assert.Contains("diffusion_pytorch_model.safetensors.index.json", e.Message);

        WriteShardedFolder(dir, "lying", net);
        var indexPath = dir["lying/diffusion_pytorch_model.safetensors.index.json"];
        var index = JsonNode.Parse(File.ReadAllText(indexPath))!.AsObject();
        index["weight_map"]!["ghost.weight"] = "diffusion_pytorch_model-00001-of-00002.safetensors";
        File.WriteAllText(indexPath, index.ToJsonString());
        e = Assert.Throws<UserError>(() => StateDict.LoadWeights(DiffusersModelFolder.Resolve(dir["lying"])));
        Assert.Contains("ghost.weight (in diffusion_pytorch_model-00001-of-00002.safetensors)", e.Message);
        Assert.Contains(indexPath, e.Message);
    }

    [Fact]
    public void LoadInto_ReportsEverythingAtOnce_AndLoadsNothing()
    {
        using var dir = new TempDir();
        var a = new TinyNet(1);
        var weights = new Dictionary<string, Tensor>(a.state_dict());
        weights.Remove("blocks.0.to_q.bias");
        weights.Remove("ffn.2.weight");
        weights["blocks.0.to_v.weight"] = torch.zeros(4, 4);
        weights["ffn.0.weight"] = torch.zeros(8, 5);

        var b = new TinyNet(2);
        var before = b.Snapshot();
        var e = Assert.Throws<UserError>(() => StateDict.LoadInto(b, weights, "override.safetensors"));

        Assert.Contains("'override.safetensors'", e.Message);
        Assert.Contains("2 missing, 1 unexpected, 1 with a different shape", e.Message);
        Assert.Contains("blocks.0.to_q.bias", e.Message);
        Assert.Contains("ffn.2.weight", e.Message);
        Assert.Contains("blocks.0.to_v.weight", e.Message);
        Assert.Contains("ffn.0.weight: model expects [8, 4], weights have [8, 5]", e.Message);
        Assert.Contains("Nothing was loaded", e.Message);
        Assert.Equal(before, b.Snapshot());
    }

    [Fact]
    public void LoadInto_RefusesADtypeOfAnotherKind_NamingTheTensor_ButConvertsBetweenFloats()
    {
        var a = new TinyNet(1);
        var weights = new Dictionary<string, Tensor>(a.state_dict())
        {
            ["ffn.0.weight"] = torch.ones(8, 4, dtype: ScalarType.Int32),          // an I32 tensor where F32 is expected
            ["blocks.0.step_count"] = torch.tensor(new[] { 3.0f }),                // a float where an integer buffer is
        };
        var b = new TinyNet(2);
        var before = b.Snapshot();
        var e = Assert.Throws<UserError>(() => StateDict.LoadInto(b, weights, "w.safetensors"));
        Assert.Contains("2 with a dtype of another kind", e.Message);
        Assert.Contains("ffn.0.weight: model expects floating point (Float32), weights have Int32", e.Message);
        Assert.Contains("blocks.0.step_count: model expects integer (Int64), weights have Float32", e.Message);
        Assert.Equal(before, b.Snapshot());

        // bf16 weights into fp32 parameters are the same kind: converted, as a real bf16 checkpoint needs.
        var bf16 = a.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.is_floating_point() ? kv.Value.to(ScalarType.BFloat16) : kv.Value);
        StateDict.LoadInto(b, bf16, "bf16.safetensors");
        Assert.Equal(ScalarType.Float32, b.state_dict()["ffn.0.weight"].dtype);
    }

    [Fact]
    public void LoadInto_CapsLongLists()
    {
        var a = new TinyNet(1);
        var weights = new Dictionary<string, Tensor>(a.state_dict());
        for (int i = 0; i < 30; i++) weights[$"extra.{i:D2}.weight"] = torch.zeros(1);

        var e = Assert.Throws<UserError>(() => StateDict.LoadInto(new TinyNet(2), weights, "src"));
        Assert.Contains("unexpected (30)", e.Message);
        Assert.Contains("extra.19.weight", e.Message);
        Assert.DoesNotContain("extra.20.weight", e.Message);
        Assert.Contains("... and 10 more", e.Message);
    }

    [Fact]
    public void LoadSafetensorsFileOrFolder_MergesFilesAndRejectsDuplicates()
    {
        using var dir = new TempDir();
        SafeTensors.Save(dir["parts/a.safetensors"], [KeyValuePair.Create("x", torch.ones(2))]);
        SafeTensors.Save(dir["parts/b.safetensors"], [KeyValuePair.Create("y", torch.zeros(3))]);
        var merged = StateDict.LoadSafetensorsFileOrFolder(dir["parts"]);
        Assert.Equal(["x", "y"], merged.Keys.Order(StringComparer.Ordinal).ToArray());

        SafeTensors.Save(dir["parts/c.safetensors"], [KeyValuePair.Create("x", torch.ones(2))]);
        var e = Assert.Throws<UserError>(() => StateDict.LoadSafetensorsFileOrFolder(dir["parts"]));
        Assert.Contains("x (in a.safetensors and c.safetensors)", e.Message);

        Directory.CreateDirectory(dir["empty"]);
        e = Assert.Throws<UserError>(() => StateDict.LoadSafetensorsFileOrFolder(dir["empty"]));
        Assert.Contains("no .safetensors", e.Message);
        e = Assert.Throws<UserError>(() => StateDict.LoadSafetensorsFileOrFolder(dir["missing.safetensors"]));
        Assert.Contains("missing.safetensors", e.Message);
    }
}

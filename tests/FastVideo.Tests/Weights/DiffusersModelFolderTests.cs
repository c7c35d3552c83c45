using FastVideo.Weights;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Weights;

public class DiffusersModelFolderTests
{
    internal const string TransformerConfig = "{\"_class_name\": \"WanTransformer3DModel\", \"num_layers\": 2, \"patch_size\": [1, 2, 2]}";

    internal static void WriteWeights(string path) =>
        SafeTensors.Save(path, [KeyValuePair.Create("w", torch.arange(6f).reshape(2, 3))]);

    /// <summary>A small Diffusers pipeline: model_index.json, transformer/ (config + single file), vae/.</summary>
    internal static string MakePipeline(TempDir dir, string sub = "pipe", string weightsName = "diffusion_pytorch_model.safetensors")
    {
        dir.Write($"{sub}/model_index.json", "{\"_class_name\": \"WanPipeline\"}");
        dir.Write($"{sub}/transformer/config.json", TransformerConfig);
        WriteWeights(dir[$"{sub}/transformer/{weightsName}"]);
        dir.Write($"{sub}/vae/config.json", "{}");
        WriteWeights(dir[$"{sub}/vae/diffusion_pytorch_model.safetensors"]);
        return dir[sub];
    }

    [Fact]
    public void PipelineFolder_ResolvesTransformerAndOtherComponents()
    {
        using var dir = new TempDir();
        var root = MakePipeline(dir);

        var m = DiffusersModelFolder.Resolve(root);
        Assert.Equal(root, m.Root);
        Assert.Equal(Path.Combine(root, "transformer"), m.ComponentFolder);
        Assert.Equal(Path.Combine(root, "transformer", "config.json"), m.ConfigPath);
        Assert.Equal([Path.Combine(root, "transformer", "diffusion_pytorch_model.safetensors")], m.WeightFiles);
        Assert.False(m.IsSharded);
        Assert.Null(m.IndexPath);
        Assert.Equal(Path.Combine(root, "vae"), m.ComponentDir("vae"));
        Assert.True(m.HasComponent("vae"));
        Assert.Null(m.ComponentDir("text_encoder"));
        var e = Assert.Throws<UserError>(() => m.RequireComponentDir("text_encoder"));
        Assert.Contains(root, e.Message);
        Assert.Contains("text_encoder/", e.Message);

        var cfg = m.ReadConfig();
        Assert.Equal("WanTransformer3DModel", (string?)cfg["_class_name"]);
        Assert.Equal(2, (int?)cfg["num_layers"]);

        // Another component of the same pipeline.
        var vae = DiffusersModelFolder.Resolve(root, "vae");
        Assert.Equal(Path.Combine(root, "vae"), vae.ComponentFolder);
        Assert.Equal("vae", vae.Component);
        Assert.Equal(root, vae.Root);
    }

    [Fact]
    public void ComponentFolder_InsidePipeline_KnowsItsRoot()
    {
        using var dir = new TempDir();
        var root = MakePipeline(dir);
        var m = DiffusersModelFolder.Resolve(Path.Combine(root, "transformer"));
        Assert.Equal(root, m.Root);
        Assert.Equal(Path.Combine(root, "transformer"), m.ComponentFolder);
        Assert.True(m.HasComponent("vae"));
    }

    [Fact]
    public void BareComponentFolder_WithOurExportName_HasNoRoot()
    {
        using var dir = new TempDir();
        dir.Write("export/config.json", TransformerConfig);
        WriteWeights(dir["export/model.safetensors"]);

        var m = DiffusersModelFolder.Resolve(dir["export"]);
        Assert.Null(m.Root);
        Assert.Equal([dir["export/model.safetensors"]], m.WeightFiles);
        Assert.Null(m.ComponentDir("vae"));
        var e = Assert.Throws<UserError>(() => m.RequireComponentDir("vae"));
        Assert.Contains("model_index.json", e.Message);
    }

    [Fact]
    public void ShardedFolder_WithIndex_ListsShardsInOrder()
    {
        using var dir = new TempDir();
        dir.Write("t/config.json", TransformerConfig);
        dir.Write("t/diffusion_pytorch_model.safetensors.index.json",
            "{\"metadata\": {\"total_size\": 48}, \"weight_map\": {" +
            "\"b\": \"diffusion_pytorch_model-00002-of-00002.safetensors\", " +
            "\"a\": \"diffusion_pytorch_model-00001-of-00002.safetensors\", " +
            "\"c\": \"diffusion_pytorch_model-00002-of-00002.safetensors\"}}");

        var m = DiffusersModelFolder.Resolve(dir["t"]);
        Assert.True(m.IsSharded);
        Assert.Equal(dir["t/diffusion_pytorch_model.safetensors.index.json"], m.IndexPath);
        Assert.Equal([dir["t/diffusion_pytorch_model-00001-of-00002.safetensors"], dir["t/diffusion_pytorch_model-00002-of-00002.safetensors"]],
            m.WeightFiles);
    }

    [Fact]
    public void ShardedFolder_WithoutIndex_NeedsTheCompleteSet()
    {
        using var dir = new TempDir();
        dir.Write("t/config.json", TransformerConfig);
        WriteWeights(dir["t/model-00002-of-00002.safetensors"]);
        WriteWeights(dir["t/model-00001-of-00002.safetensors"]);
        var m = DiffusersModelFolder.Resolve(dir["t"]);
        Assert.True(m.IsSharded);
        Assert.Null(m.IndexPath);
        Assert.Equal([dir["t/model-00001-of-00002.safetensors"], dir["t/model-00002-of-00002.safetensors"]], m.WeightFiles);

        File.Delete(dir["t/model-00001-of-00002.safetensors"]);
        var e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(dir["t"]));
        Assert.Contains("incomplete", e.Message);
        Assert.Contains("model-00002-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void Errors_NameTheFolderAndWhatWasExpected()
    {
        using var dir = new TempDir();

        // Pipeline without the requested component.
        var root = MakePipeline(dir);
        var e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(root, "transformer_2"));
        Assert.Contains(root, e.Message);
        Assert.Contains("'transformer_2/'", e.Message);

        // Neither a pipeline nor a component.
        dir.Write("random/readme.txt", "hi");
        e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(dir["random"]));
        Assert.Contains(dir["random"], e.Message);
        Assert.Contains("model_index.json", e.Message);
        Assert.Contains("readme.txt", e.Message);

        // Component without weights; .bin only.
        dir.Write("nobin/config.json", "{}");
        dir.Write("nobin/diffusion_pytorch_model.bin", "x");
        e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(dir["nobin"]));
        Assert.Contains("no safetensors weights", e.Message);
        Assert.Contains(".bin", e.Message);

        // Two competing weight sets.
        dir.Write("both/config.json", "{}");
        WriteWeights(dir["both/model.safetensors"]);
        WriteWeights(dir["both/diffusion_pytorch_model.safetensors"]);
        e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(dir["both"]));
        Assert.Contains("two sets of weights", e.Message);

        // A file, a missing absolute path.
        e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(dir["random/readme.txt"]));
        Assert.Contains("is a file", e.Message);
        e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(dir["does/not/exist"]));
        Assert.Contains("does not exist", e.Message);

        // Broken config.
        dir.Write("badcfg/config.json", "{ not json");
        WriteWeights(dir["badcfg/model.safetensors"]);
        e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(dir["badcfg"]).ReadConfig());
        Assert.Contains(dir["badcfg/config.json"], e.Message);
    }

    [Theory]
    [InlineData("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", true)]
    [InlineData("org/name", true)]
    [InlineData("/abs/path", false)]
    [InlineData("a/b/c", false)]
    [InlineData("./x", false)]
    [InlineData("../x", false)]
    [InlineData("name", false)]
    [InlineData("org/", false)]
    public void ModelIdShape(string s, bool isId) => Assert.Equal(isId, DiffusersModelFolder.LooksLikeModelId(s));
}

/// <summary>Model ids resolved through a fake Hugging Face cache; these tests change process environment variables.</summary>
[Collection("env")]
public class HuggingFaceCacheTests
{
    const string ModelId = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers";

    static string MakeSnapshot(string hub, string hash)
    {
        var snap = Path.Combine(hub, "models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers", "snapshots", hash);
        Directory.CreateDirectory(Path.Combine(snap, "transformer"));
        File.WriteAllText(Path.Combine(snap, "model_index.json"), "{}");
        File.WriteAllText(Path.Combine(snap, "transformer", "config.json"), DiffusersModelFolderTests.TransformerConfig);
        DiffusersModelFolderTests.WriteWeights(Path.Combine(snap, "transformer", "diffusion_pytorch_model.safetensors"));
        return snap;
    }

    static EnvScope CleanEnv() => new EnvScope()
        .Set("HF_HUB_CACHE", null).Set("HUGGINGFACE_HUB_CACHE", null).Set("HF_HOME", null).Set("XDG_CACHE_HOME", null);

    [Fact]
    public void HfHubCache_RefsMainPicksTheSnapshot()
    {
        using var dir = new TempDir();
        using var env = CleanEnv().Set("HF_HUB_CACHE", dir["hub"]);
        var older = MakeSnapshot(dir["hub"], "aaaa1111");
        var newer = MakeSnapshot(dir["hub"], "bbbb2222");
        Directory.SetLastWriteTimeUtc(older, DateTime.UtcNow.AddDays(-2));
        Directory.SetLastWriteTimeUtc(newer, DateTime.UtcNow);
        dir.Write("hub/models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers/refs/main", "aaaa1111\n");

        var m = DiffusersModelFolder.Resolve(ModelId);
        Assert.Equal(older, m.Root);
        Assert.Equal(Path.Combine(older, "transformer", "config.json"), m.ConfigPath);
        Assert.Equal(ModelId, m.Source);
    }

    [Fact]
    public void HfHome_UsesItsHubSubfolder_AndNewestSnapshotWithoutRefs()
    {
        using var dir = new TempDir();
        using var env = CleanEnv().Set("HF_HOME", dir["home"]);
        var older = MakeSnapshot(dir["home/hub"], "aaaa1111");
        var newer = MakeSnapshot(dir["home/hub"], "bbbb2222");
        Directory.SetLastWriteTimeUtc(older, DateTime.UtcNow);
        Directory.SetLastWriteTimeUtc(newer, DateTime.UtcNow.AddDays(-2));

        Assert.Equal((dir["home/hub"], "$HF_HOME/hub"), HuggingFaceCache.HubCacheDir());
        // No refs/main: the most recently written snapshot wins (here the one named 'aaaa...').
        Assert.Equal(older, DiffusersModelFolder.Resolve(ModelId).Root);

        // HF_HUB_CACHE takes precedence over HF_HOME.
        env.Set("HF_HUB_CACHE", dir["elsewhere"]);
        Assert.Equal(dir["elsewhere"], HuggingFaceCache.HubCacheDir().Path);
    }

    [Fact]
    public void DefaultCache_IsUnderTheUserProfile()
    {
        using var env = CleanEnv();
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        Assert.Equal(Path.Combine(home, ".cache", "huggingface", "hub"), HuggingFaceCache.HubCacheDir().Path);
    }

    [Fact]
    public void NotFound_SaysWhereItLookedAndThatDownloadingIsNotSupported()
    {
        using var dir = new TempDir();
        using var env = CleanEnv().Set("HF_HUB_CACHE", dir["hub"]);

        var e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(ModelId));
        Assert.Contains(ModelId, e.Message);
        Assert.Contains(dir["hub"], e.Message);
        Assert.Contains("models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers", e.Message);
        Assert.Contains("$HF_HUB_CACHE", e.Message);
        Assert.Contains("Downloading is not supported", e.Message);
        Assert.Contains("local model folder", e.Message);

        // The model folder exists but holds no snapshot.
        Directory.CreateDirectory(dir["hub/models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers/snapshots"]);
        e = Assert.Throws<UserError>(() => DiffusersModelFolder.Resolve(ModelId));
        Assert.Contains("no snapshot", e.Message);
    }
}

using System.Text.Json.Nodes;
using FastVideo.Tests.Sampling;
using FastVideo.Weights;
using Xunit;
using static TorchSharp.torch;

// Not FastVideo.Tests.Cli: that would hide the FastVideo.Cli namespace from the other tests' `Cli.Cli.Run`.
namespace FastVideo.Tests.CommandLine;

/// <summary>
/// <c>fastvideo generate --causal</c> through the command line, on the tiny Wan checkpoint (fp32): the cached stream
/// against --no-kv-cache, blocks written as they finish, one step, the family taken from the folder, and the errors.
/// </summary>
public class GenerateCausalTests
{
    private const double Tol = 1e-4;
    private static readonly string Tiny = TestPaths.Fixture("wan_tiny");

    private static (string Prompt, string Negative) TextFiles()
    {
        var dir = TestPaths.TempDir("causal-gen-text");
        var (prompt, negative) = (Path.Combine(dir, "prompt.safetensors"), Path.Combine(dir, "negative.safetensors"));
        using var g = new Generator(5, device("cpu"));
        SafeTensors.Save(prompt, [new("prompt_embeds", randn([2, 7, 24], generator: g))]);
        SafeTensors.Save(negative, [new("negative_prompt_embeds", randn([1, 5, 24], generator: g))]);
        return (prompt, negative);
    }

    /// <summary>Runs generate with the prompt files, 25 video frames (7 latent) of 64x64 seeded 3, and <paramref name="extra"/>.</summary>
    private static (int Code, string Err, string Output) Generate(string model, params string[] extra)
    {
        var (prompt, negative) = TextFiles();
        var output = Path.Combine(TestPaths.TempDir("causal-gen"), "out.safetensors");
        var stderr = new StringWriter();
        int code = Cli.Cli.Run([
            "generate", "--model", model, "--compute-dtype", "fp32", "--prompt-embeds", prompt, "--negative-prompt-embeds", negative,
            "--seed", "3", "--num-frames", "25", "--height", "64", "--width", "64", "--flow-shift", "3", "--output-latents", output,
            .. extra, .. extra.Contains("--causal") && !extra.Contains("--text-len") ? new[] { "--text-len", "16" } : []], TextWriter.Null, stderr);
        return (code, stderr.ToString(), output);
    }

    private static Tensor Latents(string path) => SafeTensors.Load(path)["latents"];

    private static double MaxAbs(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Theory]
    [InlineData("2", "-1", "0", "1")]
    [InlineData("2", "3", "1", "3")]
    [InlineData("1", "3", "1", "1")]
    public void CausalAgreesWithNoKvCacheAndWritesEachBlock(string k, string local, string sink, string guidance)
    {
        using var scope = NewDisposeScope();
        string[] args = ["--causal", "--frames-per-block", k, "--local-attn-size", local, "--sink-size", sink, "--guidance-scale", guidance,
            "--denoising-steps", "1000,750,500,250"];
        var blocksDir = Path.Combine(TestPaths.TempDir("causal-blocks"), "blocks");
        var cached = Generate(Tiny, [.. args, "--blocks-out", blocksDir]);
        Assert.True(cached.Code == 0, cached.Err);
        var recomputed = Generate(Tiny, [.. args, "--no-kv-cache"]);
        Assert.True(recomputed.Code == 0, recomputed.Err);
        var clip = Latents(cached.Output);
        Assert.Equal(new long[] { 2, 4, 7, 8, 8 }, clip.shape);
        double err = MaxAbs(clip, Latents(recomputed.Output));
        Assert.True(err <= Tol, $"cached vs --no-kv-cache: max abs {err:E2}");

        // One progress line per block with its speed; the blocks on disk are the clip's frames.
        int blocks = (7 + int.Parse(k) - 1) / int.Parse(k);
        Assert.Equal(blocks, cached.Err.Split('\n').Count(l => l.TrimStart().StartsWith("block ") && l.Contains("latent frames/s")));
        Assert.Contains("video frames/s", cached.Err);
        Assert.Contains("no KV cache", recomputed.Err);
        var files = Directory.GetFiles(blocksDir).Order().ToArray();
        Assert.Equal(blocks, files.Length);
        Assert.Equal(0, MaxAbs(cat(files.Select(Latents).ToArray(), 2), clip));
        Assert.Equal("0", SafeTensors.ReadMetadata(files[0])["start_frame"]);
        // A second run into the same folder would mix two clips: refused.
        var again = Generate(Tiny, [.. args, "--blocks-out", blocksDir]);
        Assert.Equal(2, again.Code);
        Assert.Contains("already holds block files of an earlier run", again.Err);
    }

    [Fact]
    public void OneStepIsXMinusVAtTimestep1000()
    {
        using var scope = NewDisposeScope();
        var run = Generate(Tiny, "--causal", "--frames-per-block", "3", "--guidance-scale", "1", "--denoising-steps", "1000");
        Assert.True(run.Code == 0, run.Err);
        // The oracle on the transformer alone, from the same seeded noise.
        using var model = StreamingSamplingTests.Build(3, textLen: 16);
        var (prompt, _) = TextFiles();
        using var batch = model.PrepareInference(FastVideo.Data.Conditioning.FromText(SafeTensors.Load(prompt)["prompt_embeds"], ones(2, 7)), [4, 7, 8, 8]);
        using var g = new Generator(3, device("cpu"));
        var noise = randn([2, 4, 7, 8, 8], generator: g).permute(0, 2, 1, 3, 4);
        var clip = Latents(run.Output).permute(0, 2, 1, 3, 4);
        using var _ = no_grad();
        Assert.True(MaxAbs(clip, StreamingSamplingTests.OneStepOracle(model, batch, noise, clip, 1.0)) <= Tol);
    }

    [Fact]
    public void TheFamilyComesFromTheFolder()
    {
        using var scope = NewDisposeScope();
        // A plain Wan folder streams with wan_causal, which says what that means.
        var plain = Generate(Tiny, "--causal", "--guidance-scale", "1", "--denoising-steps", "1000");
        Assert.True(plain.Code == 0, plain.Err);
        Assert.Contains("holds a WanTransformer3DModel, trained with wan's attention; --causal runs the same weights with wan_causal's block-causal attention", plain.Err);
        Assert.Contains("in 3 blocks of 3", plain.Err);   // the default num_frames_per_block

        // A causal folder (upstream's class name, its settings in config.json) is wan_causal with its own settings.
        var dir = TestPaths.TempDir("causal-folder");
        foreach (var sub in new[] { "transformer", "vae" })
        {
            Directory.CreateDirectory(Path.Combine(dir, sub));
            foreach (var file in Directory.GetFiles(Path.Combine(Tiny, sub))) File.Copy(file, Path.Combine(dir, sub, Path.GetFileName(file)));
        }
        File.Copy(Path.Combine(Tiny, "model_index.json"), Path.Combine(dir, "model_index.json"));
        var configPath = Path.Combine(dir, "transformer", "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["_class_name"] = "CausalWanTransformer3DModel";
        config["num_frames_per_block"] = 1;
        File.WriteAllText(configPath, config.ToJsonString());
        var causal = Generate(dir, "--causal", "--guidance-scale", "1", "--denoising-steps", "1000");
        Assert.True(causal.Code == 0, causal.Err);
        Assert.DoesNotContain("trained with", causal.Err);
        Assert.Contains("in 7 blocks of 1", causal.Err);
        Assert.Equal(0, MaxAbs(Latents(causal.Output), Latents(Generate(Tiny, "--causal", "--frames-per-block", "1", "--guidance-scale", "1", "--denoising-steps", "1000").Output)));
        // Without --causal the causal folder still loads as wan_causal: Euler over the block-causal training forward.
        var euler = Generate(dir, "--steps", "2", "--guidance-scale", "1");
        var eulerPlain = Generate(Tiny, "--steps", "2", "--guidance-scale", "1");
        Assert.True(euler.Code == 0, euler.Err);
        Assert.True(MaxAbs(Latents(euler.Output), Latents(eulerPlain.Output)) > 1e-3, "the causal folder sampled with bidirectional attention");
    }

    [Theory]
    [InlineData(new[] { "--frames-per-block", "2", "--steps", "2" }, "--frames-per-block is an option of streaming generation: add --causal")]
    [InlineData(new[] { "--no-kv-cache", "--steps", "2" }, "--no-kv-cache is an option of streaming generation: add --causal")]
    [InlineData(new[] { "--causal", "--steps", "2" }, "--causal denoises each block with --denoising-steps (e.g. 1000,750,500,250), not --steps")]
    [InlineData(new[] { "--causal" }, "--causal needs --denoising-steps")]
    [InlineData(new[] { "--causal", "--denoising-steps", "1000,abc" }, "--denoising-steps[1]: 'abc' is not a number")]
    [InlineData(new[] { "--causal", "--denoising-steps", "500,1000" }, "--denoising-steps: must be strictly descending")]
    [InlineData(new[] { "--causal", "--denoising-steps", "1000,0" }, "--denoising-steps[1]: 0 is outside (0, 1000]")]
    [InlineData(new[] { "--causal", "--denoising-steps", "1000", "--frames-per-block", "4" }, "--frames-per-block: must be 1, 2 or 3, got 4")]
    [InlineData(new[] { "--causal", "--denoising-steps", "1000", "--frames-per-block", "3", "--local-attn-size", "2" }, "(2) must be at least sink_size (0) + num_frames_per_block (3)")]
    [InlineData(new[] { "--causal", "--denoising-steps", "1000", "--family", "wan" }, "--causal: the wan family has no streaming (causal) forward")]
    [InlineData(new[] { "--causal", "--denoising-steps", "1000", "--text-len", "4" }, "prompt_embeds has 7 tokens, more than --text-len 4")]
    public void BadStreamingOptionsAreOneClearError(string[] args, string message)
    {
        var run = Generate(Tiny, ["--guidance-scale", "1", .. args]);
        Assert.Equal(2, run.Code);
        Assert.Contains(message, run.Err);
    }
}

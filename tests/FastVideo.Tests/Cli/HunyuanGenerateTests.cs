using System.Globalization;
using FastVideo.Tests.Models;
using FastVideo.Weights;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace FastVideo.Tests.CommandLine;

/// <summary>
/// <c>fastvideo generate</c> on a HunyuanVideo folder (tests/fixtures/hunyuan_tiny, family read from its config) as
/// Diffusers' HunyuanVideoPipeline samples: the pipeline's sigmas, embedded guidance 6 x 1000, true CFG above 1 with the
/// negative embeddings; against the independent PyTorch reference (scripts/make_hunyuan_fixtures.py).
/// </summary>
public class HunyuanGenerateTests(ITestOutputHelper log)
{
    private static readonly string ModelDir = TestPaths.Fixture("hunyuan_tiny");
    private static readonly string Inputs = TestPaths.Fixture("hunyuan_tiny", "inputs.safetensors");

    private static (int Code, string Stdout, string Stderr, string Output) Generate(params string[] extra)
    {
        var output = Path.Combine(TestPaths.TempDir("hy-gen"), "out.safetensors");
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = Cli.Cli.Run(["generate", "--model", ModelDir, "--compute-dtype", "fp32", "--prompt-embeds", Inputs, "--latents", Inputs,
            "--steps", "4", "--flow-shift", "7", "--output-latents", output, .. extra], stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString(), output);
    }

    [Theory]
    [InlineData(1.0, "sample_cfg1")]
    [InlineData(5.0, "sample_cfg5")]
    public void GenerateMatchesTheReferencePipeline(double guidance, string key)
    {
        using var scope = NewDisposeScope();
        var (code, _, stderr, output) = Generate("--guidance-scale", guidance.ToString(CultureInfo.InvariantCulture), "--negative-prompt-embeds", Inputs);
        Assert.True(code == 0, stderr);
        var got = SafeTensors.Load(output)["latents"];
        double err = ReferenceParity.MaxAbs(got, SafeTensors.Load(TestPaths.Fixture("hunyuan_tiny", "expected.safetensors"))[key]);
        log.WriteLine($"{key}: max abs error {err:E3}");
        Assert.True(err < 1e-3, $"{key}: max abs error {err:E3}");
    }

    [Fact]
    public void EmbeddedGuidanceReachesTheTransformer()
    {
        using var scope = NewDisposeScope();
        var (c1, _, e1, byDefault) = Generate("--guidance-scale", "1");
        var (c2, _, e2, six) = Generate("--guidance-scale", "1", "--embedded-guidance-scale", "6");
        var (c3, _, e3, other) = Generate("--guidance-scale", "1", "--embedded-guidance-scale", "3.5");
        Assert.True(c1 == 0 && c2 == 0 && c3 == 0, e1 + e2 + e3);
        var (a, b, c) = (SafeTensors.Load(byDefault)["latents"], SafeTensors.Load(six)["latents"], SafeTensors.Load(other)["latents"]);
        Assert.True(a.allclose(b, 0, 0));                         // the default is 6.0
        Assert.True(ReferenceParity.MaxAbs(a, c) > 1e-3);        // and the value is applied
    }

    [Fact]
    public void WrongInputsAreRefusedNamingTheFileOrOption()
    {
        var noPooled = Path.Combine(TestPaths.TempDir("hy-gen"), "prompt.safetensors");
        using (var all = new DisposableDictionary(SafeTensors.Load(Inputs)))
            SafeTensors.Save(noPooled, [new("prompt_embeds", all.Items["prompt_embeds"]), new("prompt_attention_mask", all.Items["prompt_attention_mask"])]);
        var output = Path.Combine(TestPaths.TempDir("hy-gen"), "out.safetensors");
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = Cli.Cli.Run(["generate", "--model", ModelDir, "--prompt-embeds", noPooled, "--latents", Inputs, "--steps", "2", "--guidance-scale", "1",
            "--flow-shift", "7", "--output-latents", output], stdout, stderr);
        Assert.Equal(2, code);
        Assert.Contains($"{noPooled}: no tensor named 'pooled_prompt_embeds' [B,P]: the hunyuan transformer also reads a pooled text vector", stderr.ToString());

        var (c, _, e, _) = Generate("--guidance-scale", "5");   // no negative embeddings anywhere
        Assert.Equal(2, c);
        Assert.Contains("--guidance-scale 5 needs --negative-prompt-embeds", e);
        (c, _, e, _) = Generate("--guidance-scale", "0.5");
        Assert.Equal(2, c);
        Assert.Contains("--guidance-scale must be >= 1", e);

        (stdout, stderr) = (new StringWriter(), new StringWriter());
        code = Cli.Cli.Run(["generate", "--model", TestPaths.Fixture("wan_tiny"), "--prompt-embeds", TestPaths.Fixture("wan_tiny", "inputs.safetensors"),
            "--latents", TestPaths.Fixture("wan_tiny", "inputs.safetensors"), "--steps", "2", "--guidance-scale", "1", "--flow-shift", "3",
            "--embedded-guidance-scale", "6", "--output-latents", output], stdout, stderr);
        Assert.Equal(2, code);
        Assert.Contains("--embedded-guidance-scale: the wan family's transformer takes no embedded guidance", stderr.ToString());
    }

    private sealed class DisposableDictionary(Dictionary<string, Tensor> items) : IDisposable
    {
        public Dictionary<string, Tensor> Items { get; } = items;
        public void Dispose() { foreach (var t in Items.Values) t.Dispose(); }
    }
}

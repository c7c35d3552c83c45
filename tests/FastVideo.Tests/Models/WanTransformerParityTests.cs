using FastVideo.Cli;
using FastVideo.Models.Dits;
using FastVideo.Weights;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Models;

/// <summary>
/// The C# Wan transformer and sampler against an independent PyTorch implementation of the Diffusers architecture
/// (scripts/make_wan_fixtures.py, fixtures in tests/fixtures/wan_tiny). Tolerance: 1e-4 max abs, fp32.
/// </summary>
public class WanTransformerParityTests(Xunit.Abstractions.ITestOutputHelper log)
{
    private const double Tol = 1e-4;
    private static readonly string ModelDir = TestPaths.Fixture("wan_tiny");
    private static readonly string Inputs = TestPaths.Fixture("wan_tiny", "inputs.safetensors");
    private static readonly string Expected = TestPaths.Fixture("wan_tiny", "expected.safetensors");

    private static double MaxAbs(Tensor a, Tensor b) => ReferenceParity.MaxAbs(a, b);

    [Fact]
    public void ForwardMatchesReferenceAtSeveralTimesteps()
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        var exp = SafeTensors.Load(Expected);
        using var model = WanTransformer3DModel.FromPretrained(ModelDir);
        var ts = inp["timesteps"].data<float>().ToArray();
        Assert.Equal(3, ts.Length);
        using var _ = no_grad();
        for (int i = 0; i < ts.Length; i++)
        {
            var t = full([2], ts[i]);
            var outp = model.Forward(inp["latents"], t, inp["prompt_embeds"]);
            Assert.Equal(exp[$"forward_{i}"].shape, outp.shape);
            double err = MaxAbs(outp, exp[$"forward_{i}"]);
            log.WriteLine($"forward t={ts[i]}: max abs error {err:E3}");
            Assert.True(err < Tol, $"forward at t={ts[i]}: max abs error {err:E3}");
        }
        // Non-square latent grid catches height/width mix-ups in patching and RoPE.
        var rect = model.Forward(inp["latents_rect"], full([1], 500.5f), inp["prompt_embeds"].narrow(0, 0, 1));
        double e2 = MaxAbs(rect, exp["forward_rect"]);
        log.WriteLine($"rect forward: max abs error {e2:E3}");
        Assert.True(e2 < Tol, $"rectangular forward: max abs error {e2:E3}");
    }

    [Fact]
    public void GradientsMatchReferenceForEveryParameter()
    {
        // d/dθ sum(out * w) against PyTorch autograd of the reference: checks the backward path used in training.
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        var exp = SafeTensors.Load(TestPaths.Fixture("wan_tiny", "expected_grads.safetensors"));
        using var model = WanTransformer3DModel.FromPretrained(ModelDir);
        foreach (var p in model.parameters()) p.requires_grad = true;
        var outp = model.Forward(inp["latents"], full([2], 500.5f), inp["prompt_embeds"]);
        (outp * exp["loss_weight"]).sum().backward();
        double worst = ReferenceParity.AssertGradients(model, exp, _ => 1e-4);
        log.WriteLine($"gradients: worst relative max abs error {worst:E3}");
    }

    [Fact]
    public void ForwardIsSensitiveToTheTimestep()
    {
        // Guards the comparison above against a model that ignores its inputs.
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        using var model = WanTransformer3DModel.FromPretrained(ModelDir);
        using var _ = no_grad();
        var a = model.Forward(inp["latents"], full([2], 500f), inp["prompt_embeds"]);
        var b = model.Forward(inp["latents"], full([2], 600f), inp["prompt_embeds"]);
        Assert.True(MaxAbs(a, b) > 1e-2);
    }

    [Fact]
    public void ShardedFolderLoadsExactlyAsTheSingleFile()
    {
        using var scope = NewDisposeScope();
        using var single = WanTransformer3DModel.FromPretrained(ModelDir);
        using var sharded = WanTransformer3DModel.FromPretrained(TestPaths.Fixture("wan_tiny_sharded", "transformer"));
        var a = single.state_dict();
        var b = sharded.state_dict();
        Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        foreach (var k in a.Keys) Assert.True(a[k].shape.SequenceEqual(b[k].shape) && a[k].allclose(b[k], 0, 0), $"parameter {k} differs");
    }

    [Theory]
    [InlineData(1.0, "sample_cfg1")]
    [InlineData(5.0, "sample_cfg5")]
    public void GenerateCommandMatchesReferenceSampler(double guidance, string key)
    {
        using var scope = NewDisposeScope();
        var dir = TestPaths.TempDir("gen");
        var output = Path.Combine(dir, "out.safetensors");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = Cli.Cli.Run([
            "generate", "--model", ModelDir, "--compute-dtype", "fp32", "--prompt-embeds", Inputs, "--negative-prompt-embeds", Inputs,
            "--latents", Inputs, "--steps", "4", "--guidance-scale", guidance.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--flow-shift", "3", "--output-latents", output], stdout, stderr);
        Assert.True(rc == 0, stderr.ToString());
        Assert.Equal(4, stderr.ToString().Split('\n').Count(l => l.TrimStart().StartsWith("step ")));
        var got = SafeTensors.Load(output)["latents"];
        var exp = SafeTensors.Load(Expected)[key];
        double err = MaxAbs(got, exp);
        log.WriteLine($"{key}: max abs error {err:E3}");
        Assert.True(err < Tol, $"{key}: max abs error {err:E3}");
    }

    [Fact]
    public void Bf16ForwardStaysCloseToFp32()
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        var exp = SafeTensors.Load(Expected);
        using var model = WanTransformer3DModel.FromPretrained(ModelDir, ScalarType.BFloat16);
        using var _ = no_grad();
        var outp = model.Forward(inp["latents"], full([2], 500.5f), inp["prompt_embeds"]);
        Assert.Equal(ScalarType.BFloat16, outp.dtype);
        double err = MaxAbs(outp, exp["forward_1"]);
        Assert.True(err < 0.15, $"bf16 forward: max abs error {err:E3}");
    }

    [Fact]
    public void StateDictKeysAreDiffusersNames()
    {
        using var model = new WanTransformer3DModel(new WanTransformerConfig { NumAttentionHeads = 2, AttentionHeadDim = 16, TextDim = 8, FfnDim = 16, NumLayers = 1, InChannels = 4, OutChannels = 4 });
        var keys = model.state_dict().Keys.ToHashSet();
        foreach (var k in new[] { "patch_embedding.weight", "condition_embedder.time_embedder.linear_1.weight", "condition_embedder.time_proj.bias",
                     "condition_embedder.text_embedder.linear_2.weight", "blocks.0.scale_shift_table", "blocks.0.attn1.to_out.0.weight",
                     "blocks.0.attn2.norm_k.weight", "blocks.0.norm2.bias", "blocks.0.ffn.net.0.proj.weight", "blocks.0.ffn.net.2.bias",
                     "proj_out.weight", "scale_shift_table" })
            Assert.Contains(k, keys);
        Assert.Equal(42, keys.Count); // 12 embedder + 27 per block + 3 head
    }
}

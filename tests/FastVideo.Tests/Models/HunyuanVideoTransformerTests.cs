using System.Text.Json.Nodes;
using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using FastVideo.Sampling;
using FastVideo.Weights;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace FastVideo.Tests.Models;

/// <summary>
/// The C# HunyuanVideo transformer against an independent PyTorch implementation of the Diffusers architecture
/// (scripts/make_hunyuan_fixtures.py, fixtures in tests/fixtures/hunyuan_tiny): parameter names and shapes one for
/// one, forward with a partly masked prompt, gradients, the pipeline's 4-step sampler. Tolerance 1e-3 max abs in fp32
/// (measured errors are logged; they are about 1e-6).
/// </summary>
public class HunyuanVideoTransformerTests(ITestOutputHelper log)
{
    private const double Tol = 1e-3;
    private static readonly string ModelDir = TestPaths.Fixture("hunyuan_tiny");
    private static readonly string Inputs = TestPaths.Fixture("hunyuan_tiny", "inputs.safetensors");
    private static readonly string Expected = TestPaths.Fixture("hunyuan_tiny", "expected.safetensors");

    private static double MaxAbs(Tensor a, Tensor b) => ReferenceParity.MaxAbs(a, b);

    private static Tensor Guidance(long b) => full(new[] { b }, 6000f);

    [Theory]
    [InlineData("config", "param_shapes")]
    [InlineData("config_noguidance", "param_shapes_noguidance")]
    public void ParameterNamesAndShapesAreDiffusersOneForOne(string configKey, string shapesKey)
    {
        var file = JsonNode.Parse(File.ReadAllText(TestPaths.Fixture("hunyuan_tiny", "param_shapes.json")))!.AsObject();
        var reference = file[shapesKey]!.AsArray().ToDictionary(e => (string)e![0]!, e => e![1]!.AsArray().Select(x => (long)x!).ToArray());
        var config = HunyuanVideoTransformerConfig.FromJson(file[configKey]!.AsObject(), configKey);
        using var model = new HunyuanVideoTransformer3DModel(config, torch.META);
        var ours = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        Assert.Empty(reference.Keys.Except(ours.Keys));   // Diffusers keys we lack
        Assert.Empty(ours.Keys.Except(reference.Keys));   // keys Diffusers does not have
        foreach (var (name, shape) in reference)
            Assert.True(shape.SequenceEqual(ours[name]), $"{name}: Diffusers [{string.Join(",", shape)}], ours [{string.Join(",", ours[name])}]");
        log.WriteLine($"{configKey}: {reference.Count} parameters match");
    }

    [Fact]
    public void ForwardMatchesTheReferenceWithAPartlyMaskedPrompt()
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        var exp = SafeTensors.Load(Expected);
        using var model = HunyuanVideoTransformer3DModel.FromPretrained(ModelDir);
        Assert.Equal(0, inp["prompt_attention_mask"][1, 5].item<float>());   // sample 1 is padded after 4 tokens
        using var _ = no_grad();
        var ts = inp["timesteps"].data<float>().ToArray();
        for (int i = 0; i < ts.Length; i++)
        {
            var outp = model.Forward(inp["latents"], full([2], ts[i]), inp["prompt_embeds"], inp["prompt_attention_mask"], inp["pooled_prompt_embeds"], Guidance(2));
            double err = MaxAbs(outp, exp[$"forward_{i}"]);
            log.WriteLine($"forward t={ts[i]}: max abs error {err:E3}");
            Assert.True(err < Tol, $"forward at t={ts[i]}: max abs error {err:E3}");
        }
        // Non-square grid (height/width mix-ups in patching, RoPE and unpatchify), a masked prompt alone.
        var rect = model.Forward(inp["latents_rect"], full([1], 500.5f), inp["prompt_embeds"].narrow(0, 1, 1),
            inp["prompt_attention_mask"].narrow(0, 1, 1), inp["pooled_prompt_embeds"].narrow(0, 1, 1), Guidance(1));
        double e2 = MaxAbs(rect, exp["forward_rect"]);
        log.WriteLine($"rect forward: max abs error {e2:E3}");
        Assert.True(e2 < Tol, $"rectangular forward: max abs error {e2:E3}");
        // No mask: every text token attended (upstream FastVideo's numerics).
        var unmasked = model.Forward(inp["latents"], full([2], 500.5f), inp["prompt_embeds"], null, inp["pooled_prompt_embeds"], Guidance(2));
        double e3 = MaxAbs(unmasked, exp["forward_unmasked"]);
        log.WriteLine($"unmasked forward: max abs error {e3:E3}; masked vs unmasked differ by {MaxAbs(exp["forward_1"], exp["forward_unmasked"]):E3}");
        Assert.True(e3 < Tol, $"unmasked forward: max abs error {e3:E3}");
    }

    [Fact]
    public void PaddedTokensDoNotReachTheOutput()
    {
        // The mask hides what the padded rows hold: changing them changes nothing, dropping the mask changes the output.
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        using var model = HunyuanVideoTransformer3DModel.FromPretrained(ModelDir);
        using var _ = no_grad();
        var text = inp["prompt_embeds"].clone();
        Tensor Run(Tensor t, Tensor? mask) => model.Forward(inp["latents"], full([2], 300f), t, mask, inp["pooled_prompt_embeds"], Guidance(2));
        var a = Run(text, inp["prompt_attention_mask"]);
        text[1, 4..].add_(3.0);
        Assert.Equal(0, MaxAbs(Run(text, inp["prompt_attention_mask"]), a));
        Assert.True(MaxAbs(Run(text, null), a) > 1e-2);
    }

    [Fact]
    public void GradientsMatchTheReferenceForEveryParameter()
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        var exp = SafeTensors.Load(TestPaths.Fixture("hunyuan_tiny", "expected_grads.safetensors"));
        using var model = HunyuanVideoTransformer3DModel.FromPretrained(ModelDir);
        foreach (var p in model.parameters()) p.requires_grad = true;
        var outp = model.Forward(inp["latents"], full([2], 500.5f), inp["prompt_embeds"], inp["prompt_attention_mask"], inp["pooled_prompt_embeds"], Guidance(2));
        (outp * exp["loss_weight"]).sum().backward();
        // The guidance embedder's first layer multiplies the sinusoid of 6000, whose float32 value differs between
        // libtorch builds by up to ~4e-4 (one ulp of exp times 6000): its weight gradient inherits that floor.
        const string sinusoidFloor = "time_text_embed.guidance_embedder.linear_1.weight";
        double worst = ReferenceParity.AssertGradients(model, exp, name => name == sinusoidFloor ? 1e-3 : 1e-4, name => name != sinusoidFloor);
        log.WriteLine($"gradients: worst relative max abs error {worst:E3} (the guidance embedder's first weight aside)");
    }

    [Theory]
    [InlineData(1.0, "sample_cfg1")]
    [InlineData(5.0, "sample_cfg5")]
    public void PipelineSamplerMatchesTheReference(double trueCfg, string key)
    {
        // HunyuanVideoPipeline: sigmas linspace(1, 0, 5)[:-1] shifted by 7, terminal 0; embedded guidance 6 x 1000;
        // true CFG with the negative embeddings.
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        var exp = SafeTensors.Load(Expected);
        using var model = HunyuanVideoTransformer3DModel.FromPretrained(ModelDir);
        using var _ = no_grad();
        VelocityModel velocity = (x, t, conditional) => conditional
            ? model.Forward(x, t, inp["prompt_embeds"], inp["prompt_attention_mask"], inp["pooled_prompt_embeds"], Guidance(2))
            : model.Forward(x, t, inp["negative_prompt_embeds"], inp["negative_prompt_attention_mask"], inp["negative_pooled_prompt_embeds"], Guidance(2));
        var options = new SamplingOptions(4, trueCfg, 7.0) { Sigmas = FastVideo.Models.Schedulers.FlowMatchEulerDiscreteScheduler.LinearSigmas(4) };
        var got = FlowMatchSampler.Sample(velocity, inp["latents"], options);
        double err = MaxAbs(got, exp[key]);
        log.WriteLine($"{key}: max abs error {err:E3}");
        Assert.True(err < Tol, $"{key}: max abs error {err:E3}");
    }

    [Fact]
    public void ShardedFolderLoadsExactlyAsTheSingleFile()
    {
        using var single = HunyuanVideoTransformer3DModel.FromPretrained(ModelDir);
        using var sharded = HunyuanVideoTransformer3DModel.FromPretrained(TestPaths.Fixture("hunyuan_tiny_sharded", "transformer"));
        var a = single.state_dict();
        var b = sharded.state_dict();
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var k in a.Keys) Assert.True(a[k].shape.SequenceEqual(b[k].shape) && a[k].allclose(b[k], 0, 0), $"parameter {k} differs");
    }

    [Fact]
    public void SavedFolderLoadsBackBitForBit()
    {
        using var model = HunyuanVideoTransformer3DModel.CreateRandom(HunyuanVideoTransformerConfig.FromJson(
            JsonNode.Parse(File.ReadAllText(TestPaths.Fixture("hunyuan_tiny", "transformer", "config.json")))!.AsObject(), "config"), 3);
        var dir = TestPaths.TempDir("hy-save");
        model.SavePretrained(dir);
        using var back = HunyuanVideoTransformer3DModel.FromPretrained(dir);
        Assert.Equal(model.Config.ToJson().ToJsonString(), back.Config.ToJson().ToJsonString());
        var (a, b) = (model.state_dict(), back.state_dict());
        foreach (var k in a.Keys) Assert.True(a[k].allclose(b[k], 0, 0), $"{k} differs after save and load");
    }

    [Theory]
    [InlineData("bf16 compute")]
    [InlineData("bf16 weights")]
    public void Bf16StaysCloseToFp32(string mode)
    {
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        var exp = SafeTensors.Load(Expected);
        using var model = HunyuanVideoTransformer3DModel.FromPretrained(ModelDir, mode == "bf16 weights" ? ScalarType.BFloat16 : ScalarType.Float32);
        if (mode == "bf16 compute") model.ComputeDtype = ScalarType.BFloat16;
        using var _ = no_grad();
        var outp = model.Forward(inp["latents"], full([2], 500.5f), inp["prompt_embeds"], inp["prompt_attention_mask"], inp["pooled_prompt_embeds"], Guidance(2));
        Assert.Equal(model.ParamDtype, outp.dtype);   // returned in the master dtype
        double err = MaxAbs(outp, exp["forward_1"]);
        log.WriteLine($"{mode}: max abs error {err:E3} (outputs up to {exp["forward_1"].abs().max().item<float>():F2})");
        Assert.True(err < 0.15, $"{mode}: max abs error {err:E3}");
        Assert.True(err > 1e-5, "bf16 should differ from fp32 at all (else it did not compute in bf16)");
    }

    [Theory]
    [InlineData("full")]
    [InlineData("ops")]
    [InlineData("block_skip/3")]
    public void CheckpointingGivesThePlainGradients(string policyName)
    {
        // With a partly masked prompt, so that the selective policy's kept attention recomputes masked probabilities.
        using var scope = NewDisposeScope();
        var inp = SafeTensors.Load(Inputs);
        using var model = HunyuanVideoTransformer3DModel.FromPretrained(ModelDir);
        model.train();
        foreach (var p in model.parameters()) p.requires_grad = true;
        Dictionary<string, Tensor> Grads(CheckpointingPolicy? policy)
        {
            model.GradientCheckpointing = policy;
            model.zero_grad();
            var latents = inp["latents"].clone().requires_grad_(true);
            var outp = model.Forward(latents, tensor(new[] { 300f, 800f }), inp["prompt_embeds"], inp["prompt_attention_mask"], inp["pooled_prompt_embeds"], Guidance(2));
            ((outp * outp).sum() + outp.sum()).backward();
            ActivationCheckpoint.CompleteBackward();
            var g = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
            g["input.latents"] = latents.grad!.clone();
            return g;
        }
        var plain = Grads(null);
        int recomputedBefore = ActivationCheckpoint.RecomputedOnThread;
        var policy = ActivationCheckpointTests.Parse(policyName)!;
        var ckpt = Grads(policy);
        int blocks = model.Config.NumLayers + model.Config.NumSingleLayers;
        Assert.Equal(Enumerable.Range(0, blocks).Count(policy.Checkpoints), ActivationCheckpoint.RecomputedOnThread - recomputedBefore);
        double worst = 0;
        foreach (var (k, reference) in plain)
        {
            if (k.StartsWith("context_embedder.") && k.EndsWith("attn.to_k.bias"))
            {
                // The refiner's key biases have no gradient (softmax ignores a bias shared by all keys): rounding noise.
                Assert.True(reference.abs().max().item<float>() < 1e-5 && ckpt[k].abs().max().item<float>() < 1e-5, $"{k}: expected no gradient");
                continue;
            }
            double rel = ActivationCheckpointTests.Relative(ckpt[k], reference);
            worst = Math.Max(worst, rel);
            Assert.True(rel <= 1e-5, $"{policyName}: gradient of {k} differs by {rel:E2}");
        }
        log.WriteLine($"{policyName}: worst relative gradient difference {worst:E2} over {plain.Count} tensors");
    }

    [Fact]
    public void ConfigErrorsNameTheFileAndKey()
    {
        JsonObject Cfg(string key, JsonNode? value) { var o = new JsonObject { [key] = value }; return o; }
        var e = Assert.Throws<UserError>(() => HunyuanVideoTransformerConfig.FromJson(Cfg("image_condition_type", "token_replace"), "x/config.json"));
        Assert.Contains("x/config.json: image_condition_type 'token_replace'", e.Message);
        e = Assert.Throws<UserError>(() => HunyuanVideoTransformerConfig.FromJson(Cfg("rope_axes_dim", new JsonArray(16, 56, 58)), "x/config.json"));
        Assert.Contains("rope_axes_dim must be 3 even sizes summing to attention_head_dim 128", e.Message);
        e = Assert.Throws<UserError>(() => HunyuanVideoTransformerConfig.FromJson(Cfg("num_layers", "many"), "x/config.json"));
        Assert.Equal("x/config.json: num_layers must be an integer, got \"many\"", e.Message);
    }
}

using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Layers;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Hunyuan;
using FastVideo.Weights;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>
/// The hunyuan family: the wan plugin's mechanics with HunyuanVideo's normalisation, flow shift, packed text split at
/// the boundary into tokens + mask and the pooled vector, the negative side, embedded guidance and LoRA layers; tiny
/// random model of tests/fixtures/hunyuan_tiny (text 24 wide, pooled 12, 4 latent channels, VAE scaling 0.476986).
/// </summary>
public class HunyuanModelTests
{
    private static readonly string ModelDir = TestPaths.Fixture("hunyuan_tiny");
    private const int Width = 24, Pooled = 12;

    internal static RunConfig Run(HunyuanRoleConfig? student = null) => WanModelTests.Run() with
    {
        Recipe = new RecipeSection { Family = "hunyuan", Method = "finetune" },
        Roles = new Dictionary<string, RoleConfig> { ["student"] = student ?? new HunyuanRoleConfig { InitFrom = ModelDir } },
    };

    internal static HunyuanModel Build(HunyuanRoleConfig? role = null)
    {
        var run = Run(role);
        return (HunyuanModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
    }

    /// <summary>Packed text as the loader gives it: [B, 1 + 7, 24], row 0 = pooled (12) zero-padded; sample 1 has 4 tokens.</summary>
    internal static RawBatch PackedBatch(long b = 2)
    {
        using var g = new Generator(11, device("cpu"));
        var pooled = randn([b, Pooled], generator: g);
        var tokens = randn([b, 7, Width], generator: g);
        var mask = ones(b, 8);
        if (b > 1) { mask[1, 5..].zero_(); tokens[1, 4..].zero_(); }   // the loader pads with zero rows and a zero mask
        var row0 = nn.functional.pad(pooled, [0, Width - Pooled]).unsqueeze(1);
        return new RawBatch
        {
            VaeLatent = randn([b, 4, 3, 8, 8], generator: g),
            Conditioning = Conditioning.FromText(cat([row0, tokens], 1), mask),
        };
    }

    [Fact]
    public void PrepareBatchSplitsThePackedTextAndNormalisesLikeHunyuan()
    {
        using var model = Build();
        Assert.Equal(7.0, ((FastVideo.Models.Schedulers.FlowMatchEulerDiscreteScheduler)model.NoiseScheduler).Shift);
        Assert.Equal(0.476986, model.Vae.ScalingFactor);
        using var raw = PackedBatch();
        using var gen = new Generator(42, device("cpu"));
        using var tb = model.PrepareBatch(raw, gen);
        var packed = raw.Conditioning[Conditioning.Text];
        var text = tb.Conditional[Conditioning.Text];
        Assert.True(text.Values.allclose(packed.Values.narrow(1, 1, 7), 0, 0));
        Assert.True(text.Mask!.allclose(packed.Mask!.narrow(1, 1, 7), 0, 0));
        Assert.Equal(new[] { 1f, 1, 1, 1, 0, 0, 0 }, text.Mask[1].data<float>().ToArray());
        Assert.True(tb.Conditional[Conditioning.PooledText].Values.allclose(packed.Values.select(1, 0).narrow(1, 0, Pooled), 0, 0));
        // z' = z · scaling_factor (no shift), then x_t = (1 - sigma) x0 + sigma eps.
        Assert.True(tb.Latents.allclose((raw.VaeLatent!.narrow(2, 0, 2) * 0.476986).permute(0, 2, 1, 3, 4), 1e-6, 1e-6));
        var x0 = tb.Latents.permute(0, 2, 1, 3, 4);
        Assert.True(tb.NoisyModelInput.allclose((1 - tb.Sigmas) * x0 + tb.Sigmas * tb.Noise, 1e-5, 1e-5));
    }

    [Fact]
    public void PredictNoiseIsTheTransformerWithMaskPooledTextAndEmbeddedGuidance()
    {
        using var model = Build();
        Assert.Equal(6.0, model.EmbeddedGuidanceScale);
        using var raw = PackedBatch();
        using var gen = new Generator(1, device("cpu"));
        using var tb = model.PrepareBatch(raw, gen);
        using var _ = no_grad();
        var v = model.PredictNoise(tb.Latents, tb.Timesteps, tb, conditional: true);
        var text = tb.Conditional[Conditioning.Text];
        var direct = model.HunyuanTransformer.Forward(tb.Latents.permute(0, 2, 1, 3, 4), tb.Timesteps, text.Values, text.Mask,
            tb.Conditional[Conditioning.PooledText].Values, full([2], 6000f)).permute(0, 2, 1, 3, 4);
        Assert.True(v.allclose(direct, 0, 0));
        // The mask matters (sample 1 is padded) and so does the guidance scale.
        var unmasked = model.HunyuanTransformer.Forward(tb.Latents.permute(0, 2, 1, 3, 4), tb.Timesteps, text.Values, null,
            tb.Conditional[Conditioning.PooledText].Values, full([2], 6000f)).permute(0, 2, 1, 3, 4);
        Assert.False(v[1].allclose(unmasked[1], 1e-4, 1e-4));
        using var other = Build(new HunyuanRoleConfig { InitFrom = ModelDir, EmbeddedGuidanceScale = 3.5 });
        Assert.False(other.PredictNoise(tb.Latents, tb.Timesteps, tb, conditional: true).allclose(v, 1e-4, 1e-4));
    }

    [Fact]
    public void TheZeroPolicyBlanksTokensMaskAndPooledVector()
    {
        // cfg_uncond text: zero zeroes every text channel, the mask too: no token is attended and the pooled mean is 0
        // (Diffusers would divide by zero there).
        using var model = Build();
        using var raw = PackedBatch();
        using var gen = new Generator(1, device("cpu"));
        using var tb = model.PrepareBatch(raw, gen);
        using var _ = no_grad();
        var zero = model.PredictNoise(tb.Latents, tb.Timesteps, tb, conditional: false, CfgUncondPolicy.Parse(new Dictionary<string, object?> { ["text"] = "zero" }));
        Assert.True(zero.isfinite().all().item<bool>());
        var text = tb.Conditional[Conditioning.Text];
        var direct = model.HunyuanTransformer.Forward(tb.Latents.permute(0, 2, 1, 3, 4), tb.Timesteps, zeros_like(text.Values), zeros_like(text.Mask!),
            zeros_like(tb.Conditional[Conditioning.PooledText].Values), full([2], 6000f)).permute(0, 2, 1, 3, 4);
        Assert.True(zero.allclose(direct, 0, 0));
        Assert.False(zero.allclose(model.PredictNoise(tb.Latents, tb.Timesteps, tb, conditional: true), 1e-3, 1e-3));
    }

    [Theory]
    [InlineData("full")]
    [InlineData("ops")]
    public void LoraAdaptersUnderCheckpointingGetThePlainGradients(string policy)
    {
        // Through the plugin: LoRA on the default layers (B != 0), the role's checkpointing applied to both block kinds.
        HunyuanModel Make(string? checkpointing)
        {
            var run = Run(new HunyuanRoleConfig { InitFrom = ModelDir, Lora = new LoraOptions { Enable = true, Rank = 2 }, EnableGradientCheckpointingType = checkpointing });
            var m = (HunyuanModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
            using var g = new Generator(3, device("cpu"));
            using var _ = no_grad();
            foreach (var (_, p) in m.Transformer.named_parameters().Where(p => p.name.Contains("lora_B"))) p.copy_(randn(p.shape, generator: g) * 0.1);
            return m;
        }
        Dictionary<string, Tensor> Grads(HunyuanModel m)
        {
            using var raw = PackedBatch();
            using var gen = new Generator(1, device("cpu"));
            using var tb = m.PrepareBatch(raw, gen);
            var v = m.PredictNoise(tb.NoisyModelInput.permute(0, 2, 1, 3, 4), tb.Timesteps, tb, conditional: true);
            m.Backward((v * v).mean(), null, 1);
            return m.TrainableParameters().Select((p, i) => (i, p)).ToDictionary(x => $"{x.i}", x => x.p.grad!.clone());
        }
        using var plain = Make(null);
        using var ckpt = Make(policy);
        Assert.Equal(policy, ckpt.AppliedCheckpointing);
        var (a, b) = (Grads(plain), Grads(ckpt));
        Assert.Equal(2 * (2 * 7 + 2 * 3), a.Count);   // A and B of each adapted layer, nothing else
        foreach (var (k, g) in a)
        {
            Assert.True(g.abs().max().item<float>() > 0, $"adapter tensor {k} got no gradient");
            Assert.True(FastVideo.Tests.Models.ActivationCheckpointTests.Relative(b[k], g) <= 1e-5, $"{policy}: adapter tensor {k} differs");
        }
    }

    [Fact]
    public void TextThatIsNotPackedTheHunyuanWayIsRefused()
    {
        using var model = Build();
        using var raw = PackedBatch();
        raw.Conditioning[Conditioning.Text].Values[1, 0, Pooled + 3] = 0.5f;   // row 0 is not a zero-padded pooled vector
        using var gen = new Generator(1, device("cpu"));
        var e = Assert.Throws<UserError>(() => model.PrepareBatch(raw, gen).Dispose());
        Assert.StartsWith("text_embedding: row 0 of sample 1 has non-zero values after its first 12", e.Message);
    }

    [Theory]
    [InlineData("diffusers")]
    [InlineData("packed")]
    public void NegativeConditioningFromPrecomputedEncoderOutputs(string layout)
    {
        using var g = new Generator(5, device("cpu"));
        var tokens = randn([1, 3, Width], generator: g);
        var pooled = randn([1, Pooled], generator: g);
        var path = Path.Combine(TestPaths.TempDir("hy-neg"), "neg.safetensors");
        SafeTensors.Save(path, layout == "diffusers"
            ? [new("negative_prompt_embeds", tokens), new("negative_pooled_prompt_embeds", pooled)]
            : [new("negative_prompt_embeds", cat([nn.functional.pad(pooled, [0, Width - Pooled]).unsqueeze(1), tokens], 1))]);
        using var model = Build(new HunyuanRoleConfig { InitFrom = ModelDir, NegativePromptEmbeds = path });
        using var raw = PackedBatch();
        using var gen = new Generator(1, device("cpu"));
        using var tb = model.PrepareBatch(raw, gen);
        var neg = tb.Unconditional!;
        // Tokens zero-padded to the batch's 7 with an all-ones mask over the 3 real ones; pooled vector as given.
        Assert.Equal(new long[] { 2, 7, Width }, neg[Conditioning.Text].Values.shape);
        Assert.True(neg[Conditioning.Text].Values[1].narrow(0, 0, 3).allclose(tokens[0], 0, 0));
        Assert.Equal(new[] { 1f, 1, 1, 0, 0, 0, 0 }, neg[Conditioning.Text].Mask![0].data<float>().ToArray());
        Assert.True(neg[Conditioning.PooledText].Values.allclose(pooled.expand(2, Pooled), 0, 0));
        using var _ = no_grad();
        Assert.False(model.PredictNoise(tb.Latents, tb.Timesteps, tb, conditional: false)
            .allclose(model.PredictNoise(tb.Latents, tb.Timesteps, tb, conditional: true), 1e-4, 1e-4));
    }

    [Fact]
    public void ANegativeFileWithoutPooledTextMustBePacked()
    {
        using var g = new Generator(5, device("cpu"));
        var path = Path.Combine(TestPaths.TempDir("hy-neg"), "neg.safetensors");
        SafeTensors.Save(path, [new("negative_prompt_embeds", randn([1, 3, Width], generator: g))]);
        using var model = Build(new HunyuanRoleConfig { InitFrom = ModelDir, NegativePromptEmbeds = path });
        var e = Assert.Throws<UserError>(() => model.EnsureNegativeConditioning());
        Assert.Contains("roles.student.negative_prompt_embeds: '" + path + "': 'negative_prompt_embeds' without 'negative_pooled_prompt_embeds'", e.Message);
        Assert.Contains("row 0 of sample 0 has non-zero values", e.Message);
    }

    [Fact]
    public void PipelineEmbeddedCfgScaleIsTheGuidanceOfRolesWithoutTheirOwn()
    {
        HunyuanModel BuildWith(HunyuanRoleConfig role, double? pipelineScale)
        {
            var run = Run(role) with { Pipeline = new PipelineConfig { EmbeddedCfgScale = pipelineScale } };
            return (HunyuanModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
        }
        using (var model = BuildWith(new HunyuanRoleConfig { InitFrom = ModelDir }, 4.5)) Assert.Equal(4.5, model.EmbeddedGuidanceScale);
        using (var model = BuildWith(new HunyuanRoleConfig { InitFrom = ModelDir, EmbeddedGuidanceScale = 3.5 }, 4.5)) Assert.Equal(3.5, model.EmbeddedGuidanceScale);
        // A transformer without a guidance embedder ignores the pipeline's value, as FastVideo's pipelines do.
        var dir = TestPaths.TempDir("hy-noguide-pipeline");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(ModelDir, "transformer", "config.json")))!.AsObject();
        config["guidance_embeds"] = false;
        HunyuanModel.Family.WriteRandomTransformer!(config, 3, dir);
        using (var plain = BuildWith(new HunyuanRoleConfig { InitFrom = dir }, 4.5)) Assert.Null(plain.EmbeddedGuidanceScale);
    }

    [Fact]
    public void EmbeddedGuidanceOnAModelWithoutAGuidanceEmbedderIsRefused()
    {
        var dir = TestPaths.TempDir("hy-noguide");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(ModelDir, "transformer", "config.json")))!.AsObject();
        config["guidance_embeds"] = false;
        HunyuanModel.Family.WriteRandomTransformer!(config, 3, dir);
        using (var plain = Build(new HunyuanRoleConfig { InitFrom = dir })) Assert.Null(plain.EmbeddedGuidanceScale);
        var e = Assert.Throws<UserError>(() => Build(new HunyuanRoleConfig { InitFrom = dir, EmbeddedGuidanceScale = 6 }).Dispose());
        Assert.StartsWith("roles.student.embedded_guidance_scale: the transformer embeds no guidance", e.Message);
    }

    [Fact]
    public void AMixOfHunyuanAndWanRolesIsRefusedBeforeLoading()
    {
        // Paths that do not exist: the refusal must come before any folder is read.
        var run = Run() with
        {
            Recipe = new RecipeSection { Family = "hunyuan", Method = "dmd2" },
            Roles = new Dictionary<string, RoleConfig>
            {
                ["student"] = new HunyuanRoleConfig { InitFrom = "/nonexistent/hunyuan" },
                ["teacher"] = new RoleConfig { Family = "wan", InitFrom = "/nonexistent/wan", Trainable = false },
                ["critic"] = new HunyuanRoleConfig { InitFrom = "/nonexistent/hunyuan" },
            },
            Method = RecipeLoader.BindOptions<FastVideo.Train.Methods.DistributionMatching.DMD2Options>(DMD2MethodTests.MethodOptions(guidance: 2.0), "method"),
        };
        run = run with { Training = run.Training with { Optimizer = new OptimizerConfig { LearningRate = 1e-4 } } };
        foreach (var attempt in new Action[] { () => TrainingBuilder.Build(run).Dispose(), () => FastVideo.Train.TrainingPlan.BuildFromConfig(run) })
        {
            var e = Assert.Throws<UserError>(attempt);
            Assert.StartsWith("roles: the roles' families do not share a latent space: student (hunyuan: hunyuan-vae), teacher (wan: wan-vae), critic (hunyuan: hunyuan-vae)", e.Message);
            Assert.Contains("each family's transformer reads its own VAE's latents", e.Message);
        }
    }

    [Fact]
    public void LoraTargetsTheBlocksAttentionAndNotTheRefiner()
    {
        var run = Run(new HunyuanRoleConfig { InitFrom = ModelDir, Lora = new LoraOptions { Enable = true, Rank = 2 } });
        using var model = (HunyuanModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
        // Upstream's default targets (q_proj, k_proj, v_proj, o_proj, to_q, to_k, to_v, to_out, ...) on Diffusers' names.
        var expected = Enumerable.Range(0, 2).SelectMany(i => new[] { "to_q", "to_k", "to_v", "add_k_proj", "add_v_proj", "add_q_proj", "to_out.0" }
                .Select(l => $"transformer_blocks.{i}.attn.{l}"))
            .Concat(Enumerable.Range(0, 2).SelectMany(i => new[] { "to_q", "to_k", "to_v" }.Select(l => $"single_transformer_blocks.{i}.attn.{l}")));
        Assert.Equal(expected.Order(), model.LoraLayers.Order());
        Assert.DoesNotContain(model.LoraLayers, l => l.StartsWith("context_embedder"));
        // An explicit list reaches the MLPs and output projections.
        run = Run(new HunyuanRoleConfig { InitFrom = ModelDir, Lora = new LoraOptions { Enable = true, Rank = 2, TargetModules = ["ff", "proj_mlp", "proj_out", "to_add_out"] } });
        using var wide = (HunyuanModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
        Assert.Equal(2 * 5 + 2 * 2 + 1, wide.LoraLayers.Count);   // per dual block ff/ff_context x2 + to_add_out, per single block 2, proj_out
        // The dry-run's header-only selection agrees with the model's.
        var headerNames = SafeTensors.ReadHeader(Path.Combine(ModelDir, "transformer", "diffusion_pytorch_model.safetensors")).Keys
            .Where(k => k.EndsWith(".weight")).Select(k => k[..^".weight".Length]).Where(HunyuanModel.Family.IsLoraCapable!).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(LoraAdapters.CapableLayers(wide.Transformer).Select(l => l.Name).Where(n => !n.StartsWith("context_embedder.")).Order(StringComparer.Ordinal), headerNames);
    }

    [Fact]
    public void LoraTargetsInFastVideosDitNamesChooseTheSameLayers()
    {
        HunyuanModel With(params string[] targets) =>
            Build(new HunyuanRoleConfig { InitFrom = ModelDir, Lora = new LoraOptions { Enable = true, Rank = 2, TargetModules = targets } });
        // FastVideo's t2v_lora targets: the fused qkv and projections of both streams; the refiner's self_attn_* adapt nothing.
        using (var fastVideo = With("img_attn_qkv", "img_attn_proj", "txt_attn_qkv", "txt_attn_proj", "self_attn_qkv", "self_attn_proj"))
        using (var diffusers = With("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"))
        {
            var expected = diffusers.LoraLayers.Where(l => l.StartsWith("transformer_blocks.")).Order(StringComparer.Ordinal).ToList();
            Assert.Equal(2 * 8, expected.Count);   // 2 dual blocks x (q, k, v, out) x 2 streams
            Assert.Equal(expected, fastVideo.LoraLayers.Order(StringComparer.Ordinal));
        }
        // A single block's linear1 is its q, k, v and MLP input; linear2 its output; final_layer the output projection.
        using (var single = With("linear1", "linear2", "final_layer"))
            Assert.Equal(Enumerable.Range(0, 2).SelectMany(i => new[] { "attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out" }
                    .Select(l => $"single_transformer_blocks.{i}.{l}")).Append("proj_out").Order(StringComparer.Ordinal),
                single.LoraLayers.Order(StringComparer.Ordinal));
        // Refiner names alone choose nothing (an error, as upstream's "no LoRA-compatible layers"); unknown names stay errors.
        var e = Assert.Throws<UserError>(() => With("self_attn_qkv"));
        Assert.Contains("no LoRA-capable layer matches [self_attn_qkv]", e.Message);
        e = Assert.Throws<UserError>(() => With("img_attn_qkv", "img_attn_qvk"));
        Assert.Contains("'img_attn_qvk' matches no LoRA-capable layer", e.Message);
        // The dry run's header-only selection agrees.
        var headers = SafeTensors.ReadHeader(Path.Combine(ModelDir, "transformer", "diffusion_pytorch_model.safetensors")).Keys
            .Where(k => k.EndsWith(".weight")).Select(k => k[..^".weight".Length]).ToList();
        using var model = With("img_attn_qkv", "txt_attn_proj", "self_attn_qkv");
        Assert.Equal(model.LoraLayers.Order(StringComparer.Ordinal), LoraAdapters.SelectTargets(headers, new LoraOptions
            { Enable = true, Rank = 2, TargetModules = ["img_attn_qkv", "txt_attn_proj", "self_attn_qkv"] }, "roles.student.lora",
            HunyuanModel.Family.IsLoraCapable, HunyuanModel.Family.UpstreamLayerName).Order(StringComparer.Ordinal));
    }
}

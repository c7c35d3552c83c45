using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Models.Dits;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using FastVideo.Weights;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

public class WanModelTests
{
    private static readonly string ModelDir = TestPaths.Fixture("wan_tiny");

    internal static RunConfig Run(RoleConfig? student = null, PipelineConfig? pipeline = null, string scheme = "uniform") => new()
    {
        Recipe = new RecipeSection { Family = "wan", Method = "finetune" },
        Roles = new Dictionary<string, RoleConfig> { ["student"] = student ?? new RoleConfig { InitFrom = ModelDir } },
        Training = new TrainingConfig
        {
            Data = new DataConfig { NumLatentT = 2, NumHeight = 64, NumWidth = 64, TrainBatchSize = 2 },
            Model = new ModelTrainingConfig { WeightingScheme = scheme },
            // The tests compare numbers across code paths to 1e-5 or bit for bit: fp32 compute. bf16 compute has its
            // own tests (BFloat16ComputeTests).
            ComputePrecision = "fp32",
        },
        Pipeline = pipeline ?? new PipelineConfig(),
    };

    internal static WanModel Build(RoleConfig? role = null, PipelineConfig? pipeline = null, string name = "student")
    {
        var run = Run(role, pipeline);
        return (WanModel)ModelFamilyRegistry.Default.Create(name, run.Roles["student"], run);
    }

    internal static RawBatch Batch(long b = 2, long t = 3)
    {
        using var g = new Generator(11, device("cpu"));
        return new RawBatch
        {
            VaeLatent = randn([b, 4, t, 8, 8], generator: g),
            Conditioning = Conditioning.FromText(randn([b, 7, 24], generator: g), ones(b, 7)),
        };
    }

    private static string NegativeFile(long len = 5)
    {
        var path = Path.Combine(TestPaths.TempDir("neg"), "neg.safetensors");
        using var g = new Generator(5, device("cpu"));
        SafeTensors.Save(path, [new("negative_prompt_embeds", randn([1, len, 24], generator: g))]);
        return path;
    }

    [Fact]
    public void PrepareBatchBuildsNoisyInputsWithUpstreamLayouts()
    {
        using var model = Build();
        using var raw = Batch();
        using var gen = new Generator(42, device("cpu"));
        using var tb = model.PrepareBatch(raw, gen);
        Assert.Equal(new long[] { 2, 2, 4, 8, 8 }, tb.Latents.shape);           // BTCHW, cropped to num_latent_t = 2
        Assert.Equal(new long[] { 2, 4, 2, 8, 8 }, tb.NoisyModelInput.shape);   // BCTHW
        Assert.Equal(new long[] { 2, 4, 2, 8, 8 }, tb.Noise.shape);
        Assert.Equal(new long[] { 2, 4, 2, 8, 8 }, tb.RawLatentShape);
        Assert.Equal(new long[] { 2, 1, 1, 1, 1 }, tb.Sigmas.shape);
        // Latents are normalised with the folder's VAE constants.
        var expectLat = model.Vae.Normalize(raw.VaeLatent!.narrow(2, 0, 2)).permute(0, 2, 1, 3, 4);
        Assert.True(tb.Latents.allclose(expectLat, 1e-6, 1e-6));
        // x_t = (1 - sigma) x0 + sigma eps, with t on the training grid and sigma its grid sigma.
        var x0 = tb.Latents.permute(0, 2, 1, 3, 4);
        Assert.True(tb.NoisyModelInput.allclose((1 - tb.Sigmas) * x0 + tb.Sigmas * tb.Noise, 1e-5, 1e-5));
        foreach (var t in tb.Timesteps.data<float>().ToArray()) Assert.Contains(t, model.NoiseScheduler.TrainTimesteps);
        // Draw order: noise first, then u, from the given generator.
        using var g2 = new Generator(42, device("cpu"));
        var eps = randn([2, 4, 2, 8, 8], generator: g2);
        Assert.True(tb.Noise.allclose(eps));
        var u = rand([2], generator: g2).data<float>().ToArray();
        Assert.Equal(model.NoiseScheduler.TrainTimesteps[(int)Math.Floor(u[0] * 1000)], tb.Timesteps[0].item<float>());
    }

    [Fact]
    public void SameSeedGivesTheSameBatch()
    {
        using var model = Build();
        using var raw = Batch();
        using var g1 = new Generator(3, device("cpu"));
        using var g2 = new Generator(3, device("cpu"));
        using var a = model.PrepareBatch(raw, g1);
        using var b = model.PrepareBatch(raw, g2);
        Assert.True(a.NoisyModelInput.allclose(b.NoisyModelInput, 0, 0));
        Assert.True(a.Timesteps.allclose(b.Timesteps, 0, 0));
    }

    [Fact]
    public void ZerosSourceUsesTheConfiguredShape()
    {
        using var model = Build();
        using var raw = Batch();
        using var gen = new Generator(1, device("cpu"));
        using var tb = model.PrepareBatch(raw, gen, LatentsSource.Zeros);
        Assert.Equal(new long[] { 2, 2, 4, 8, 8 }, tb.Latents.shape); // 64 px / 8
        // Normalised zeros are -mean/std per channel.
        Assert.Equal(-model.Vae.LatentsMean![1] / model.Vae.LatentsStd![1], tb.Latents[0, 0, 1, 0, 0].item<float>(), 5);

        var run = Run() with { Training = new TrainingConfig() };
        using var bare = (WanModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
        var e = Assert.Throws<UserError>(() => bare.PrepareBatch(raw, gen, LatentsSource.Zeros));
        Assert.Contains("training.data.num_latent_t", e.Message);
    }

    [Fact]
    public void PredictNoiseIsTheTransformerOnPermutedLatentsAndPredictX0Converts()
    {
        using var model = Build(new RoleConfig { InitFrom = ModelDir, Trainable = false });
        using var raw = Batch();
        using var gen = new Generator(9, device("cpu"));
        using var tb = model.PrepareBatch(raw, gen);
        using var _ = no_grad();
        var xt = tb.NoisyModelInput.permute(0, 2, 1, 3, 4);
        var t = tensor(new[] { 750f });
        var v = model.PredictNoise(xt, t, tb, conditional: true);
        var direct = model.WanTransformer.Forward(tb.NoisyModelInput, full([2], 750f), tb.Conditional.TextEmbedding()).permute(0, 2, 1, 3, 4);
        Assert.True(v.allclose(direct, 1e-6, 1e-6));
        var sigma = model.NoiseScheduler.TrainSigmas[Array.IndexOf(model.NoiseScheduler.TrainTimesteps, 750f) is var i and >= 0 ? i : 500];
        var x0 = model.PredictX0(xt, t, tb, conditional: true);
        Assert.True(x0.allclose(xt - sigma * v, 1e-5, 1e-5));
        // vsa runs dense until sparse attention exists.
        Assert.True(model.PredictNoise(xt, t, tb, true, attnKind: AttnKind.Vsa).allclose(v));
    }

    [Fact]
    public void CfgUncondPolicies()
    {
        using var raw = Batch();
        using var gen = new Generator(9, device("cpu"));
        using var noNeg = Build(new RoleConfig { InitFrom = ModelDir, Trainable = false });
        using var tb = noNeg.PrepareBatch(raw, gen);
        var xt = tb.NoisyModelInput.permute(0, 2, 1, 3, 4);
        var t = tensor(new[] { 500f });
        using var _ = no_grad();
        var missing = Assert.Throws<UserError>(() => noNeg.PredictNoise(xt, t, tb, conditional: false));
        Assert.Contains("negative_prompt_embeds", missing.Message);
        var cond = noNeg.PredictNoise(xt, t, tb, true);
        var keep = noNeg.PredictNoise(xt, t, tb, false, CfgUncondPolicy.Parse(new Dictionary<string, object?> { ["text"] = "keep" }));
        Assert.True(keep.allclose(cond));
        var zero = noNeg.PredictNoise(xt, t, tb, false, CfgUncondPolicy.Parse(new Dictionary<string, object?> { ["text"] = "zero" }));
        var zeroDirect = noNeg.WanTransformer.Forward(tb.NoisyModelInput, full([2], 500f), zeros_like(tb.Conditional.TextEmbedding())).permute(0, 2, 1, 3, 4);
        Assert.True(zero.allclose(zeroDirect, 1e-6, 1e-6));
        var drop = Assert.Throws<UserError>(() => noNeg.PredictNoise(xt, t, tb, false, CfgUncondPolicy.Parse(new Dictionary<string, object?> { ["text"] = "drop" })));
        Assert.Contains("drop", drop.Message);
        var image = Assert.Throws<UserError>(() => noNeg.PredictNoise(xt, t, tb, false, CfgUncondPolicy.Parse(new Dictionary<string, object?> { ["text"] = "keep", ["image"] = "zero" })));
        Assert.Contains("method.cfg_uncond.image", image.Message);
        noNeg.PredictNoise(xt, t, tb, false, CfgUncondPolicy.Parse(new Dictionary<string, object?> { ["text"] = "keep", ["image"] = "zero", ["on_missing"] = "ignore" })).Dispose();
        Assert.Contains("method.cfg_uncond.on_missing", Assert.Throws<UserError>(() => CfgUncondPolicy.Parse(new Dictionary<string, object?> { ["on_missing"] = "maybe" })).Message);
        Assert.Contains("method.cfg_uncond.text", Assert.Throws<UserError>(() => CfgUncondPolicy.Parse(new Dictionary<string, object?> { ["text"] = "blank" })).Message);

        // With negative embeddings from the role: padded to the batch's text length and used by default.
        using var withNeg = Build(new RoleConfig { InitFrom = ModelDir, Trainable = false, NegativePromptEmbeds = NegativeFile(5) });
        using var gen2 = new Generator(9, device("cpu"));
        using var tb2 = withNeg.PrepareBatch(raw, gen2);
        Assert.Equal(new long[] { 2, 7, 24 }, tb2.Unconditional!.TextEmbedding().shape);
        Assert.Equal(0f, tb2.Unconditional.TextEmbedding()[0, 6].abs().sum().item<float>());
        var unc = withNeg.PredictNoise(xt, t, tb2, false);
        Assert.False(unc.allclose(cond, 1e-3, 1e-3));
    }

    [Fact]
    public void BackwardScalesByAccumulationRounds()
    {
        using var model = Build();
        using var raw = Batch();
        Tensor Grad(int rounds)
        {
            foreach (var p in model.TrainableParameters()) p.grad?.zero_();
            using var gen = new Generator(9, device("cpu"));
            using var tb = model.PrepareBatch(raw, gen);
            var v = model.PredictNoise(tb.NoisyModelInput.permute(0, 2, 1, 3, 4), tb.Timesteps, tb, true);
            var loss = v.pow(2).mean();
            model.Backward(loss, null, rounds);
            return model.WanTransformer.proj_out.weight!.grad!.clone();
        }
        var g1 = Grad(1);
        var g4 = Grad(4);
        Assert.True(g1.abs().sum().item<float>() > 0);
        Assert.True((g1 / 4).allclose(g4, 1e-6, 1e-7));
    }

    [Fact]
    public void TrainableFlagControlsGradientsAndMode()
    {
        using var frozen = Build(new RoleConfig { InitFrom = ModelDir, Trainable = false });
        Assert.Empty(frozen.TrainableParameters());
        Assert.False(frozen.Transformer.training);
        using var trainable = Build();
        Assert.Equal(69, trainable.TrainableParameters().Count()); // 2 layers: 15 + 27 x 2
        Assert.True(trainable.Transformer.training);
    }

    [Fact]
    public void TransformerOverrideSafetensorReplacesWeightsUnlessDisabled()
    {
        var dir = TestPaths.TempDir("override");
        var path = Path.Combine(dir, "override.safetensors");
        using (var m = WanTransformer3DModel.FromPretrained(ModelDir))
        {
            using (no_grad()) m.proj_out.bias!.fill_(0.5f);
            StateDict.SaveModule(m, path);
        }
        using var over = Build(new RoleConfig { InitFrom = ModelDir, TransformerOverrideSafetensor = path });
        Assert.Equal(0.5f, over.WanTransformer.proj_out.bias![0].item<float>());
        using var disabled = Build(new RoleConfig { InitFrom = ModelDir, TransformerOverrideSafetensor = path, DisableCustomInitWeights = true });
        Assert.NotEqual(0.5f, disabled.WanTransformer.proj_out.bias![0].item<float>());
        var e = Assert.Throws<UserError>(() => Build(new RoleConfig { InitFrom = ModelDir, TransformerOverrideSafetensor = Path.Combine(dir, "nope.safetensors") }));
        Assert.Contains("nope.safetensors", e.Message);
    }

    [Fact]
    public void StudentTimestepShiftFollowsThePipelineAfterInitPreprocessors()
    {
        using var model = Build(new RoleConfig { InitFrom = ModelDir, FlowShift = 5.0 }, new PipelineConfig { FlowShift = 8.0 });
        Assert.Equal(5.0, model.NoiseScheduler.Shift);
        using var t = tensor(new[] { 500f, 2000f });
        Assert.Equal(1000 * 5 * 0.5 / (1 + 4 * 0.5), model.ShiftAndClampTimestep(t)[0].item<float>(), 2);
        model.InitPreprocessors();
        var shifted = model.ShiftAndClampTimestep(t).data<float>().ToArray();
        Assert.Equal(1000 * 8 * 0.5 / (1 + 7 * 0.5), shifted[0], 2);
        Assert.Equal(1000f, shifted[1]); // clamped
        Assert.Equal(5.0, model.NoiseScheduler.Shift); // the grid keeps the role's own shift
    }

    [Fact]
    public void RegistryResolvesFamiliesAndAcceptsUserFamilies()
    {
        var registry = ModelFamilyRegistry.CreateBuiltIn();
        Assert.Contains("wan", registry.FamilyNames);
        var e = Assert.Throws<UserError>(() => registry.Get("wann"));
        Assert.Contains("wan", e.Message);
        // A copy declares its own class paths (none here): the registry refuses a class path declared twice.
        registry.Register(WanModel.Family with { Name = "my_wan", Description = "user family", ClassPaths = [] });
        Assert.Contains("my_wan", registry.FamilyNames);
        var run = Run();
        using var m = registry.Create("student", new RoleConfig { InitFrom = ModelDir, Family = "my_wan" }, run);
        Assert.Equal("my_wan", m.Context.Family.Name);
        Assert.Throws<ArgumentException>(() => registry.Register(WanModel.Family));
        var options = ModelFamilyRegistry.DescribeOptions(typeof(RoleConfig)).Select(o => o.Key).ToList();
        Assert.Contains("transformer_override_safetensor", options);
        Assert.Contains("negative_prompt_embeds", options);
    }
}

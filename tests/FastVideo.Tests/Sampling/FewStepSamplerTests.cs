using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Sampling;
using FastVideo.Tests.Train;
using FastVideo.Train.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Sampling;

public class FewStepSamplerTests
{
    // x_t = (1 - t/1000) x0 + (t/1000) eps, as a plugin's AddNoise is for the unshifted grid.
    private static Tensor LinearAddNoise(Tensor clean, Tensor noise, Tensor t)
    {
        var s = (t.to(ScalarType.Float32) / 1000).reshape(-1, 1, 1, 1, 1);
        return (1 - s) * clean + s * noise;
    }

    [Fact]
    public void FollowsTheDmdRecurrenceWithDrawsFromTheGenerator()
    {
        using var g0 = new Generator(1, device("cpu"));
        var x = randn([2, 3, 4, 5, 6], generator: g0);
        var seen = new List<float>();
        // A toy x0 model that depends on x and t.
        X0Model model = (lat, t) => { seen.Add(t[0].item<float>()); return 0.5 * lat + t.reshape(-1, 1, 1, 1, 1) / 1000; };
        using var g = new Generator(9, device("cpu"));
        var result = FewStepSampler.Sample(model, LinearAddNoise, x, [1000, 600, 200], FewStepSampler.StandardNoise(g));
        Assert.Equal(new float[] { 1000, 600, 200 }, seen);

        // The same recurrence by hand: x0_i = f(x_i, t_i); x_{i+1} = add_noise(x0_i, eps_i, t_{i+1}); result = x0_2.
        using var gr = new Generator(9, device("cpu"));
        Tensor F(Tensor lat, float t) => 0.5 * lat + t / 1000;
        var a = F(x, 1000);
        a = F(LinearAddNoise(a, randn(x.shape, generator: gr), tensor(new float[] { 600, 600 })), 600);
        a = F(LinearAddNoise(a, randn(x.shape, generator: gr), tensor(new float[] { 200, 200 })), 200);
        Assert.True(result.allclose(a, 1e-6, 1e-6));
        Assert.True(x.eq(randn([2, 3, 4, 5, 6], generator: new Generator(1, device("cpu")))).all().item<bool>()); // input untouched
    }

    [Theory]
    [InlineData(new double[0], "at least one")]
    [InlineData(new double[] { 500, 750 }, "strictly descending")]
    [InlineData(new double[] { 750, 750 }, "strictly descending")]
    [InlineData(new double[] { 1001, 500 }, "outside (0, 1000]")]
    [InlineData(new double[] { 500, 0 }, "outside (0, 1000]")]
    public void RejectsBadTimesteps(double[] timesteps, string message)
    {
        var e = Assert.Throws<UserError>(() => FewStepSampler.Validate(timesteps, what: "ts"));
        Assert.Contains(message, e.Message);
        Assert.StartsWith("ts", e.Message);
    }

    private static (ModelBase Model, TrainingBatch Batch) TinyModel(bool withNegative = false)
    {
        var model = WanModelTests.Build(withNegative ? new RoleConfig { InitFrom = TestPaths.Fixture("wan_tiny"), NegativePromptEmbeds = NegativeFile() } : null);
        using var raw = WanModelTests.Batch(b: 2, t: 2);
        using var g = new Generator(3, device("cpu"));
        return (model, model.PrepareBatch(raw, g));
    }

    private static string NegativeFile()
    {
        var path = Path.Combine(TestPaths.TempDir("neg"), "neg.safetensors");
        using var g = new Generator(5, device("cpu"));
        FastVideo.Weights.SafeTensors.Save(path, [new("negative_prompt_embeds", randn([1, 7, 24], generator: g))]);
        return path;
    }

    private static Tensor Noise(ulong seed) => ModelSampling.Noise([2, 2, 4, 8, 8], new Generator(seed, device("cpu")), ScalarType.Float32, device("cpu"));

    [Fact]
    public void OneStepIsTheModelsX0PredictionFromPureNoise()
    {
        var (model, batch) = TinyModel();
        using var _m = model; using var _b = batch; using var ng = no_grad();
        var noise = Noise(4);
        using var g = new Generator(5, device("cpu"));
        var x0 = ModelSampling.FewStep(model, batch, noise, [1000], g);
        var expect = model.PredictX0(noise, tensor(new float[] { 1000, 1000 }), batch, conditional: true);
        Assert.True(x0.eq(expect).all().item<bool>());
    }

    [Fact]
    public void FewStepIsDeterministicForASeedAndUsesTheModelsAddNoise()
    {
        var (model, batch) = TinyModel();
        using var _m = model; using var _b = batch; using var ng = no_grad();
        int[] ts = [1000, 750, 500, 250];
        Tensor Run(ulong seed) => ModelSampling.FewStep(model, batch, Noise(seed), ts.Select(t => (double)t).ToList(), new Generator(seed, device("cpu")));
        var a = Run(1);
        Assert.True(a.eq(Run(1)).all().item<bool>());
        Assert.False(a.allclose(Run(2)));
        Assert.Equal(new long[] { 2, 2, 4, 8, 8 }, a.shape);

        // Two steps by hand with the plugin's primitives.
        var noise = Noise(7);
        using var g = new Generator(8, device("cpu"));
        var two = ModelSampling.FewStep(model, batch, noise, [1000, 500], g);
        using var gr = new Generator(8, device("cpu"));
        var t0 = tensor(new float[] { 1000, 1000 });
        var t1 = tensor(new float[] { 500, 500 });
        var x0 = model.PredictX0(noise, t0, batch, true);
        var x1 = model.AddNoise(x0, randn(x0.shape, generator: gr), t1);
        Assert.True(two.allclose(model.PredictX0(x1, t1, batch, true), 1e-6, 1e-6));
    }

    [Fact]
    public void FewStepGuidanceCombinesConditionalAndNegativePredictions()
    {
        var (model, batch) = TinyModel(withNegative: true);
        using var _m = model; using var _b = batch; using var ng = no_grad();
        var noise = Noise(4);
        var x0 = ModelSampling.FewStep(model, batch, noise, [1000], new Generator(1, device("cpu")), guidanceScale: 3.0);
        var t = tensor(new float[] { 1000, 1000 });
        var c = model.PredictX0(noise, t, batch, true);
        var u = model.PredictX0(noise, t, batch, false);
        Assert.True(x0.allclose(u + 3.0 * (c - u), 1e-5, 1e-5));
        Assert.False(x0.allclose(c, 1e-3, 1e-3));
    }

    [Fact]
    public void EulerThroughTheModelEqualsTheSamplerOnTheRawTransformer()
    {
        var (model, batch) = TinyModel(withNegative: true);
        using var _m = model; using var _b = batch; using var ng = no_grad();
        var wan = (FastVideo.Train.Models.Wan.WanModel)model;
        var noise = Noise(4);
        var options = new SamplingOptions(3, 2.5, model.NoiseScheduler.Shift);
        var viaModel = ModelSampling.Euler(model, batch, noise, options);

        // The reference: FlowMatchSampler on BCTHW with the transformer and explicit conditional/negative text.
        VelocityModel raw = (x, t, conditional) => wan.WanTransformer.Forward(x, t,
            conditional ? batch.Conditional.TextEmbedding() : batch.Unconditional!.TextEmbedding());
        var expect = FlowMatchSampler.Sample(raw, noise.permute(0, 2, 1, 3, 4), options).permute(0, 2, 1, 3, 4);
        Assert.Equal(new long[] { 2, 2, 4, 8, 8 }, viaModel.shape);
        Assert.True(viaModel.allclose(expect, 1e-6, 1e-6));
    }

    [Fact]
    public void EulerGuidanceWithoutNegativeConditioningNamesTheFix()
    {
        var (model, batch) = TinyModel();
        using var _m = model; using var _b = batch; using var ng = no_grad();
        var e = Assert.Throws<UserError>(() => ModelSampling.Euler(model, batch, Noise(1), new SamplingOptions(2, 2.0, 3.0)));
        Assert.Contains("negative_prompt_embeds", e.Message);
        // cfg_uncond text=zero needs no negative prompt.
        var zero = CfgUncondPolicy.Parse(new Dictionary<string, object?> { ["text"] = "zero" });
        Assert.Equal(new long[] { 2, 2, 4, 8, 8 }, ModelSampling.Euler(model, batch, Noise(1), new SamplingOptions(2, 2.0, 3.0), zero).shape);
    }
}

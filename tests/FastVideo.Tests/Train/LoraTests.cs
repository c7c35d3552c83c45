using FastVideo.Cli.Commands;
using FastVideo.Configs;
using FastVideo.Models.Dits;
using FastVideo.Models.Layers;
using FastVideo.Train;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Checkpointing;
using FastVideo.Train.Export;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.DistributionMatching;
using FastVideo.Train.Models;
using FastVideo.Train.Tracking;
using FastVideo.Weights;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>LoRA per role: options, the layer math, training only adapters, checkpoints, resume, export, DMD2.</summary>
public class LoraTests
{
    private static readonly string Tiny = TestPaths.Fixture("wan_tiny");

    /// <summary>Self- and cross-attention and both feed-forward linears; alpha != rank so a lost scale shows.</summary>
    internal static LoraOptions Lora(int rank = 4, int? alpha = 8, IReadOnlyList<string>? targets = null) => new()
    {
        Enable = true, Rank = rank, Alpha = alpha, TargetModules = targets ?? ["to_q", "to_k", "to_v", "to_out", "ffn"],
    };

    /// <summary>The finetune fixture with a LoRA student; Raw is the recipe as the loader writes it (export reads it back).</summary>
    internal static RunConfig FinetuneConfig(string dir, int maxSteps = 3, int accum = 1, int saveSteps = 0, LoraOptions? lora = null,
        IEnumerable<KeyValuePair<string, object>>? callbacks = null, string precision = "fp32")
    {
        var cfg = TrainFixture.Config(dir, maxSteps: maxSteps, accum: accum, saveSteps: saveSteps, scheduler: "cosine", warmup: 1, callbacks: callbacks);
        cfg = cfg with
        {
            Roles = new Dictionary<string, RoleConfig> { ["student"] = new RoleConfig { Family = "wan", InitFrom = Tiny, Lora = lora ?? Lora() } },
            Training = cfg.Training with { DitPrecision = precision },
        };
        return cfg with { Raw = RecipeTree.ToPlain(cfg) };
    }

    private static Dictionary<string, Tensor> Snapshot(nn.Module m) =>
        m.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone(), StringComparer.Ordinal);

    private static bool Same(Tensor a, Tensor b) => a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.equal(b).all().item<bool>();

    /// <summary>Deterministic inputs for the tiny Wan transformer: latents [1,4,2,8,8], timestep [1], text [1,7,24].</summary>
    private static (Tensor X, Tensor T, Tensor Text) Inputs()
    {
        using var g = new Generator(99, device("cpu"));
        return (randn([1, 4, 2, 8, 8], generator: g), tensor(new float[] { 600f }), randn([1, 7, 24], generator: g));
    }

    private static Tensor Forward(WanTransformerBase m)
    {
        var (x, t, text) = Inputs();
        using var noGrad = no_grad();
        return m.Forward(x, t, text).to_type(ScalarType.Float32);
    }

    // ---------------------------------------------------------------- options

    [Fact]
    public void RecipeKeysAreUpstreamsWithUpstreamsDefaultsAndMistakesAreRefused()
    {
        var cfg = FastVideo.Tests.Configs.RecipeTestSupport.Load("""
            recipe: {family: wan}
            roles:
              student:
                init_from: Org/Model
                lora: {enable: true, rank: 16, alpha: 32, target_modules: [to_q, to_k, to_v, to_out]}
              critic:
                init_from: Org/Model
                lora: {enable: true, rank: 8}
              teacher: {init_from: Org/Model, trainable: false}
            """);
        var s = cfg.Roles["student"].Lora;
        Assert.Equal((true, 16, 32, 2.0), (s.Enable, s.Rank, s.EffectiveAlpha, s.Scale));
        Assert.Equal(["to_q", "to_k", "to_v", "to_out"], s.EffectiveTargetModules);
        var c = cfg.Roles["critic"].Lora;
        Assert.Equal(8, c.EffectiveAlpha);   // alpha defaults to rank (scale 1)
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj", "to_q", "to_k", "to_v", "to_out", "to_qkv", "to_gate_compress"], c.EffectiveTargetModules);
        Assert.False(cfg.Roles["teacher"].Lora.Enable);
        // The printed recipe round-trips the block.
        var printed = RecipePrinter.ToYaml(cfg.Raw);
        Assert.Contains("target_modules:", printed);
        var reloaded = FastVideo.Tests.Configs.RecipeTestSupport.Load(printed).Roles["student"].Lora;
        Assert.Equal((s.Enable, s.Rank, s.Alpha), (reloaded.Enable, reloaded.Rank, reloaded.Alpha));
        Assert.Equal(s.TargetModules, reloaded.TargetModules);

        const string roleOnly = "recipe: {family: wan}\nroles:\n  student:\n    init_from: Org/Model\n    lora: ";
        Assert.Contains("roles.student.lora.rank: required when lora.enable is true", Fail(roleOnly + "{enable: true}").Message);
        Assert.Contains("roles.student.lora.rank", Fail(roleOnly + "{enable: true, rank: 0}").Message);
        Assert.Contains("roles.student.lora.alpha", Fail(roleOnly + "{enable: true, rank: 4, alpha: 0}").Message);
        Assert.Contains("roles.student.lora.target_modules", Fail(roleOnly + "{enable: true, rank: 4, target_modules: []}").Message);
        // Upstream has no dropout (PEFT's lora_dropout): an unknown key, not a silently ignored one.
        Assert.Contains("roles.student.lora.dropout: unknown key", Fail(roleOnly + "{enable: true, rank: 4, dropout: 0.1}").Message);
        Assert.Contains("expected an integer", Fail(roleOnly + "{enable: true, rank: 4, alpha: 0.5}").Message);
        Assert.Contains("roles.student.lora.enable: LoRA training requires trainable: true",
            Fail("recipe: {family: wan}\nroles:\n  student:\n    init_from: Org/Model\n    trainable: false\n    lora: {enable: true, rank: 4}").Message);
        // Configured but off is valid, as upstream.
        Assert.False(FastVideo.Tests.Configs.RecipeTestSupport.Load(roleOnly + "{enable: false, rank: 4}").Roles["student"].Lora.Enable);

        static RecipeError Fail(string yaml) => FastVideo.Tests.Configs.RecipeTestSupport.Fail(yaml);
    }

    [Fact]
    public void FamiliesListTheLoraOptions()
    {
        var sw = new StringWriter();
        FamiliesCommand.Run(ModelFamilyRegistry.Default, sw);
        var text = sw.ToString();
        foreach (var key in new[] { "lora.enable", "lora.rank", "lora.alpha", "lora.target_modules" })
            Assert.Contains($"    {key} ", text);
        Assert.DoesNotContain("LoraOptions {", text);
    }

    // ---------------------------------------------------------------- the layer

    [Fact]
    public void MergedWeightIsBasePlusScaledBAAndTheForwardMatchesIt()
    {
        using var layer = new LoraLinear(6, 5);
        using var g = new Generator(3, device("cpu"));
        var a = randn([3, 6], generator: g);
        var b = randn([5, 3], generator: g);
        layer.SetAdapter(a, b, alpha: 6, trainable: true);   // scale 2
        Assert.Equal(["bias", "weight", "lora_A.weight", "lora_B.weight"], layer.state_dict().Keys.Order(StringComparer.Ordinal).OrderBy(k => k.Contains("lora")).ToArray());

        // base + (alpha/rank)·B·A in float64 as the reference.
        var expected = layer.weight.detach().to_type(ScalarType.Float64) + 2.0 * b.to_type(ScalarType.Float64).matmul(a.to_type(ScalarType.Float64));
        using var merged = layer.MergedWeight();
        Assert.True(merged.to_type(ScalarType.Float64).allclose(expected, rtol: 0, atol: 1e-5), "merged weight != W + (alpha/rank) B A");
        var x = randn([4, 6], generator: g);
        using var noGrad = no_grad();
        var y = layer.forward(x);
        Assert.True(y.allclose(nn.functional.linear(x, merged, layer.bias), rtol: 0, atol: 1e-5));
        Assert.False(y.allclose(nn.functional.linear(x, layer.weight, layer.bias), rtol: 0, atol: 1e-3), "the adapter changes nothing");
    }

    [Fact]
    public void FileLevelMergeTakesTheBaseAsTheModelHeldItAndChecksTheAdapters()
    {
        using var g = new Generator(4, device("cpu"));
        var w = randn([5, 6], generator: g);
        var norm = randn([6], generator: g);
        var a = randn([2, 6], generator: g);
        var b = randn([5, 2], generator: g);
        var baseWeights = new Dictionary<string, Tensor> { ["l.weight"] = w, ["n.weight"] = norm };
        var adapters = new Dictionary<string, Tensor> { ["l.lora_A.weight"] = a, ["l.lora_B.weight"] = b };
        // A bf16-held base: the merge starts from bf16(W) as the trained model did, and keeps float32 so B A survives.
        var merged = LoraAdapters.Merge(baseWeights, adapters, 1.5, ScalarType.BFloat16, "test");
        Assert.All(merged.Values, t => Assert.Equal(ScalarType.Float32, t.dtype));
        Assert.True(Same(norm.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32), merged["n.weight"]));
        var expected = w.to_type(ScalarType.BFloat16).to_type(ScalarType.Float64) + 1.5 * b.to_type(ScalarType.Float64).matmul(a.to_type(ScalarType.Float64));
        Assert.True(merged["l.weight"].to_type(ScalarType.Float64).allclose(expected, rtol: 0, atol: 1e-5));
        // The same number as the layer computes.
        using var layer = new LoraLinear(6, 5);
        using (no_grad()) layer.weight.copy_(w.to_type(ScalarType.BFloat16));
        layer.SetAdapter(a, b, alpha: 3, trainable: false);
        using var fromLayer = layer.MergedWeight();
        Assert.True(Same(fromLayer, merged["l.weight"]));

        Assert.Contains("no base weight 'x.weight'", Assert.Throws<UserError>(() => LoraAdapters.Merge(baseWeights,
            new Dictionary<string, Tensor> { ["x.lora_A.weight"] = a, ["x.lora_B.weight"] = b }, 1, ScalarType.Float32, "test")).Message);
        Assert.Contains("only one of", Assert.Throws<UserError>(() => LoraAdapters.Merge(baseWeights,
            new Dictionary<string, Tensor> { ["l.lora_A.weight"] = a }, 1, ScalarType.Float32, "test")).Message);
        Assert.Contains("does not fit", Assert.Throws<UserError>(() => LoraAdapters.Merge(baseWeights,
            new Dictionary<string, Tensor> { ["l.lora_A.weight"] = randn(2, 7), ["l.lora_B.weight"] = b }, 1, ScalarType.Float32, "test")).Message);
    }

    [Fact]
    public void AdaptersStartAtTheBaseModelFromASeededGeneratorNotTheGlobalRng()
    {
        var cfg = FinetuneConfig(TestPaths.TempDir("lora-init"));
        using var plain = WanTransformer3DModel.FromPretrained(Tiny);
        manual_seed(1);
        using var m1 = (FastVideo.Train.Models.Wan.WanModel)ModelFamilyRegistry.Default.Create("student", cfg.Roles["student"], cfg);
        manual_seed(2);
        using var m2 = (FastVideo.Train.Models.Wan.WanModel)ModelFamilyRegistry.Default.Create("student", cfg.Roles["student"], cfg);
        using var critic = (FastVideo.Train.Models.Wan.WanModel)ModelFamilyRegistry.Default.Create("critic", cfg.Roles["student"], cfg);

        // 2 blocks x (attn1, attn2) x (to_q, to_k, to_v, to_out.0) + 2 x (net.0.proj, net.2).
        Assert.Equal(20, m1.LoraLayers.Count);
        Assert.Contains("blocks.1.attn2.to_out.0", m1.LoraLayers);
        Assert.Contains("blocks.0.ffn.net.0.proj", m1.LoraLayers);
        var trainable = m1.Transformer.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();
        Assert.Equal(40, trainable.Count);
        Assert.All(trainable, n => Assert.True(n.EndsWith(".lora_A.weight") || n.EndsWith(".lora_B.weight"), n));
        var a = m1.Transformer.state_dict()["blocks.0.attn1.to_q.lora_A.weight"];
        Assert.Equal(new long[] { 4, 32 }, a.shape);
        Assert.Equal(ScalarType.Float32, a.dtype);
        Assert.True(a.abs().max().item<float>() <= 1 / Math.Sqrt(32) + 1e-7);   // U(±1/sqrt(in))
        Assert.True(a.std().item<float>() > 0.05);
        Assert.Equal(0f, m1.Transformer.state_dict()["blocks.0.attn1.to_q.lora_B.weight"].abs().sum().item<float>());

        // Same role, same seed -> the same A whatever the global RNG; another role -> another A.
        foreach (var (k, v) in m1.Transformer.state_dict()) Assert.True(Same(v, m2.Transformer.state_dict()[k]), k);
        Assert.False(Same(a, critic.Transformer.state_dict()["blocks.0.attn1.to_q.lora_A.weight"]));
        // B = 0: the model starts exactly at the base model.
        Assert.True(Same(Forward(plain), Forward(m1.WanTransformer)));
    }

    [Fact]
    public void TargetsMustMatchLoraCapableLayers()
    {
        var dir = TestPaths.TempDir("lora-targets");
        var e = Assert.Throws<UserError>(() => TrainingBuilder.Build(FinetuneConfig(dir, lora: Lora(targets: ["to_q", "to_qq"]))));
        Assert.Contains("roles.student.lora.target_modules: 'to_qq' matches no LoRA-capable layer", e.Message);
        Assert.Contains("blocks.N.attn1.to_q", e.Message);
        // The condition embedder takes no LoRA (upstream excludes Wan's "embedder" layers).
        Assert.Contains("'time_proj' matches no LoRA-capable layer", Assert.Throws<UserError>(() => TrainingBuilder.Build(FinetuneConfig(dir, lora: Lora(targets: ["time_proj"])))).Message);
        // Upstream's default list: the names Wan has (to_q, to_k, to_v, to_out) in both attentions, the others skipped.
        using var m = TrainingBuilder.Build(FinetuneConfig(dir, lora: Lora(targets: null) with { TargetModules = null }));
        Assert.Equal(16, m.Student.LoraLayers.Count);
        Assert.DoesNotContain(m.Student.LoraLayers, l => l.Contains("ffn"));
        using var all = TrainingBuilder.Build(FinetuneConfig(dir, lora: Lora(targets: ["proj_out"])));
        Assert.Equal(["proj_out"], all.Student.LoraLayers);
    }

    // ---------------------------------------------------------------- training, checkpoints, resume

    [Fact]
    public void FinetuneTrainsOnlyTheAdaptersAndCheckpointsHoldOnlyThem()
    {
        var dir = TestPaths.TempDir("lora-ft");
        using var method = TrainingBuilder.Build(FinetuneConfig(dir, maxSteps: 3, saveSteps: 3));
        var before = Snapshot(method.Student.Transformer);
        using var trainer = new Trainer(method, new RandomBatchSource(), trackers: [], console: TextWriter.Null);
        trainer.Run();
        var after = method.Student.Transformer.state_dict();
        foreach (var (k, v) in before)
        {
            bool adapter = k.Contains(".lora_");
            if (!adapter) Assert.True(Same(v, after[k]), $"frozen base weight changed: {k}");
        }
        Assert.True(after["blocks.0.attn1.to_q.lora_B.weight"].abs().sum().item<float>() > 0, "B did not train");
        Assert.False(Same(before["blocks.1.ffn.net.2.lora_A.weight"], after["blocks.1.ffn.net.2.lora_A.weight"]), "A did not train");

        var ckpt = CheckpointManager.PathFor(dir, 3);
        Assert.False(File.Exists(CheckpointManager.RoleWeightsPath(ckpt, "student")));
        var saved = SafeTensors.ReadHeader(CheckpointManager.RoleAdapterPath(ckpt, "student"));
        Assert.Equal(method.Student.TrainableParameters().Count(), saved.Count);
        Assert.Equal(40, saved.Count);
        Assert.All(saved.Keys, k => Assert.Matches(@"\.lora_[AB]\.weight$", k));
        Assert.Equal("8", SafeTensors.ReadMetadata(CheckpointManager.RoleAdapterPath(ckpt, "student"))["lora_alpha"]);
        Assert.Null(CheckpointManager.Problem(ckpt));
        // Optimizer state too holds the adapters only (no moments for frozen weights).
        var state = SafeTensors.ReadHeader(Path.Combine(ckpt, "training_state.safetensors"));
        Assert.DoesNotContain(state.Keys, k => k.Contains("to_q.weight") || k.Contains("norm"));
    }

    [Fact]
    public void LoraFinetuneWithAccumulationResumesBitForBit()
    {
        var callbacks = new[] { TrainFixture.Callback("grad_clip", ("max_grad_norm", 0.05)), TrainFixture.Callback("ema", ("decay", 0.9)) };
        var a = RunOnce(FinetuneConfig(TestPaths.TempDir("lora-straight"), maxSteps: 4, accum: 2, saveSteps: 2, callbacks: callbacks), null);
        var dir = TestPaths.TempDir("lora-resume");
        var first = FinetuneConfig(dir, maxSteps: 4, accum: 2, saveSteps: 2, callbacks: callbacks);
        var b1 = RunOnce(first, 2);
        Assert.Equal([2], CheckpointManager.List(dir).Select(c => c.Step));
        var second = first with { Training = first.Training with { Checkpoint = first.Training.Checkpoint with { ResumeFromCheckpoint = "latest" } } };
        var b2 = RunOnce(second, null);

        var losses = b1.Losses.Concat(b2.Losses).ToList();
        Assert.Equal(4, losses.Count);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(BitConverter.DoubleToInt64Bits(a.Losses[i].Loss), BitConverter.DoubleToInt64Bits(losses[i].Loss));
            Assert.Equal(BitConverter.DoubleToInt64Bits(a.Losses[i].GradNorm), BitConverter.DoubleToInt64Bits(losses[i].GradNorm));
        }
        Assert.Equal(a.Weights.Keys.Order(), b2.Weights.Keys.Order());
        foreach (var (name, w) in a.Weights) Assert.True(Same(w, b2.Weights[name]), $"weights differ: {name}");
        Assert.Equal(40, a.Ema.Count);   // EMA tracks the adapters
        foreach (var (name, e) in a.Ema) Assert.True(Same(e, b2.Ema[name]), $"EMA differs: {name}");
        Assert.NotEqual(a.Losses[2].Loss, a.Losses[3].Loss);

        // A checkpoint of adapters does not resume into a recipe without LoRA (nor with another alpha).
        var noLora = second with { Roles = new Dictionary<string, RoleConfig> { ["student"] = second.Roles["student"] with { Lora = new LoraOptions() } } };
        Assert.Contains("was trained with LoRA", Assert.Throws<UserError>(() => RunOnce(noLora, null)).Message);
        var otherAlpha = second with { Roles = new Dictionary<string, RoleConfig> { ["student"] = second.Roles["student"] with { Lora = Lora(alpha: 4) } } };
        Assert.Contains("lora.alpha 8", Assert.Throws<UserError>(() => RunOnce(otherAlpha, null)).Message);
    }

    private static (List<(double Loss, double GradNorm)> Losses, Dictionary<string, Tensor> Weights, Dictionary<string, Tensor> Ema) RunOnce(RunConfig cfg, int? stopAfter)
    {
        using var method = TrainingBuilder.Build(cfg);
        var memory = new MemoryTracker();
        using var trainer = new Trainer(method, new RandomBatchSource(), trackers: [memory], console: TextWriter.Null);
        trainer.Run(stopAfter);
        var ema = ((EmaCallback)trainer.Callbacks[1]).Shadow.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        return (memory.Entries.Select(e => (e.Metrics["total_loss"], e.Metrics["grad_norm/student"])).ToList(), Snapshot(method.Student.Transformer), ema);
    }

    [Fact]
    public void FrozenBaseHeldInBf16WithFloat32Adapters()
    {
        var dir = TestPaths.TempDir("lora-bf16");
        using var method = TrainingBuilder.Build(FinetuneConfig(dir, maxSteps: 2, precision: "bf16"));
        var state = method.Student.Transformer.state_dict();
        Assert.Equal(ScalarType.BFloat16, state["blocks.0.attn1.to_q.weight"].dtype);
        Assert.Equal(ScalarType.Float32, state["blocks.0.attn1.to_q.lora_A.weight"].dtype);
        var before = Snapshot(method.Student.Transformer);
        using var trainer = new Trainer(method, new RandomBatchSource(), trackers: [], console: TextWriter.Null);
        trainer.Run();
        var after = method.Student.Transformer.state_dict();
        foreach (var (k, v) in before)
            if (!k.Contains(".lora_")) Assert.True(Same(v, after[k]), k);
        Assert.True(after["blocks.0.attn1.to_q.lora_B.weight"].abs().sum().item<float>() > 0);
        // The plan counts float32 adapters for gradients and moments, the bf16 base for weights.
        var plan = TrainingPlan.Build(method).Roles.Single();
        long adapters = method.Student.TrainableParameters().Sum(p => p.numel());
        Assert.Equal(adapters, plan.TrainableParameters);
        Assert.Equal(4 * adapters, plan.GradBytes);
        Assert.Equal(8 * adapters, plan.OptimizerBytes);
        Assert.Equal(2 * (plan.Parameters - adapters) + 4 * adapters, plan.WeightBytes);
    }

    [Fact]
    public void CommandLineRecipeTrainsValidatesResumesAndExportsALoraRole()
    {
        var root = TestPaths.TempDir("lora-cli");
        var (data, model) = TrainFixture.SyntheticDataAndModel(root);
        var output = Path.Combine(root, "run");
        var recipe = Path.Combine(root, "recipe.yaml");
        File.WriteAllText(recipe, $"""
            recipe: {"{"}family: wan, method: finetune{"}"}
            roles:
              student:
                init_from: "{model}"
                lora: {"{"}enable: true, rank: 2, alpha: 4, target_modules: [to_q, to_v]{"}"}
            training:
              data: {"{"}data_path: "{data}", train_batch_size: 2, seed: 7{"}"}
              optimizer: {"{"}learning_rate: 1.0e-2{"}"}
              loop: {"{"}max_train_steps: 2, gradient_accumulation_steps: 2{"}"}
              checkpoint: {"{"}output_dir: "{output}", training_state_checkpointing_steps: 1{"}"}
            pipeline: {"{"}text_len: 6{"}"}
            callbacks:
              ema: {"{"}decay: 0.5{"}"}
              validation: {"{"}every_steps: 2, sampling_steps: [2], use_ema: true{"}"}
            """);
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        Assert.True(Cli.Cli.Run(["train", recipe, "--dry-run"], stdout, stderr) == 0, stderr.ToString());
        Assert.Matches(@"student\s+wan\s+yes\s+\S+\s+384\s", stdout.ToString());   // rank 2 x (24 + 24) x to_q, to_v of both attentions
        Assert.True(Cli.Cli.Run(["train", recipe], stdout, stderr) == 0, stderr.ToString() + stdout);
        Assert.True(File.Exists(CheckpointManager.RoleAdapterPath(CheckpointManager.PathFor(output, 2), "student")));
        Assert.True(Cli.Cli.Run(["train", recipe, "--set", "training.checkpoint.resume_from_checkpoint=latest", "--set", "training.loop.max_train_steps=3"],
            stdout, stderr) == 0, stderr.ToString() + stdout);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Length);

        var adapter = Path.Combine(root, "adapter");
        stdout = new StringWriter();
        Assert.True(Cli.Cli.Run(["export", output, "--role", "student", "--lora-format", "adapter", "--out", adapter], stdout, stderr) == 0, stderr.ToString());
        Assert.Contains("checkpoint-3", stdout.ToString());
        Assert.Equal(8, SafeTensors.ReadHeader(Path.Combine(adapter, LoraAdapters.DiffusersFileName)).Count);
        var merged = Path.Combine(root, "merged");
        Assert.True(Cli.Cli.Run(["export", output, "--role", "student", "--ema", "--out", merged], stdout, stderr) == 0, stderr.ToString());
        using var m = WanTransformer3DModel.FromPretrained(merged);
    }

    // ---------------------------------------------------------------- DMD2, plan

    private static RunConfig Dmd2Config(string dir, int maxSteps = 3, int saveSteps = 0)
    {
        var cfg = DMD2MethodTests.Config(dir, maxSteps: maxSteps, saveSteps: saveSteps, method: DMD2MethodTests.MethodOptions(interval: 2L));
        var roles = cfg.Roles.ToDictionary(kv => kv.Key, kv => kv.Key == "teacher" ? kv.Value : kv.Value with { Lora = Lora(rank: 2, alpha: 4) });
        return cfg with { Roles = roles };
    }

    [Fact]
    public void Dmd2WithLoraOnStudentAndCriticTrainsTheirAdapters()
    {
        var dir = TestPaths.TempDir("lora-dmd");
        using var method = TrainingBuilder.Build(Dmd2Config(dir, maxSteps: 4, saveSteps: 4));
        Assert.True(method.Roles["student"].IsLora && method.Roles["critic"].IsLora && !method.Roles["teacher"].IsLora);
        var before = method.Roles.ToDictionary(r => r.Key, r => Snapshot(r.Value.Transformer));
        var memory = new MemoryTracker();
        using var trainer = new Trainer(method, new RandomBatchSource(), trackers: [memory], console: TextWriter.Null);
        Assert.Equal(4, trainer.Run());
        Assert.All(memory.Entries, e => Assert.True(double.IsFinite(e.Metrics["fake_score_loss"])));
        Assert.True(memory.Entries[^1].Metrics["generator_loss"] > 0);
        foreach (var (role, snapshot) in before)
        {
            var now = method.Roles[role].Transformer.state_dict();
            foreach (var (k, v) in snapshot)
                if (!k.Contains(".lora_")) Assert.True(Same(v, now[k]), $"{role}: frozen weight changed: {k}");
            if (role != "teacher")
                Assert.True(now["blocks.0.attn1.to_q.lora_B.weight"].abs().sum().item<float>() > 0, $"{role}: adapters did not train");
        }
        var ckpt = CheckpointManager.PathFor(dir, 4);
        foreach (var role in new[] { "student", "critic" })
            Assert.Equal(40, SafeTensors.ReadHeader(CheckpointManager.RoleAdapterPath(ckpt, role)).Count);
        Assert.False(Directory.Exists(Path.Combine(ckpt, "teacher")));
    }

    [Fact]
    public void ConfigOnlyPlanCountsTheAdaptersAsTheBuiltModelsDo()
    {
        var cfg = Dmd2Config(TestPaths.TempDir("lora-plan"));
        cfg = cfg with { Roles = cfg.Roles.ToDictionary(kv => kv.Key, kv => kv.Key == "critic" ? kv.Value with { Lora = Lora(rank: 3, targets: ["attn1", "proj_out"]) } : kv.Value) };
        var light = TrainingPlan.BuildFromConfig(cfg).Roles;
        using var method = TrainingBuilder.Build(cfg);
        var full = TrainingPlan.Build(method).Roles;
        Assert.Equal(full.OrderBy(p => p.Role).ToList(), light.OrderBy(p => p.Role).ToList());
        // rank 2 on 20 layers: attention 32->32 (16 layers), net.0.proj 32->64, net.2 64->32 (2 each).
        Assert.Equal(2L * (16 * 64 + 4 * 96), light.Single(p => p.Role == "student").TrainableParameters);
        Assert.Equal(3L * (8 * 64 + (32 + 16)), light.Single(p => p.Role == "critic").TrainableParameters);
        Assert.Equal(0, light.Single(p => p.Role == "teacher").TrainableParameters);
    }
}

/// <summary>A LoRA finetune (2 steps, EMA) in memory whose checkpoint the export tests read, with the live model kept.</summary>
public sealed class LoraExportFixture : IDisposable
{
    public LoraExportFixture()
    {
        Dir = TestPaths.TempDir("lora-export");
        var callbacks = new[] { TrainFixture.Callback("ema", ("decay", 0.5), ("start_iter", 0)) };
        var cfg = LoraTests.FinetuneConfig(Dir, maxSteps: 2, saveSteps: 2, callbacks: callbacks,
            lora: LoraTests.Lora(targets: ["to_q", "to_k", "to_v", "to_out", "ffn", "proj_out"]));
        Method = TrainingBuilder.Build(cfg);
        using var trainer = new Trainer(Method, new RandomBatchSource(), trackers: [], console: TextWriter.Null);
        trainer.Run();
        Checkpoint = CheckpointManager.PathFor(Dir, 2);
    }

    public string Dir { get; }
    public TrainingMethod Method { get; }
    public string Checkpoint { get; }
    public void Dispose() => Method.Dispose();
}

public class LoraExportTests(LoraExportFixture f) : IClassFixture<LoraExportFixture>
{
    private static readonly string Tiny = TestPaths.Fixture("wan_tiny");
    private string Out(string name) => Path.Combine(f.Dir, "exports", $"{name}-{Guid.NewGuid():N}");

    private static (Tensor X, Tensor T, Tensor Text) Inputs()
    {
        using var g = new Generator(99, device("cpu"));
        return (randn([2, 4, 2, 8, 8], generator: g), tensor(new float[] { 600f, 250f }), randn([2, 7, 24], generator: g));
    }

    private static Tensor Forward(WanTransformerBase m)
    {
        var (x, t, text) = Inputs();
        using var noGrad = no_grad();
        return m.Forward(x, t, text);
    }

    private static void Close(Tensor expected, Tensor actual, double atol, string what)
    {
        var diff = (expected - actual).abs().max().to_type(ScalarType.Float64).item<double>();
        Assert.True(diff <= atol, $"{what}: max |diff| {diff} > {atol}");
    }

    [Fact]
    public void MergedExportIsBasePlusScaledBAAndReproducesTheTrainedModel()
    {
        var output = Out("merged");
        var log = new StringWriter();
        Assert.Equal(0, ExportCommand.Run(f.Dir, "student", output, ema: false, overwrite: false, log));   // merged by default
        Assert.Contains("LoRA, merged", log.ToString());
        Assert.True(File.Exists(Path.Combine(output, "model_index.json")));

        var merged = SafeTensors.Load(Path.Combine(output, "transformer", CheckpointManager.WeightsFile));
        var baseWeights = StateDict.LoadWeights(DiffusersModelFolder.Resolve(Tiny));
        var adapters = SafeTensors.Load(CheckpointManager.RoleAdapterPath(f.Checkpoint, "student"));
        Assert.Equal(baseWeights.Keys.Order(), merged.Keys.Order());
        int adapted = 0;
        foreach (var (k, w) in baseWeights)
        {
            var layer = k[..^".weight".Length];
            if (k.EndsWith(".weight") && adapters.TryGetValue(layer + ".lora_A.weight", out var a))
            {
                var b = adapters[layer + ".lora_B.weight"];
                // base + (alpha/rank)·B·A, alpha 8, rank 4, in float64.
                var expected = w.to_type(ScalarType.Float64) + 2.0 * b.to_type(ScalarType.Float64).matmul(a.to_type(ScalarType.Float64));
                Close(expected, merged[k].to_type(ScalarType.Float64), 1e-6, k);
                Assert.True(b.abs().sum().item<float>() > 0, $"{layer}: B is still zero, the check is vacuous");
                adapted++;
            }
            else Assert.True(w.equal(merged[k]).all().item<bool>(), $"{k} is not adapted but differs from the base");
        }
        Assert.Equal(21, adapted);   // 2 blocks x 10 layers + proj_out

        // The exported folder loads as a plain Wan model and computes what the trained LoRA model computes.
        using var model = WanTransformer3DModel.FromPretrained(output);
        var live = ((FastVideo.Train.Models.Wan.WanModel)f.Method.Student).WanTransformer;
        live.eval();
        Close(Forward(live), Forward(model), 1e-5, "merged export vs the trained LoRA model");
        // SavePretrained (the quickstart's export) writes a LoRA role merged too.
        var saved = Out("saved");
        f.Method.Student.SavePretrained(Path.Combine(saved, "transformer"));
        using (var fromSaved = WanTransformer3DModel.FromPretrained(saved))
            Close(Forward(model), Forward(fromSaved), 1e-6, "SavePretrained vs merged export");
        // ... which is not the base model.
        using var plain = WanTransformer3DModel.FromPretrained(Tiny);
        Assert.True((Forward(plain) - Forward(model)).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void AdapterExportHasDiffusersWanKeysAndReloadsToTheMergedModel()
    {
        var adapterOut = Out("adapter");
        var log = new StringWriter();
        Assert.Equal(0, ExportCommand.Run(f.Checkpoint, "student", adapterOut, ema: false, overwrite: false, log, loraFormat: "adapter"));
        Assert.Equal([LoraAdapters.DiffusersFileName], Directory.GetFiles(adapterOut).Select(Path.GetFileName));
        var file = Path.Combine(adapterOut, LoraAdapters.DiffusersFileName);
        var header = SafeTensors.ReadHeader(file);
        Assert.Equal(42, header.Count);
        Assert.Equal(new long[] { 4, 32 }, header["transformer.blocks.0.attn1.to_q.lora_A.weight"].Shape);     // [rank, in]
        Assert.Equal(new long[] { 32, 4 }, header["transformer.blocks.0.attn1.to_q.lora_B.weight"].Shape);     // [out, rank]
        Assert.Equal(new long[] { 4, 32 }, header["transformer.blocks.1.attn2.to_out.0.lora_A.weight"].Shape);
        Assert.Equal(new long[] { 64, 4 }, header["transformer.blocks.0.ffn.net.0.proj.lora_B.weight"].Shape);
        Assert.Equal(new long[] { 4, 64 }, header["transformer.blocks.0.ffn.net.2.lora_A.weight"].Shape);
        Assert.Equal(new long[] { 16, 4 }, header["transformer.proj_out.lora_B.weight"].Shape);
        Assert.All(header, kv => Assert.Matches(@"^transformer\.[a-z0-9_.]+\.lora_[AB]\.weight$", kv.Key));
        Assert.All(header, kv => Assert.Equal("F32", kv.Value.Dtype));
        // No PEFT metadata: Diffusers uses scale 1, so alpha/rank (2) is in B.
        Assert.False(SafeTensors.ReadMetadata(file).ContainsKey("lora_adapter_metadata"));
        var tensors = SafeTensors.Load(file);
        var ckpt = SafeTensors.Load(CheckpointManager.RoleAdapterPath(f.Checkpoint, "student"));
        Assert.True(tensors["transformer.blocks.0.attn1.to_q.lora_B.weight"].equal(ckpt["blocks.0.attn1.to_q.lora_B.weight"] * 2).all().item<bool>());
        Assert.True(tensors["transformer.blocks.0.attn1.to_q.lora_A.weight"].equal(ckpt["blocks.0.attn1.to_q.lora_A.weight"]).all().item<bool>());

        var mergedOut = Out("merged-ref");
        Assert.Equal(0, ExportCommand.Run(f.Checkpoint, "student", mergedOut, ema: false, overwrite: false, TextWriter.Null, loraFormat: "merged"));
        using var merged = WanTransformer3DModel.FromPretrained(mergedOut);
        var reference = Forward(merged);

        // 1. Our loader (generate --lora): base model + the file.
        using var loaded = WanTransformer3DModel.FromPretrained(Tiny);
        Assert.Equal(21, LoraAdapters.LoadDiffusers(loaded, file).Count);
        Close(reference, Forward(loaded), 1e-5, "base + adapter file (LoadDiffusers) vs merged export");

        // 2. The file applied the way Diffusers' PEFT path does without metadata: W += 1.0 · B_file · A_file.
        using var diffusersWay = WanTransformer3DModel.FromPretrained(Tiny);
        using (no_grad())
        {
            var state = diffusersWay.state_dict();
            foreach (var (k, a) in tensors.Where(kv => kv.Key.EndsWith(".lora_A.weight")))
            {
                var layer = k["transformer.".Length..^".lora_A.weight".Length];
                state[layer + ".weight"].add_(tensors[$"transformer.{layer}.lora_B.weight"].matmul(a));
            }
        }
        Close(reference, Forward(diffusersWay), 1e-5, "base + B·A from the file (Diffusers' scale 1) vs merged export");
    }

    [Fact]
    public void EmaAdaptersExportAndLoraFormatIsRefusedWithoutLora()
    {
        var output = Out("ema");
        Assert.Equal(0, ExportCommand.Run(f.Dir, "student", output, ema: true, overwrite: false, TextWriter.Null, loraFormat: "adapter"));
        var tensors = SafeTensors.Load(Path.Combine(output, LoraAdapters.DiffusersFileName));
        var shadow = SafeTensors.Load(Path.Combine(f.Checkpoint, "training_state.safetensors"),
            keyFilter: k => k == "callbacks.ema.student_ema.blocks.0.attn1.to_q.lora_B.weight").Values.Single();
        var live = SafeTensors.Load(CheckpointManager.RoleAdapterPath(f.Checkpoint, "student"))["blocks.0.attn1.to_q.lora_B.weight"];
        Assert.True(tensors["transformer.blocks.0.attn1.to_q.lora_B.weight"].equal(shadow * 2).all().item<bool>());
        Assert.False(shadow.equal(live).all().item<bool>(), "EMA equals the live weights; the check is vacuous");

        // A full finetune has no adapter: --lora-format is refused, and so is a bad format word.
        var plainDir = TestPaths.TempDir("lora-plain");
        var cfg = TrainFixture.Config(plainDir, maxSteps: 1, saveSteps: 1);
        cfg = cfg with { Roles = new Dictionary<string, RoleConfig> { ["student"] = cfg.Roles["student"] with { Family = "wan" } } };
        cfg = cfg with { Raw = RecipeTree.ToPlain(cfg) };
        using (var method = TrainingBuilder.Build(cfg))
        using (var trainer = new Trainer(method, new RandomBatchSource(), trackers: [], console: TextWriter.Null))
            trainer.Run();
        var e = Assert.Throws<UserError>(() => ExportCommand.Run(plainDir, "student", Out("plain"), false, false, TextWriter.Null, loraFormat: "adapter"));
        Assert.Contains("--lora-format: role 'student' was not trained with LoRA", e.Message);
        Assert.Equal(0, ExportCommand.Run(plainDir, "student", Out("plain"), false, false, TextWriter.Null));
        var stderr = new StringWriter();
        Assert.NotEqual(0, Cli.Cli.Run(["export", f.Dir, "--role", "student", "--lora-format", "peft", "--out", Out("bad")], TextWriter.Null, stderr));
        Assert.Contains("--lora-format", stderr.ToString());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]   // streaming: the causal transformer has the same LoRA layers
    public void GenerateWithLoraEqualsGenerateWithTheMergedModel(bool causal)
    {
        var adapterOut = Out("gen-adapter");
        var mergedOut = Out("gen-merged");
        Assert.Equal(0, ExportCommand.Run(f.Checkpoint, "student", adapterOut, false, false, TextWriter.Null, loraFormat: "adapter"));
        Assert.Equal(0, ExportCommand.Run(f.Checkpoint, "student", mergedOut, false, false, TextWriter.Null, loraFormat: "merged"));
        var dir = TestPaths.TempDir("lora-gen");
        var prompt = Path.Combine(dir, "prompt.safetensors");
        using (var g = new Generator(5, device("cpu")))
            SafeTensors.Save(prompt, [new("prompt_embeds", randn([1, 7, 24], generator: g))]);
        Tensor Generate(string model, string? lora)
        {
            var output = Path.Combine(dir, $"{Guid.NewGuid():N}.safetensors");
            var args = new List<string> { "generate", "--model", model, "--compute-dtype", "fp32", "--prompt-embeds", prompt, "--seed", "3", "--num-frames", "5", "--height", "16", "--width", "16",
                "--guidance-scale", "1", "--flow-shift", "3", "--output-latents", output };
            args.AddRange(causal ? ["--causal", "--frames-per-block", "1", "--denoising-steps", "1000,500", "--text-len", "16"] : ["--steps", "3"]);
            if (lora is not null) args.AddRange(["--lora", lora]);
            var stderr = new StringWriter();
            Assert.True(Cli.Cli.Run([.. args], TextWriter.Null, stderr) == 0, stderr.ToString());
            return SafeTensors.Load(output)["latents"];
        }
        var viaLora = Generate(Tiny, adapterOut);
        var viaMerged = Generate(mergedOut, null);
        var plain = Generate(Tiny, null);
        Assert.True((viaLora - viaMerged).abs().max().item<float>() <= 1e-5);
        Assert.True((viaLora - plain).abs().max().item<float>() > 1e-4, "the LoRA changes nothing");
    }
}

using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Models.Layers;
using FastVideo.Tests.Models;
using FastVideo.Train;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using FastVideo.Train.Tracking;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace FastVideo.Tests.Train;

/// <summary>
/// Activation checkpointing from the recipe (<c>roles.&lt;role&gt;.enable_gradient_checkpointing_type</c>, else
/// <c>training.model.*</c>), applied by the Wan plugin to trainable roles: gradients through the plugin, with gradient
/// accumulation, equal those without; finetune and DMD2 runs train as without it.
/// </summary>
public class CheckpointingTrainingTests(ITestOutputHelper log)
{
    private static readonly string ModelDir = TestPaths.Fixture("wan_tiny");

    private static WanModel Build(string? roleType, string? modelType = null, bool trainable = true, LoraOptions? lora = null)
    {
        var run = WanModelTests.Run(new RoleConfig
        {
            InitFrom = ModelDir, Trainable = trainable, EnableGradientCheckpointingType = roleType, Lora = lora ?? new LoraOptions(),
        });
        run = run with { Training = run.Training with { Model = run.Training.Model with { EnableGradientCheckpointingType = modelType } } };
        return (WanModel)ModelFamilyRegistry.Default.Create("student", run.Roles["student"], run);
    }

    [Fact]
    public void ThePluginAppliesTheRolesTypeElseTrainingModelsToTrainableRolesOnly()
    {
        using (var m = Build(null)) { Assert.Null(m.AppliedCheckpointing); Assert.Null(m.WanTransformer.GradientCheckpointing); }
        using (var m = Build("ops")) Assert.Equal(CheckpointingPolicy.Ops, m.WanTransformer.GradientCheckpointing);
        using (var m = Build(null, modelType: "full")) Assert.Equal("full", m.AppliedCheckpointing);
        using (var m = Build("block_skip", modelType: "full"))
        {
            Assert.Equal(CheckpointingMode.BlockSkip, m.WanTransformer.GradientCheckpointing!.Mode);
            Assert.Equal(1, m.WanTransformer.GradientCheckpointing.Every);   // upstream's n_layer default: every block
        }
        // Upstream: "applied only if trainable"; a frozen role's forwards build no graph to save memory on.
        using (var m = Build("full", modelType: "full", trainable: false)) { Assert.Null(m.CheckpointingType); Assert.Null(m.AppliedCheckpointing); }
    }

    [Theory]
    [InlineData("full", false)]
    [InlineData("ops", false)]
    [InlineData("block_skip", false)]
    [InlineData("full", true)]   // a LoRA role: only its adapters train
    [InlineData("ops", true)]
    public void GradientsThroughThePluginWithTwoAccumulationRoundsEqualThoseWithout(string type, bool lora)
    {
        var loraOptions = lora ? new LoraOptions { Enable = true, Rank = 2 } : null;
        using var plain = Build(null, lora: loraOptions);
        using var ckpt = Build(type, lora: loraOptions);
        Assert.Equal(lora, ckpt.IsLora);
        var (plainLoss, plainGrads) = TwoRounds(plain);
        int before = ActivationCheckpoint.RecomputedOnThread;
        var (ckptLoss, ckptGrads) = TwoRounds(ckpt);
        Assert.Equal(2 * 2, ActivationCheckpoint.RecomputedOnThread - before);   // 2 rounds x 2 blocks
        Assert.Equal(plainLoss, ckptLoss, 6);
        double worst = 0;
        foreach (var (name, reference) in plainGrads)
        {
            double rel = ActivationCheckpointTests.Relative(ckptGrads[name], reference);
            worst = Math.Max(worst, rel);
            Assert.True(rel <= 1e-5, $"{type}: gradient of {name} differs by {rel:E2} relative");
        }
        log.WriteLine($"{type}: worst relative gradient difference {worst:E2} over {plainGrads.Count} parameters");
        foreach (var g in plainGrads.Values.Concat(ckptGrads.Values)) g.Dispose();
    }

    /// <summary>Two micro-batches of the flow-matching loss through PrepareBatch/PredictNoise/Backward(rounds: 2).</summary>
    private static (double Loss, Dictionary<string, Tensor> Grads) TwoRounds(WanModel model)
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(21, device("cpu"));
        double total = 0;
        for (int round = 0; round < 2; round++)
        {
            using var raw = WanModelTests.Batch();
            using var tb = model.PrepareBatch(raw, gen);
            var v = model.PredictNoise(tb.NoisyModelInput.permute(0, 2, 1, 3, 4), tb.Timesteps, tb, conditional: true);
            var loss = (v - (tb.Noise.permute(0, 2, 1, 3, 4) - tb.Latents)).square().mean();
            total += loss.item<float>();
            model.Backward(loss, null, gradAccumRounds: 2);
        }
        var grads = model.Transformer.named_parameters().Where(p => p.parameter.requires_grad)
            .ToDictionary(p => p.name, p => p.parameter.grad!.clone().DetachFromDisposeScope());
        return (total, grads);
    }

    [Fact]
    public void ARecipeWithTheKeyTrainsAsWithoutIt()
    {
        var root = TestPaths.TempDir("ckpt-recipe");
        var (data, model) = TrainFixture.SyntheticDataAndModel(root);
        var recipe = Path.Combine(root, "recipe.yaml");
        File.WriteAllText(recipe, $"""
            recipe: {"{"}family: wan, method: finetune{"}"}
            roles:
              student: {"{"}init_from: "{model}"{"}"}
            training:
              data: {"{"}data_path: "{data}", train_batch_size: 2, seed: 7, num_latent_t: 2, num_height: 8, num_width: 8{"}"}
              optimizer: {"{"}learning_rate: 1.0e-3{"}"}
              loop: {"{"}max_train_steps: 3, gradient_accumulation_steps: 2{"}"}
              model: {"{"}enable_gradient_checkpointing_type: full{"}"}
              compute_precision: fp32
            pipeline: {"{"}text_len: 6{"}"}
            """);
        List<double> Losses(string output, params string[] sets)
        {
            var (stdout, stderr) = (new StringWriter(), new StringWriter());
            int rc = Cli.Cli.Run(["train", recipe, "--set", $"training.checkpoint.output_dir={output}", .. sets.SelectMany(s => new[] { "--set", s })], stdout, stderr);
            Assert.True(rc == 0, stderr.ToString() + stdout);
            return File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => (double)JsonNode.Parse(l)!["finetune_loss"]!).ToList();
        }
        int before = ActivationCheckpoint.RecomputedOnThread;
        var full = Losses(Path.Combine(root, "full"));
        Assert.Equal(3 * 2 * 1, ActivationCheckpoint.RecomputedOnThread - before);   // 3 steps x 2 micro-batches x 1 block
        var ops = Losses(Path.Combine(root, "ops"), "roles.student.enable_gradient_checkpointing_type=ops");
        var none = Losses(Path.Combine(root, "none"), "training.model.enable_gradient_checkpointing_type=null");
        Assert.Equal(3, none.Count);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(none[i], full[i], 5);
            Assert.Equal(none[i], ops[i], 5);
        }
        log.WriteLine($"losses without: {string.Join(", ", none)}; full: {string.Join(", ", full)}; ops: {string.Join(", ", ops)}");

        // The dry run names the policy and counts the smaller activations.
        var plan = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["train", recipe, "--dry-run"], plan, TextWriter.Null));
        Assert.Contains("full checkpointing: 1 of 1 blocks recomputed", plan.ToString());
    }

    [Fact]
    public void Dmd2WithCheckpointingOnStudentAndCriticTrainsAsWithoutIt()
    {
        var plain = DMD2MethodTests.Config(TestPaths.TempDir("ckpt-dmd-plain"), maxSteps: 3, method: DMD2MethodTests.MethodOptions(interval: 2L));
        var ckpt = DMD2MethodTests.Config(TestPaths.TempDir("ckpt-dmd"), maxSteps: 3, method: DMD2MethodTests.MethodOptions(interval: 2L));
        ckpt = ckpt with
        {
            Roles = new Dictionary<string, RoleConfig>(ckpt.Roles)
            {
                ["student"] = ckpt.Roles["student"] with { EnableGradientCheckpointingType = "full" },
                ["critic"] = ckpt.Roles["critic"] with { EnableGradientCheckpointingType = "ops" },
                ["teacher"] = ckpt.Roles["teacher"] with { EnableGradientCheckpointingType = "full" },   // frozen: not applied
            },
        };
        var a = Run(plain);
        int before = ActivationCheckpoint.RecomputedOnThread;
        var b = Run(ckpt, (m, _) =>
        {
            Assert.Equal("full", m.Roles["student"].AppliedCheckpointing);
            Assert.Equal("ops", m.Roles["critic"].AppliedCheckpointing);
            Assert.Null(m.Roles["teacher"].AppliedCheckpointing);
        });
        // Critic updates every step (3 x 2 blocks), the student at steps 2 (interval 2) (1 x 2 blocks).
        Assert.Equal(3 * 2 + 1 * 2, ActivationCheckpoint.RecomputedOnThread - before);
        Assert.Equal(3, b.Count);
        for (int i = 0; i < 3; i++)
            foreach (var key in new[] { "generator_loss", "fake_score_loss", "grad_norm/critic" })
                Assert.Equal(a[i][key], b[i][key], 5);
        Assert.True(b[1]["generator_loss"] > 0);
    }

    private static List<IReadOnlyDictionary<string, double>> Run(RunConfig cfg, Action<TrainingMethod, int>? check = null)
    {
        using var method = TrainingBuilder.Build(cfg);
        check?.Invoke(method, 0);
        var memory = new MemoryTracker();
        using var trainer = new Trainer(method, new RandomBatchSource(), trackers: [memory], console: TextWriter.Null);
        trainer.Run();
        return memory.Entries.Select(e => e.Metrics).ToList();
    }

    [Fact]
    public void ThePlanCountsTheActivationsEachPolicyKeeps()
    {
        // The exact numbers per policy are TrainingPlanTests'; here: the policies' order and full's saving.
        var cfg = TrainFixture.Config(TestPaths.TempDir("ckpt-plan"));
        cfg = cfg with { Training = cfg.Training with { Data = cfg.Training.Data with { NumLatentT = 4, NumHeight = 128, NumWidth = 128, TrainBatchSize = 1 } } };
        long Plan(string? type) => Assert.Single(TrainingPlan.BuildFromConfig(cfg with
        {
            Training = cfg.Training with { Model = cfg.Training.Model with { EnableGradientCheckpointingType = type } },
        }).Roles).Activations!.Kept;
        Assert.Equal(Plan("full"), Plan("block_skip"));   // n = 1: every block, as full
        Assert.True(Plan("full") < Plan("ops"));
        Assert.True(Plan("ops") < Plan(null));
        Assert.True(Plan("full") < Plan(null) / 2);
    }
}

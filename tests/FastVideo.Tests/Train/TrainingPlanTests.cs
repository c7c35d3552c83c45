using FastVideo.Cli.Commands;
using FastVideo.Configs;
using FastVideo.Train;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using Xunit;

namespace FastVideo.Tests.Train;

public class TrainingPlanTests
{
    // wan_tiny: D = 32 (2 heads of 16), F = 64, 2 layers, text_dim 24, patch 1x2x2.
    private const long D = 32, F = 64, Heads = 2, Layers = 2, TextDim = 24;

    private static RunConfig Tiny(string name, string compute = "fp32", string dit = "fp32", string? checkpointing = null) =>
        TrainFixture.Config(TestPaths.TempDir(name)) is var c
            ? c with { Training = c.Training with { ComputePrecision = compute, DitPrecision = dit, Model = c.Training.Model with { EnableGradientCheckpointingType = checkpointing } } }
            : throw new InvalidOperationException();

    /// <summary>Video tokens N, text tokens L and latent values of the plan's shape (patch 1x2x2).</summary>
    private static (long N, long L, long Latent) Sizes(MemoryPlan plan)
    {
        var s = plan.Shape!;
        return (s.Batch * s.Frames * (s.Height / 2) * (s.Width / 2), s.Batch * s.TextTokens, s.LatentValues);
    }

    [Fact]
    public void PlanCountsParametersAndMemoryPerRole()
    {
        using var method = TrainingBuilder.Build(TrainFixture.Config(TestPaths.TempDir("plan")));
        var plan = Assert.Single(TrainingPlan.Build(method).Roles);
        long n = method.Student.Transformer.parameters().Sum(p => p.numel());
        Assert.Equal("student", plan.Role);
        Assert.Equal("wan", plan.Family);
        Assert.Equal(n, plan.Parameters);
        Assert.Equal(n, plan.TrainableParameters);
        Assert.Equal(4 * n, plan.WeightBytes);          // fp32
        Assert.Equal(4 * n, plan.GradBytes);
        Assert.Equal(8 * n, plan.OptimizerBytes);
        Assert.True(plan.Activations!.Peak > plan.Activations.Kept);
    }

    [Fact]
    public void WeightsGradientsAndMomentsFollowTheMasterDtype()
    {
        var fp32 = Assert.Single(TrainingPlan.BuildFromConfig(Tiny("plan-fp32")).Roles);
        var bf16 = Assert.Single(TrainingPlan.BuildFromConfig(Tiny("plan-bf16", dit: "bf16")).Roles);
        long n = fp32.Parameters;
        Assert.Equal((4 * n, 4 * n, 8 * n), (fp32.WeightBytes, fp32.GradBytes, fp32.OptimizerBytes));
        Assert.Equal((2 * n, 2 * n, 4 * n), (bf16.WeightBytes, bf16.GradBytes, bf16.OptimizerBytes));
        Assert.Equal(n, bf16.Parameters);
    }

    [Fact]
    public void ActivationsCountWhatAutogradKeeps_Fp32()
    {
        // fp32 compute, the whole model trains. Per block (see WanActivations): 88 N·D bytes (norm inputs and
        // outputs, linear inputs, q/k normalised and rotated, v, attention outputs, residuals), 8 N·F (the FFN's
        // hidden value and its GELU), 8 N·H (two log-sum-exps), 16 L·D (cross-attention keys and values); the text
        // context (4 L·D) once; outside the blocks the patch input, the text embedder, the head and the loss.
        var none = TrainingPlan.BuildFromConfig(Tiny("plan-act32"));
        var (n, l, latent) = Sizes(none);
        long block = 88 * n * D + 8 * n * F + 8 * n * Heads + 16 * l * D;
        long outside = 4 * latent + 4 * l * (TextDim + 2 * D) + 12 * n * D + 24 * latent + 4 * l * D;
        var a = Assert.Single(none.Roles).Activations!;
        Assert.Equal(Layers * block + outside, a.Kept);
        long backward = 8 * n * F + 24 * n * D + 8 * D * F;
        Assert.Equal(a.Kept + backward, a.Peak);
        Assert.Equal((long)(0.4 * Layers * block), a.Retained);   // every tensor here is heap-sized

        // full (and block_skip, n = 1): each block keeps its input; backward recomputes one block at a time.
        foreach (var policy in new[] { "full", "block_skip" })
        {
            var full = Assert.Single(TrainingPlan.BuildFromConfig(Tiny("plan-act32-" + policy, checkpointing: policy)).Roles).Activations!;
            Assert.Equal(Layers * 4 * n * D + outside, full.Kept);
            Assert.Equal(full.Kept + block + backward, full.Peak);
            Assert.Equal((long)(0.45 * Layers * (block + backward)), full.Retained);
        }
        // ops: also every other linear output (q, v, cross q, cross v, FFN up) and both attention outputs.
        var ops = Assert.Single(TrainingPlan.BuildFromConfig(Tiny("plan-act32-ops", checkpointing: "ops")).Roles).Activations!;
        Assert.Equal(Layers * 4 * (6 * n * D + n * F + l * D) + outside, ops.Kept);
    }

    [Fact]
    public void ActivationsCountWhatAutogradKeeps_Bf16ComputeOverFp32Masters()
    {
        // bf16 activations, fp32 norms: 62 N·D, 4 N·F, 10 L·D per block, 10 N·H (the log-sum-exp of both attentions,
        // and the bf16 kernel's shift of the cross-attention over the 512 padded text tokens; the self-attention over
        // this few tokens is SDPA), plus the bf16 copies of the block's linear weights and biases that each linear
        // keeps for backward.
        var none = TrainingPlan.BuildFromConfig(Tiny("plan-act16", compute: "bf16"));
        var (n, l, latent) = Sizes(none);
        Assert.Equal(512, none.Shape!.TextTokens);
        long block = 62 * n * D + 4 * n * F + 10 * n * Heads + 10 * l * D;
        long casts = 2 * (8 * (D * D + D) + D * F + F + F * D + D);
        long outside = 2 * latent + 4 * l * (TextDim + 2 * D) + 10 * n * D + 24 * latent + 2 * l * D;
        var a = Assert.Single(none.Roles).Activations!;
        Assert.Equal(Layers * (block + casts) + outside, a.Kept);
        var full = Assert.Single(TrainingPlan.BuildFromConfig(Tiny("plan-act16-full", compute: "bf16", checkpointing: "full")).Roles).Activations!;
        Assert.Equal(Layers * 2 * n * D + outside, full.Kept);
        Assert.True(full.Kept < a.Kept / 2);
    }

    [Fact]
    public void ALoraRoleKeepsTheAdaptersInputsNotTheFrozenLinears()
    {
        // LoRA rank 4 on to_q/to_k/to_v/to_out, bf16 base and compute: no weight casts, no linear inputs for the
        // frozen weights; each adapter keeps an fp32 copy of its input and its rank-r hidden value. Per block: 60 N·D,
        // 2 N·F (GELU's input), 10 N·H (as in the test above), 16 L·D, 24 N·r (six adapters on video tokens), 8 L·r
        // (two on the text).
        var cfg = Tiny("plan-lora", compute: "bf16", dit: "bf16");
        cfg = cfg with { Roles = cfg.Roles.ToDictionary(r => r.Key, r => r.Value with { Lora = new LoraOptions { Enable = true, Rank = 4, TargetModules = ["to_q", "to_k", "to_v", "to_out"] } }) };
        var plan = TrainingPlan.BuildFromConfig(cfg);
        var (n, l, latent) = Sizes(plan);
        long block = 60 * n * D + 2 * n * F + 10 * n * Heads + 16 * l * D + 24 * n * 4 + 8 * l * 4;
        long outside = 4 * n * D + 24 * latent;   // the head's norm input and the loss
        var role = Assert.Single(plan.Roles);
        Assert.Equal(Layers * block + outside, role.Activations!.Kept);
        // Trainable: rank x (in + out) per adapted layer, 8 layers of 32 -> 32 per block.
        Assert.Equal(Layers * 8 * 4 * (D + D), role.TrainableParameters);
        Assert.Equal(4 * role.TrainableParameters, role.GradBytes);
        Assert.Equal(8 * role.TrainableParameters, role.OptimizerBytes);
    }

    [Fact]
    public void TheCausalFamilyCountsItsConcatenatedAttentionOutputs()
    {
        var wan = Tiny("plan-causal-wan");
        var causal = wan with { Roles = wan.Roles.ToDictionary(r => r.Key, r => (RoleConfig)new FastVideo.Train.Models.Wan.WanCausalRoleConfig { InitFrom = r.Value.InitFrom, NumFramesPerBlock = 1 }) };
        causal = causal with { Recipe = causal.Recipe with { Family = "wan_causal" } };
        var a = TrainingPlan.BuildFromConfig(wan);
        var b = TrainingPlan.BuildFromConfig(causal);
        var (n, _, _) = Sizes(a);
        // Its chunks' attention outputs are concatenated into a second [N, D] tensor per block.
        Assert.Equal(Single(a).Kept + Layers * 4 * n * D, Single(b).Kept);
        Assert.Contains("block-causal", Single(b).Note);
    }

    private static ActivationEstimate Single(MemoryPlan p) => Assert.Single(p.Roles).Activations!;

    [Fact]
    public void AttentionHasNoQuadraticTerm_Dmd2At480x832x77()
    {
        // DMD2 at 480x832 pixels, 77 frames (20 latent frames): 31,200 tokens. An attention matrix would be
        // heads x N^2 x 4 bytes = 7.8 GB per layer; flash-style SDPA keeps O(N) per layer.
        var cfg = DMD2MethodTests.Config(TestPaths.TempDir("plan-480"));
        RunConfig Frames(int t) => cfg with { Training = cfg.Training with { Data = cfg.Training.Data with { NumLatentT = t, NumHeight = 480, NumWidth = 832 } } };
        var plan = TrainingPlan.BuildFromConfig(Frames(20));
        var (n, _, _) = Sizes(plan);
        Assert.Equal(31_200, n);
        foreach (var role in plan.Roles) Assert.True(role.Activations!.Peak < Heads * n * n * 4, role.Role);
        // Linear in the number of frames: twice the frames, twice the activations (not four times).
        double ratio = (double)Single(TrainingPlan.BuildFromConfig(Frames(40)), "student").Kept / Single(plan, "student").Kept;
        Assert.InRange(ratio, 1.95, 2.05);
    }

    private static ActivationEstimate Single(MemoryPlan p, string role) => p.Roles.Single(r => r.Role == role).Activations!;

    [Fact]
    public void MultiRoleMethodsSumTheirRoles()
    {
        var cfg = DMD2MethodTests.Config(TestPaths.TempDir("plan-dmd2"));
        var plan = TrainingPlan.BuildFromConfig(cfg);
        Assert.Equal(["student", "teacher", "critic"], plan.Roles.Select(r => r.Role).ToArray());
        var teacher = plan.Roles.Single(r => r.Role == "teacher");
        Assert.Equal((0L, 0L, 0L), (teacher.GradBytes, teacher.OptimizerBytes, teacher.Activations!.Kept));
        Assert.True(teacher.Activations.Peak > 0);   // its forward without grad
        var student = plan.Roles.Single(r => r.Role == "student");
        Assert.Equal(student.TotalBytes, plan.Roles.Single(r => r.Role == "critic").TotalBytes);
        Assert.Equal(MemoryPlan.BaselineBytes + plan.Roles.Sum(r => r.WeightBytes + r.GradBytes + r.OptimizerBytes + r.Activations!.Peak)
            + plan.LoaderBytes + plan.EmaBytes + plan.Roles.Max(r => r.Activations!.Retained), plan.TotalBytes);
        Assert.Contains($"total memory estimate: {TrainingPlan.Bytes(plan.TotalBytes)}", TrainingPlan.Format(plan));
    }

    [Fact]
    public void TheShapeComesFromTheDatasetsFirstRowWhenTheRecipeHasNone()
    {
        var (data, model) = TrainFixture.SyntheticDataAndModel(TestPaths.TempDir("plan-row"));
        var cfg = TrainFixture.Config(TestPaths.TempDir("plan-row-out"), initFrom: model);
        cfg = cfg with { Training = cfg.Training with { Data = new DataConfig { DataPath = [new DataSource(data, 1)], TrainBatchSize = 3 } } };
        var plan = TrainingPlan.BuildFromConfig(cfg);
        // The synthetic rows: latents [3, 2, 8, 8], text embeddings 16 wide; text padded to the family's 512 tokens.
        var s = plan.Shape!;
        Assert.Equal((3, 3L, 2L, 8L, 8L, 512L, 16L), (s.Batch, s.Channels, s.Frames, s.Height, s.Width, s.TextTokens, s.TextDim));
        Assert.Contains("first row", s.Source);
        Assert.True(plan.LoaderBytes > 0);
        // num_latent_t cuts the frames as the model does; all three set: the recipe's shape in pixels (identity VAE here).
        var cut = cfg with { Training = cfg.Training with { Data = cfg.Training.Data with { NumLatentT = 1 } } };
        Assert.Equal(1, TrainingPlan.BuildFromConfig(cut).Shape!.Frames);
        var own = cfg with { Training = cfg.Training with { Data = cfg.Training.Data with { NumLatentT = 2, NumHeight = 4, NumWidth = 6 } } };
        Assert.Equal((4L, 6L), (TrainingPlan.BuildFromConfig(own).Shape!.Height, TrainingPlan.BuildFromConfig(own).Shape!.Width));
        // Neither: no shape, activations unknown, said so.
        var none = cfg with { Training = cfg.Training with { Data = new DataConfig() } };
        var unknown = TrainingPlan.BuildFromConfig(none);
        Assert.Null(unknown.Shape);
        Assert.Contains("data: unknown", TrainingPlan.Format(unknown));
    }

    [Fact]
    public void ABudgetThePlanExceedsListsChangesWithTheirReplannedTotals()
    {
        var cfg = Tiny("plan-fit");
        var plan = TrainingPlan.BuildFromConfig(cfg);
        var fits = MemoryFit.Check(cfg, plan, plan.TotalBytes);
        Assert.True(fits.Fits);
        Assert.Contains("memory: fits", fits.Format());

        var tight = MemoryFit.Check(cfg, plan, plan.TotalBytes - 1);
        Assert.False(tight.Fits);
        var text = tight.Format();
        Assert.Contains($"does not fit: {TrainingPlan.Bytes(plan.TotalBytes)} needed, {TrainingPlan.Bytes(plan.TotalBytes - 1)} (--memory-budget)", text);
        // Each change is re-planned: its total is the plan of the changed recipe.
        var ckpt = tight.Options.Single(o => o.What.Contains("checkpointing"));
        Assert.Equal(["training.model.enable_gradient_checkpointing_type=full"], ckpt.Overrides);
        Assert.Equal(TrainingPlan.BuildFromConfig(Tiny("plan-fit2", checkpointing: "full")).TotalBytes, ckpt.TotalBytes);
        Assert.True(ckpt.Fits);
        var compute = tight.Options.Single(o => o.What == "bf16 compute");
        Assert.Equal(TrainingPlan.BuildFromConfig(Tiny("plan-fit3", compute: "bf16")).TotalBytes, compute.TotalBytes);
        var weights = tight.Options.Single(o => o.Overrides.Contains("training.dit_precision=bf16"));
        Assert.Equal(TrainingPlan.BuildFromConfig(Tiny("plan-fit4", dit: "bf16")).TotalBytes, weights.TotalBytes);
        var lora = tight.Options.Single(o => o.What.StartsWith("LoRA"));
        Assert.Equal(["roles.student.lora.enable=true", "roles.student.lora.rank=16"], lora.Overrides);
        var frames = tight.Options.Single(o => o.What.Contains("latent frames"));
        Assert.Equal(["training.data.num_latent_t=1"], frames.Overrides);
        Assert.Contains("--set training.model.enable_gradient_checkpointing_type=full", text);

        // Far too small: no single change is enough, so all recipe changes together are re-planned too.
        var tiny = MemoryFit.Check(cfg, plan, MemoryPlan.BaselineBytes);
        Assert.All(tiny.Options, o => Assert.False(o.Fits));
        Assert.Contains(tiny.Options, o => o.What.StartsWith("all of"));

        // All of them together just too much: the largest shape that fits with all of them, their overrides first.
        var together = tiny.Options.Single(o => o.What == "all of the recipe changes above together");
        var tighter = MemoryFit.Check(cfg, plan, together.TotalBytes - 1);
        Assert.False(tighter.Options.Single(o => o.What == "all of the recipe changes above together").Fits);
        var shorter = tighter.Options.Single(o => o.What.StartsWith("all of the recipe changes above and") && o.What.Contains("latent frames"));
        Assert.True(shorter.Fits);
        Assert.InRange(shorter.TotalBytes, 0, together.TotalBytes - 1);
        Assert.Equal([.. together.Overrides, "training.data.num_latent_t=" + (plan.Shape!.Frames - 1)], shorter.Overrides);
    }

    [Fact]
    public void ThisMachinesMemoryIsMemTotalMinusAMargin()
    {
        var cfg = Tiny("plan-machine");
        var fit = MemoryFit.Check(cfg, TrainingPlan.BuildFromConfig(cfg), budget: null);
        long total = MemoryFit.MachineMemory();
        Assert.Equal(total - Math.Max(1L << 30, total / 16), fit.AvailableBytes);
        Assert.Contains("MemTotal", fit.AvailableSource);
        Assert.True(fit.Fits);
    }

    [Theory]
    [InlineData("16GiB", 16L << 30)]
    [InlineData("16G", 16L << 30)]
    [InlineData("512MiB", 512L << 20)]
    [InlineData("1.5 GiB", 3L << 29)]
    [InlineData("1000", 1000L)]
    public void SizesParse(string text, long bytes) => Assert.Equal(bytes, MemoryFit.ParseSize(text));

    [Theory]
    [InlineData("16 gigs")]
    [InlineData("")]
    [InlineData("-1G")]
    [InlineData("0")]
    public void BadSizesAreRefused(string text) => Assert.Null(MemoryFit.ParseSize(text));

    [Fact]
    public void ConfigOnlyPlanMatchesThePlanOfLoadedModels()
    {
        // The dry run reads safetensors headers only; its numbers must equal those of the built models.
        var cfg = DMD2MethodTests.Config(TestPaths.TempDir("plan2"));
        var light = TrainingPlan.BuildFromConfig(cfg);
        using var method = TrainingBuilder.Build(cfg);
        var full = TrainingPlan.Build(method);
        Assert.Equal(full.Roles.OrderBy(p => p.Role).ToList(), light.Roles.OrderBy(p => p.Role).ToList());
        Assert.Equal(full.TotalBytes, light.TotalBytes);
        Assert.Equal(3, light.Roles.Count);
        Assert.Equal(0, light.Roles.Single(p => p.Role == "teacher").TrainableParameters);
    }

    [Fact]
    public void DryRunPrintsThePlanFromARecipeFile()
    {
        var dir = TestPaths.TempDir("dry");
        var recipe = Path.Combine(dir, "r.yaml");
        var model = TestPaths.Fixture("wan_tiny").Replace("\\", "/");
        File.WriteAllText(recipe, $"""
            recipe: {"{"}family: wan, method: finetune{"}"}
            roles:
              student: {"{"}init_from: "{model}"{"}"}
            training:
              optimizer: {"{"}learning_rate: 0.001{"}"}
              data: {"{"}num_latent_t: 2, num_height: 64, num_width: 64{"}"}
            """);
        var sw = new StringWriter();
        Assert.Equal(0, TrainCommand.Run(recipe, ["training.loop.max_train_steps=5"], dryRun: true, overwrite: false, ModelFamilyRegistry.Default, null, sw));
        Assert.Contains("method: finetune", sw.ToString());
        Assert.Contains("student", sw.ToString());
        Assert.Contains("memory: fits", sw.ToString());
        Assert.Throws<UserError>(() => TrainCommand.Run(recipe, [], dryRun: false, overwrite: false, ModelFamilyRegistry.Default, null, TextWriter.Null));

        // The same through the command line, and a mistyped --dry-run is a usage error that suggests it.
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        Assert.Equal(0, Cli.Cli.Run(["train", recipe, "--dry-run", "--set=training.loop.max_train_steps=5"], stdout, stderr));
        Assert.Equal(sw.ToString(), stdout.ToString());
        stderr = new StringWriter();
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["train", "--dryrun", recipe], TextWriter.Null, stderr));
        Assert.Contains("error: Unrecognized command or argument '--dryrun'.", stderr.ToString());
        Assert.Contains("Did you mean one of the following?\n--dry-run\n", stderr.ToString());

        // --memory-budget: checked against the plan; a bad size or a budget without --dry-run is refused.
        stdout = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["train", recipe, "--dry-run", "--memory-budget", "1MiB"], stdout, TextWriter.Null));
        Assert.Contains("memory: does not fit", stdout.ToString());
        Assert.Contains("1.00 MiB (--memory-budget)", stdout.ToString());
        stderr = new StringWriter();
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["train", recipe, "--dry-run", "--memory-budget", "lots"], TextWriter.Null, stderr));
        Assert.Contains("--memory-budget", stderr.ToString());
        stderr = new StringWriter();
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["train", recipe, "--memory-budget", "16GiB"], TextWriter.Null, stderr));
        Assert.Contains("add --dry-run", stderr.ToString());
    }
}

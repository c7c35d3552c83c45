using FastVideo.Configs;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Models;
using Xunit;

namespace FastVideo.Tests.Configs;

/// <summary>
/// The behaviours FastVideo's CPU tests of its recipe loader check (fastvideo/tests/train/utils/test_config.py and
/// test_finetune_config_construction.py, main at 2f3d4074), one test each under the same name, each noting where
/// FastVideoSharp differs on purpose.
/// </summary>
public class FastVideoConfigCounterpartTests
{
    private const string Minimal = """
        models:
          student:
            _target_: fastvideo.train.models.wan.WanModel
            init_from: fake/model
        method:
          _target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod
        training: {}
        """;

    private static RunConfig Load(string yaml, params string[] overrides) => FastVideoFormRecipes.Load(yaml, overrides);

    private static RecipeError Fail(string yaml, params string[] overrides) => Assert.Throws<RecipeError>(() => Load(yaml, overrides));

    [Fact]
    public void test_minimal_yaml_loads_happy_path()
    {
        var c = Load(Minimal);
        Assert.Equal("finetune", c.Recipe.Method);   // upstream keeps method["_target_"]; here the class path names the method
        Assert.True(c.Roles.ContainsKey("student"));
        Assert.Empty(c.Callbacks);
        // Differs on purpose: Raw is the resolved recipe with every default (in the recipe:/roles: form), not the file's dict.
        Assert.True(c.Raw.ContainsKey("roles") && c.Raw.ContainsKey("method"));
    }

    [Fact]
    public void test_minimal_yaml_applies_all_defaults()
    {
        var t = Load(Minimal).Training;
        Assert.Equal(1, t.Distributed.NumGpus);
        Assert.Equal(1, t.Distributed.TpSize);
        Assert.Null(t.Distributed.SpSize);            // differs on purpose: null stands for "num_gpus" (upstream resolves it to 1 here)
        Assert.Equal(1, t.Distributed.HsdpReplicateDim);
        Assert.False(t.Distributed.PinCpuMemory);
        Assert.Equal(1, t.Data.TrainBatchSize);
        Assert.Equal(0, t.Data.DataloaderNumWorkers);
        Assert.Equal(0.0, t.Data.TrainingCfgRate);
        Assert.Equal(0, t.Data.Seed);
        Assert.Equal("t2v", t.Data.PreprocessedDataType);
        Assert.Equal(0.0, t.Optimizer.LearningRate);
        Assert.Equal([0.9, 0.999], t.Optimizer.Betas);
        Assert.Equal(0.0, t.Optimizer.WeightDecay);
        Assert.Equal("constant", t.Optimizer.LrScheduler);
        Assert.Equal(0.5, t.Optimizer.MinLrRatio);
        Assert.Equal(0, t.Loop.MaxTrainSteps);
        Assert.Equal(1, t.Loop.GradientAccumulationSteps);
        Assert.Equal("", t.Checkpoint.OutputDir);
        Assert.Equal(0, t.Checkpoint.CheckpointsTotalLimit);
        Assert.Empty(t.Tracker.Trackers);
        Assert.Equal("fastvideo", t.Tracker.ProjectName);
        Assert.Equal("", t.Tracker.RunName);
        Assert.Equal("uniform", t.Model.WeightingScheme);
        Assert.False(t.Model.PreconditionOutputs);
        Assert.Empty(t.Model.MobaConfig);
        Assert.Equal("fp32", t.DitPrecision);
        Assert.Equal(0.0, t.Vsa.Sparsity);
        // Differs on purpose: upstream's pipeline_config is None without a pipeline: section (and then cannot build
        // the preprocessors); here the overrides are all null and the family's defaults apply.
        Assert.Equal(new PipelineConfig(), Load(Minimal).Pipeline with { DitConfig = new DitConfigOverrides() });
    }

    [Fact]
    public void test_full_yaml_populates_all_training_fields()
    {
        var c = Load(Minimal.Replace("training: {}", """
            training:
              distributed: {num_gpus: 4, tp_size: 2, sp_size: 2, hsdp_replicate_dim: 2, hsdp_shard_dim: 2, pin_cpu_memory: true}
              data: {data_path: /some/path, train_batch_size: 2, dataloader_num_workers: 4, training_cfg_rate: 0.1, seed: 42,
                     num_height: 256, num_width: 512, num_latent_t: 8, num_frames: 33}
              optimizer: {learning_rate: 1.0e-4, betas: [0.9, 0.95], weight_decay: 0.01, lr_scheduler: cosine, lr_warmup_steps: 100, min_lr_ratio: 0.1}
              loop: {max_train_steps: 1000, gradient_accumulation_steps: 4}
              checkpoint: {output_dir: /out, training_state_checkpointing_steps: 50, checkpoints_total_limit: 3}
              tracker: {trackers: [tensorboard], project_name: myproj, run_name: myrun}
              vsa: {sparsity: 0.5}
              model: {weighting_scheme: logit_normal, logit_mean: 0.5, logit_std: 1.5, precondition_outputs: true}
              dit_precision: bf16
            """));
        var t = c.Training;
        Assert.Equal(4, t.Distributed.NumGpus);
        Assert.Equal(2, t.Distributed.TpSize);
        Assert.True(t.Distributed.PinCpuMemory);
        Assert.Equal(2, t.Data.TrainBatchSize);
        Assert.Equal([new DataSource("/some/path", 1)], t.Data.DataPath);   // differs on purpose: one folder -> weight 1, not the string
        Assert.Equal(33, t.Data.NumFrames);
        Assert.Equal(42, t.Data.Seed);
        Assert.Equal(1e-4, t.Optimizer.LearningRate);
        Assert.Equal([0.9, 0.95], t.Optimizer.Betas);
        Assert.Equal("cosine", t.Optimizer.LrScheduler);
        Assert.Equal(100, t.Optimizer.LrWarmupSteps);
        Assert.Equal(0.1, t.Optimizer.MinLrRatio);
        Assert.Equal(1000, t.Loop.MaxTrainSteps);
        Assert.Equal(4, t.Loop.GradientAccumulationSteps);
        Assert.Equal("/out", t.Checkpoint.OutputDir);
        Assert.Equal(3, t.Checkpoint.CheckpointsTotalLimit);
        Assert.Equal(["tensorboard"], t.Tracker.Trackers);   // differs on purpose: wandb is not available here (no network)
        Assert.Equal("myproj", t.Tracker.ProjectName);
        Assert.Equal(0.5, t.Vsa.Sparsity);
        Assert.Equal("logit_normal", t.Model.WeightingScheme);
        Assert.True(t.Model.PreconditionOutputs);
        Assert.Equal("bf16", t.DitPrecision);
        // Differs on purpose: VSA, tensor and sequence parallelism load but training refuses them (not implemented;
        // dense attention or plain data parallelism would train something else).
        Assert.Throws<RecipeError>(c.RequireImplemented);
        Assert.Equal(["training.distributed.tp_size", "training.distributed.sp_size", "training.vsa.sparsity"],
            c.Notes.Where(n => n.Kind == RecipeNoteKind.NotImplemented).Select(n => n.KeyPath));
    }

    [Fact]
    public void test_missing_models_raises()
    {
        var e = Fail(Minimal.Replace("models:\n  student:\n    _target_: fastvideo.train.models.wan.WanModel\n    init_from: fake/model\n", ""));
        Assert.Equal("models", e.KeyPath);
    }

    [Fact]
    public void test_missing_method_raises()
    {
        var e = Fail(Minimal.Replace("method:\n  _target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod\n", ""));
        Assert.Equal("method", e.KeyPath);
        Assert.Contains("method._target_", e.Message);
    }

    [Fact]
    public void test_missing_training_raises()
    {
        // As upstream: FastVideo's form requires the section (the recipe:/roles: form does not).
        var e = Fail(Minimal.Replace("training: {}", ""));
        Assert.Equal("run.yaml: training: required section is missing (FastVideo's form requires it; it may be empty: training: {})", e.Message);
    }

    [Fact]
    public void test_models_role_without_target_raises()
    {
        var e = Fail(Minimal.Replace("    _target_: fastvideo.train.models.wan.WanModel\n", ""));
        Assert.Equal("models.student._target_", e.KeyPath);
        Assert.Equal(2, e.Line);
    }

    [Fact]
    public void test_method_without_target_raises()
    {
        var e = Fail(Minimal.Replace("  _target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod", "  some_param: 5"));
        Assert.Equal("method._target_", e.KeyPath);
    }

    [Fact]
    public void test_missing_config_file_raises()
    {
        var path = Path.Combine(TestPaths.TempDir("fv-missing"), "does_not_exist.yaml");
        var e = Assert.Throws<RecipeError>(() => RecipeLoader.Load(path, [], ModelFamilyRegistry.Default));
        Assert.Equal($"{path}: recipe file not found", e.Message);   // a RecipeError (exit 2), where upstream raises FileNotFoundError
    }

    [Theory]
    [InlineData("[0.8, 0.9]", 0.8, 0.9)]
    [InlineData("\"0.9,0.999\"", 0.9, 0.999)]
    public void test_betas_parses_list_and_string_forms(string betas, double b1, double b2)
    {
        var c = Load(Minimal.Replace("training: {}", $"training:\n  optimizer: {{betas: {betas}}}"));
        Assert.Equal([b1, b2], c.Training.Optimizer.Betas);
    }

    [Fact]
    public void test_pipeline_quant_config_resolves_for_load_and_export()
    {
        // The name loads and survives the resolved recipe (saved with checkpoints) and a conversion; differs on
        // purpose: NVFP4 QAT is not implemented, so training refuses it rather than train without quantization.
        var yaml = Minimal.Replace("fake/model", "FastVideo/LTX2-Distilled-Diffusers") + "\npipeline:\n  dit_config: {quant_config: nvfp4_qat_train}\n";
        var c = Load(yaml);
        Assert.Equal("nvfp4_qat_train", c.Pipeline.DitConfig.QuantConfig);
        var again = RecipeLoader.LoadText(RecipePrinter.ToYaml(c.Raw), "raw.yaml", [], ModelFamilyRegistry.Default);
        Assert.Equal("nvfp4_qat_train", again.Pipeline.DitConfig.QuantConfig);
        Assert.Equal("pipeline.dit_config.quant_config", Assert.Throws<RecipeError>(c.RequireImplemented).KeyPath);
    }

    [Fact]
    public void test_pipeline_quant_config_rejects_unknown_name()
    {
        var e = Fail(Minimal + "\npipeline:\n  dit_config: {quant_config: not_a_quantization_method}\n");
        Assert.Equal("pipeline.dit_config.quant_config", e.KeyPath);
        Assert.Contains("invalid value \"not_a_quantization_method\"", e.Message);
    }

    [Fact]
    public void test_data_path_mapping_parses_repeat_counts()
    {
        var c = Load(Minimal.Replace("training: {}", "training:\n  data:\n    data_path:\n      data/path1: 1\n      data/path2: 2"));
        Assert.Equal([new DataSource("data/path1", 1), new DataSource("data/path2", 2)], c.Training.Data.DataPath);
    }

    [Fact]
    public void test_dotted_override_replaces_mapping_data_path()
    {
        var c = Load(Minimal.Replace("training: {}", "training:\n  data:\n    data_path:\n      data/path1: 1\n      data/path2: 2"),
            "--training.data.data_path=data/only");
        Assert.Equal([new DataSource("data/only", 1)], c.Training.Data.DataPath);
    }

    [Fact]
    public void test_dotted_overrides_apply_with_type_coercion()
    {
        var c = Load(Minimal, "--training.distributed.num_gpus=4", "--training.optimizer.learning_rate=1e-3",
            "--training.distributed.pin_cpu_memory=true", "--training.tracker.project_name=overridden");
        Assert.Equal(4, c.Training.Distributed.NumGpus);
        Assert.Equal(1e-3, c.Training.Optimizer.LearningRate);
        Assert.True(c.Training.Distributed.PinCpuMemory);
        Assert.Equal("overridden", c.Training.Tracker.ProjectName);
        // An error in an override's value names the flag it came from.
        var e = Fail(Minimal, "--training.loop.max_train_steps=many");
        Assert.Equal("--training.loop.max_train_steps: training.loop.max_train_steps: expected an integer, got \"many\"", e.Message);
    }

    [Fact]
    public void test_dotted_overrides_accept_separate_value_token()
    {
        var (args, overrides) = Cli.DottedOverrides.Extract(["train", "--config", "run.yaml", "--training.distributed.num_gpus", "8", "--dry-run"]);
        Assert.Equal(["train", "--config", "run.yaml", "--dry-run"], args);
        Assert.Equal(["--training.distributed.num_gpus=8"], overrides);
        Assert.Equal(8, Load(Minimal, [.. overrides]).Training.Distributed.NumGpus);
        // The value is the next word as it is, even when it starts with --, as upstream.
        Assert.Equal(["--training.tracker.run_name=--x"], Cli.DottedOverrides.Extract(["train", "--training.tracker.run_name", "--x"]).Overrides);
        Assert.Throws<UserError>(() => Cli.DottedOverrides.Extract(["train", "r.yaml", "--training.loop.max_train_steps"]));
    }

    [Fact]
    public void test_overrides_create_intermediate_keys()
    {
        var c = Load(Minimal, "--training.checkpoint.checkpoints_total_limit=5");
        Assert.Equal(5, c.Training.Checkpoint.CheckpointsTotalLimit);
    }

    [Fact]
    public void test_hsdp_shard_dim_defaults_to_num_gpus()
    {
        // Differs on purpose: the typed value stays null, which stands for num_gpus (upstream resolves it to 4); this
        // single-process trainer reads neither.
        var d = Load(Minimal.Replace("training: {}", "training:\n  distributed: {num_gpus: 4}")).Training.Distributed;
        Assert.Equal(4, d.NumGpus);
        Assert.Null(d.HsdpShardDim);
        Assert.Null(d.SpSize);
    }

    [Fact]
    public void test_model_path_derived_from_student_init_from()
    {
        // Differs on purpose: model_path stays null, which stands for the student's init_from (upstream copies it).
        var c = Load(Minimal);
        Assert.Null(c.Training.ModelPath);
        Assert.Equal("fake/model", c.Roles["student"].InitFrom);
    }

    [Fact]
    public void test_callbacks_default_to_empty_when_absent() => Assert.Empty(Load(Minimal).Callbacks);

    [Fact]
    public void test_callbacks_passed_through_when_present()
    {
        var c = Load(Minimal + "\ncallbacks:\n  grad_clip:\n    _target_: fastvideo.train.callbacks.grad_clip.GradNormClipCallback\n    max_grad_norm: 1.0\n");
        Assert.Equal(["grad_clip"], c.Callbacks.Select(kv => kv.Key));
        Assert.Equal(1.0, c.CallbackOptions<GradClipOptions>("grad_clip")!.MaxGradNorm);   // typed, not a dict
    }

    /// <summary>test_finetune_config_construction.py: every shipped fine-tuning recipe loads with a resolved pipeline
    /// and a class-path-shaped student target. Here: our own recipes in FastVideo's form (examples/recipes/fastvideo).</summary>
    [Fact]
    public void test_fine_tuning_recipe_constructs()
    {
        var recipes = Directory.GetFiles(Path.Combine(TestPaths.RepoRoot, "examples", "recipes", "fastvideo"), "*finetune*.yaml");
        Assert.True(recipes.Length >= 2);
        foreach (var recipe in recipes)
        {
            var c = RecipeLoader.Load(recipe, [], ModelFamilyRegistry.Default);
            Assert.Equal("finetune", c.Recipe.Method);
            var family = c.Roles["student"].Family!;
            Assert.Contains('.', ModelFamilyRegistry.Default.ClassPathOf(family));
            Assert.NotNull(c.Pipeline.FlowShift);
        }
    }
}

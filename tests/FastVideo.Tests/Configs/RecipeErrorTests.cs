using FastVideo.Configs;
using Xunit;
using static FastVideo.Tests.Configs.RecipeTestSupport;

namespace FastVideo.Tests.Configs;

/// <summary>Every kind of recipe mistake names the file and line (or --set) and the key path.</summary>
public class RecipeErrorTests
{
    [Fact]
    public void UnknownKeyDeepInTrainingSuggestsTheNearestName()
    {
        var yaml = Minimal + "\ntraining:\n  optimizer:\n    learning_rat: 1.0e-4\n";
        var e = Fail(yaml);
        int line = LineOf(yaml, "learning_rat");
        Assert.Equal($"recipe.yaml:{line}: training.optimizer.learning_rat: unknown key; did you mean 'learning_rate'?", e.Message);
        Assert.Equal("training.optimizer.learning_rat", e.KeyPath);
        Assert.Equal(line, e.Line);
        Assert.Equal("recipe.yaml", e.Source);
        Assert.IsAssignableFrom<UserError>(e);
    }

    [Fact]
    public void UnknownTopLevelSectionSuggestsTheNearestSection()
    {
        var yaml = Minimal + "\ntrainig:\n  loop: {max_train_steps: 3}\n";
        var e = Fail(yaml);
        Assert.Equal($"recipe.yaml:{LineOf(yaml, "trainig")}: trainig: unknown key; did you mean 'training'?", e.Message);
    }

    [Fact]
    public void UnknownRoleOptionSuggestsTheNearestOption()
    {
        var yaml = """
            recipe: {family: wan}
            roles:
              student:
                init_from: Org/Model
                flow_shfit: 5.0
            """;
        var e = Fail(yaml);
        Assert.Equal($"recipe.yaml:5: roles.student.flow_shfit: unknown key; did you mean 'flow_shift'?", e.Message);
    }

    [Fact]
    public void RoleOptionsAreCheckedAgainstTheRolesOwnFamily()
    {
        // num_frames_per_block exists only on the wan_causal record.
        var yaml = """
            recipe: {family: wan}
            roles:
              student: {init_from: Org/Model, num_frames_per_block: 2}
            """;
        var e = Fail(yaml);
        Assert.StartsWith("recipe.yaml:3: roles.student.num_frames_per_block: unknown key", e.Message);

        var ok = Load(yaml.Replace("{init_from", "{family: wan_causal, init_from"));
        Assert.Equal(2, Assert.IsType<WanCausalRoleConfigForTest>(ok.Roles["student"]).NumFramesPerBlock);
    }

    [Fact]
    public void UnknownKeyWithNoCloseNameListsTheValidKeys()
    {
        var e = Fail(Minimal + "\ntraining:\n  loop: {zzz: 1}\n");
        Assert.Contains("training.loop.zzz: unknown key (valid keys: max_train_steps, gradient_accumulation_steps)", e.Message);
        Assert.DoesNotContain("did you mean", e.Message);
    }

    [Fact]
    public void CamelCaseKeySuggestsItsSnakeCaseForm()
    {
        var e = Fail(Minimal + "\ntraining:\n  optimizer: {learningRate: 0.1}\n");
        Assert.Contains("training.optimizer.learningRate: unknown key; did you mean 'learning_rate'?", e.Message);
    }

    [Fact]
    public void WrongTypeNamesTheExpectedTypeAndTheValue()
    {
        var yaml = Minimal + "\ntraining:\n  optimizer:\n    learning_rate: abc\n";
        var e = Fail(yaml);
        Assert.Equal($"recipe.yaml:{LineOf(yaml, "learning_rate")}: training.optimizer.learning_rate: expected a number, got \"abc\"",
            e.Message);
    }

    [Theory]
    [InlineData("training:\n  loop: {max_train_steps: 1.5}", "training.loop.max_train_steps: expected an integer, got 1.5")]
    [InlineData("training:\n  loop: {max_train_steps: \"10\"}", "training.loop.max_train_steps: expected an integer, got \"10\"")]
    [InlineData("training:\n  data: {drop_last: yes}", "training.data.drop_last: expected true or false, got \"yes\"")]
    [InlineData("training:\n  tracker: {trackers: wandb}", "training.tracker.trackers: expected a list, got \"wandb\"")]
    [InlineData("training:\n  optimizer: 3", "training.optimizer: expected a map, got 3")]
    [InlineData("training:\n  distributed: {num_gpus: 99999999999}", "training.distributed.num_gpus: expected an integer in [")]
    [InlineData("training:\n  loop: {max_train_steps: null}", "training.loop.max_train_steps: expected an integer, got null")]
    [InlineData("method: [1, 2]", "method: expected a map, got a list")]
    [InlineData("callbacks: {ema: 0.99}", "callbacks.ema: expected a map, got 0.99")]
    [InlineData("training:\n  optimizer: {betas: [0.9]}", "training.optimizer.betas: expected two numbers, as [b1, b2] or \"b1,b2\", got a list")]
    [InlineData("training:\n  optimizer: {betas: \"0.9;0.99\"}", "training.optimizer.betas: expected two numbers")]
    [InlineData("training:\n  data: {data_path: {a: 0}}", "training.data.data_path.a: expected a positive integer weight, got 0")]
    [InlineData("training:\n  data: {data_path: {a: 1.5}}", "training.data.data_path.a: expected a positive integer weight, got 1.5")]
    [InlineData("training:\n  data: {data_path: \"\"}", "training.data.data_path: expected a folder path, got an empty string")]
    [InlineData("training:\n  data: {data_path: [a, [b]]}", "training.data.data_path[1]: expected a folder path, got a list")]
    [InlineData("training:\n  tracker: {trackers: [wandb, [x]]}", "training.tracker.trackers[1]: expected a string, got a list")]
    public void WrongTypesAreReportedWithTheLine(string section, string expected)
    {
        var yaml = Minimal + "\n" + section + "\n";
        var e = Fail(yaml);
        Assert.Contains(expected, e.Message);
        Assert.Equal(LineOf(yaml, section.Split('\n')[^1].Trim()), e.Line);
    }

    [Fact]
    public void WrongTypeFromAnOverrideNamesSetInsteadOfALine()
    {
        var e = Fail(Minimal, "training.loop.max_train_steps=abc");
        Assert.Equal("--set: training.loop.max_train_steps: expected an integer, got \"abc\"", e.Message);
        Assert.Null(e.Line);
        Assert.Equal("--set", e.Source);
    }

    [Fact]
    public void MissingInitFromPointsAtTheRole()
    {
        var yaml = """
            recipe: {family: wan}
            roles:
              student: {init_from: Org/Model}
              critic:
                trainable: true
            """;
        var e = Fail(yaml);
        Assert.Equal("recipe.yaml:5: roles.critic.init_from: required value is missing", e.Message);
        Assert.Equal("roles.critic.init_from", e.KeyPath);
    }

    [Fact]
    public void EmptyInitFromIsMissing()
    {
        var e = Fail("recipe: {family: wan}\nroles:\n  student:\n    init_from: \"\"\n");
        Assert.Equal("recipe.yaml:4: roles.student.init_from: required value is missing", e.Message);
    }

    [Fact]
    public void MissingRolesSectionIsReported()
    {
        var e = Fail("recipe: {family: wan, method: finetune}\n");
        Assert.Equal("recipe.yaml: roles: required value is missing (at least one role, e.g. roles.student.init_from)", e.Message);
        Assert.Null(e.Line);

        Assert.Contains("recipe.yaml:2: roles: expected at least one role", Fail("recipe: {family: wan}\nroles: {}\n").Message);
        Assert.Contains("recipe.yaml:2: roles: expected a map of role name -> options, got a list",
            Fail("recipe: {family: wan}\nroles: [student]\n").Message);
    }

    [Fact]
    public void EmptyRecipeMethodIsRejectedButAbsentIsFine()
    {
        Assert.Contains("recipe.yaml:1: recipe.method: expected a method name, got an empty string",
            Fail("recipe: {family: wan, method: ''}\nroles: {student: {init_from: m}}\n").Message);
        Assert.Null(Load(Minimal).Recipe.Method);
    }

    [Fact]
    public void UnknownFamilySuggestsTheNearestKnownFamily()
    {
        var yaml = """
            recipe: {family: wan}
            roles:
              student: {init_from: Org/Model}
              critic: {family: wann, init_from: Org/Model}
            """;
        var e = Fail(yaml);
        Assert.Equal("recipe.yaml:4: roles.critic.family: unknown family 'wann'; did you mean 'wan'? (known: wan, wan_causal)",
            e.Message);
    }

    [Fact]
    public void UnknownRecipeFamilyIsReportedAtRecipeFamily()
    {
        var e = Fail("recipe:\n  family: hunyan_causal_x\nroles:\n  student: {init_from: m}\n");
        Assert.Equal("recipe.yaml:2: recipe.family: unknown family 'hunyan_causal_x' (known: wan, wan_causal)", e.Message);
    }

    [Fact]
    public void RoleWithoutFamilyAndNoRecipeFamilyIsReported()
    {
        var yaml = """
            recipe: {method: finetune}
            roles:
              student: {init_from: Org/Model}
            """;
        var e = Fail(yaml);
        Assert.Equal("recipe.yaml:3: roles.student.family: required value is missing (set it on the role or set recipe.family)",
            e.Message);
    }

    [Theory]
    [InlineData("training.loop.max_train_steps", "no '='")]
    [InlineData("=5", "empty key")]
    [InlineData("training..loop=5", "empty key segment")]
    public void MalformedOverrideIsNamed(string item, string why)
    {
        var e = Fail(Minimal, "training.loop.max_train_steps=1", item);
        Assert.Equal($"--set: malformed override '{item}' ({why}); expected KEY=VALUE, e.g. training.loop.max_train_steps=10",
            e.Message);
        Assert.Equal("--set", e.Source);
        Assert.Null(e.Line);
    }

    [Theory]
    [InlineData("training:\n  optimizer: {lr_scheduler: cosin}", "training.optimizer.lr_scheduler",
        "invalid value \"cosin\"; did you mean 'cosine'? (expected one of: constant, constant_with_warmup, linear, cosine,")]
    [InlineData("training:\n  dit_precision: fp8", "training.dit_precision",
        "invalid value \"fp8\" (expected one of: fp32, bf16, fp16)")]
    [InlineData("training:\n  model: {weighting_scheme: logit_norm}", "training.model.weighting_scheme",
        "did you mean 'logit_normal'?")]
    [InlineData("training:\n  model: {enable_gradient_checkpointing_type: ful}", "training.model.enable_gradient_checkpointing_type",
        "invalid value \"ful\"; did you mean 'full'?")]
    public void InvalidEnumValueIsReported(string section, string path, string expected)
    {
        var yaml = Minimal + "\n" + section + "\n";
        var e = Fail(yaml);
        Assert.Equal(path, e.KeyPath);
        Assert.Equal(yaml.Split('\n').Length - 1, e.Line); // the section's last line holds the value
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void InvalidRoleCheckpointingTypeIsReportedOnTheRole()
    {
        var yaml = "recipe: {family: wan}\nroles:\n  student:\n    init_from: m\n    enable_gradient_checkpointing_type: everything\n";
        var e = Fail(yaml);
        Assert.StartsWith("recipe.yaml:5: roles.student.enable_gradient_checkpointing_type: invalid value \"everything\"", e.Message);
    }

    [Theory]
    [InlineData("full")]
    [InlineData("ops")]
    [InlineData("block_skip")]
    public void CheckpointingTypesAreAcceptedOnTrainingModelAndRoles(string type)
    {
        var config = Load(Minimal + $"\ntraining:\n  model: {{enable_gradient_checkpointing_type: {type}}}\n");
        Assert.Equal(type, config.Training.Model.EnableGradientCheckpointingType);
        config = Load(Minimal + $"\n    enable_gradient_checkpointing_type: {type}\n");
        Assert.Equal(type, config.Roles["student"].EnableGradientCheckpointingType);
    }

    [Theory]
    [InlineData("training:\n  data: {train_batch_size: 0}", "training.data.train_batch_size: must be >= 1, got 0")]
    [InlineData("training:\n  loop: {gradient_accumulation_steps: 0}", "training.loop.gradient_accumulation_steps: must be >= 1, got 0")]
    [InlineData("training:\n  loop: {max_train_steps: -1}", "training.loop.max_train_steps: must be >= 0, got -1")]
    [InlineData("training:\n  data: {training_cfg_rate: 1.5}", "training.data.training_cfg_rate: must be between 0 and 1, got 1.5")]
    [InlineData("training:\n  optimizer: {betas: [0.9, 1.0]}", "training.optimizer.betas: each beta must be in [0, 1), got 1")]
    [InlineData("training:\n  optimizer: {learning_rate: -1.0e-4}", "training.optimizer.learning_rate: must be >= 0, got -0.0001")]
    [InlineData("training:\n  optimizer: {learning_rate: .nan}", "training.optimizer.learning_rate: must be >= 0, got NaN")]
    public void OutOfRangeValuesAreReported(string section, string expected)
    {
        var yaml = Minimal + "\n" + section + "\n";
        var e = Fail(yaml);
        Assert.Equal($"recipe.yaml:{yaml.Split('\n').Length - 1}: {expected}", e.Message);
    }

    [Fact]
    public void InvalidValueFromAnOverrideNamesSet()
    {
        var e = Fail(Minimal, "training.optimizer.lr_scheduler=cosin");
        Assert.StartsWith("--set: training.optimizer.lr_scheduler: invalid value \"cosin\"; did you mean 'cosine'?", e.Message);
    }

    [Fact]
    public void YamlSyntaxErrorIsReportedWithItsLine()
    {
        var e = Fail("recipe: {family: wan}\nroles:\n  student: {init_from: m\n");
        Assert.StartsWith("recipe.yaml:", e.Message);
        Assert.Contains("invalid YAML", e.Message);
        Assert.NotNull(e.Line);
    }

    [Fact]
    public void UnclosedFlowListIsReportedNearItsLine()
    {
        // YamlDotNet throws a non-YAML exception for this one; it must still become a RecipeError.
        var e = Fail("recipe: {family: wan}\nroles:\n  student: {init_from: m}\nmethod:\n  steps: [1, 2\n  other: 3\n");
        Assert.StartsWith("recipe.yaml:5: invalid YAML", e.Message);
    }

    [Fact]
    public void TabIndentationIsReportedAtTheTabLine()
    {
        var e = Fail("recipe: {family: wan}\nroles:\n  student: {init_from: m}\n\tbad: 1\n");
        Assert.StartsWith("recipe.yaml:4: invalid YAML", e.Message);
        Assert.Contains("tab", e.Message);
    }

    [Fact]
    public void DuplicateKeyIsReported()
    {
        var e = Fail("recipe: {family: wan}\nroles:\n  student: {init_from: m}\nroles:\n  teacher: {init_from: t}\n");
        Assert.StartsWith("recipe.yaml:4:", e.Message);
        Assert.Contains("uplicate key", e.Message);
    }

    [Fact]
    public void TopLevelMustBeAMap()
    {
        var e = Fail("- a\n- b\n");
        Assert.StartsWith("recipe.yaml:1: expected a map of sections", e.Message);
    }

    [Fact]
    public void MissingFileIsARecipeError()
    {
        var path = Path.Combine(Path.GetTempPath(), $"no-such-recipe-{Guid.NewGuid():N}.yaml");
        var e = Assert.Throws<RecipeError>(() => RecipeLoader.Load(path, [], TestFamilies.Instance));
        Assert.Equal($"{path}: recipe file not found", e.Message);
    }

    [Theory]
    [InlineData("training:\n  vsa: {sparsity: 0.9}\n", "training.vsa.sparsity", "video sparse attention (VSA) is not implemented")]
    [InlineData("training:\n  data: {preprocessed_data_type: text_only}\n", "training.data.preprocessed_data_type", "'text_only' rows are not implemented")]
    [InlineData("pipeline:\n  dit_config: {quant_config: nvfp4_qat_train}\n", "pipeline.dit_config.quant_config", "quantization 'nvfp4_qat_train' of the transformer is not implemented")]
    [InlineData("roles:\n  student: {init_from: Org/Model, attention_backend: attn_qat_train}\n", "roles.student.attention_backend", "the ATTN_QAT_TRAIN attention backend is not implemented")]
    [InlineData("roles:\n  student: {init_from: loayrashid/TurboWan2.1-T2V-1.3B-Diffusers}\n", "roles.student.init_from", "with SLA attention, which is not implemented")]
    public void OptionsThatAreNotImplementedLoadButTrainingRefusesThem(string section, string key, string what)
    {
        // The recipe loads (config show prints it, with the note); training refuses it at the key's line.
        var yaml = section.StartsWith("roles:") ? "recipe: {family: wan}\n" + section : Minimal + "\n" + section;
        var config = Load(yaml);
        var note = Assert.Single(config.Notes, n => n.Kind == RecipeNoteKind.NotImplemented);
        Assert.Equal(key, note.KeyPath);
        Assert.Contains(what, note.Detail);
        var e = Assert.Throws<RecipeError>(config.RequireImplemented);
        Assert.Equal(key, e.KeyPath);
        Assert.StartsWith($"recipe.yaml:{note.Line}: {key}: ", e.Message);
        Assert.Contains("training refuses this recipe", e.Message);
        Assert.NotNull(note.Line);
    }

    [Theory]
    [InlineData("roles:\n  student: {init_from: m, attention_backend: TORCH_SDPA}\n")]
    [InlineData("roles:\n  student: {init_from: m, attention_backend: flash_attn}\n")]
    [InlineData("roles:\n  student: {init_from: m, attention_backend: null}\n")]
    [InlineData("training:\n  vsa: {sparsity: 0.0, cache_tile_buf: true}\n")]
    public void ExactAttentionAndDenseVsaSettingsTrain(string section)
    {
        var yaml = section.StartsWith("roles:") ? "recipe: {family: wan}\n" + section : Minimal + "\n" + section;
        var config = Load(yaml);
        Assert.Empty(config.Notes);
        config.RequireImplemented();
    }

    [Theory]
    [InlineData("roles:\n  student: {init_from: m, attention_backend: FLASH_ATN}\n", "roles.student.attention_backend", "did you mean 'FLASH_ATTN'?")]
    [InlineData("pipeline:\n  dit_config: {quant_config: not_a_quantization_method}\n", "pipeline.dit_config.quant_config", "expected one of: AbsMaxFP8, FP8, NVFP4")]
    [InlineData("training:\n  data: {preprocessed_data_type: t2i}\n", "training.data.preprocessed_data_type", "expected one of: t2v, t2va, text_only")]
    public void UnknownFastVideoNamesAreErrors(string section, string key, string detail)
    {
        var yaml = section.StartsWith("roles:") ? "recipe: {family: wan}\n" + section : Minimal + "\n" + section;
        var e = Fail(yaml);
        Assert.Equal(key, e.KeyPath);
        Assert.Contains(detail, e.Message);
    }
}

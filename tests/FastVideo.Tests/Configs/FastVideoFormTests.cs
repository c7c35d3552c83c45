using FastVideo.Configs;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using FastVideo.Train.Methods.DistributionMatching;
using FastVideo.Train.Models;
using FastVideo.Train.Models.Wan;
using Xunit;
using static FastVideo.Tests.Configs.FastVideoFormRecipes;

namespace FastVideo.Tests.Configs;

/// <summary>FastVideo's recipe form (models/method/callbacks with _target_) loading into the same typed records.</summary>
public class FastVideoFormTests
{
    [Theory]
    [MemberData(nameof(FastVideoFormRecipes.All), MemberType = typeof(FastVideoFormRecipes))]
    public void EveryValueOfTheRecipeIsInTheTypedRecipe(string method, string yaml)
    {
        var config = Load(yaml);
        Assert.Equal(RecipeForm.FastVideo, config.Form);
        Assert.Equal(method is "lora" or "list" or "hunyuan_finetune" or "hunyuan_lora" ? "finetune" : method, config.Recipe.Method);
        CheckTypedValuesAgainstYaml(yaml, config);
    }

    [Fact]
    public void HunyuanRecipesBindIntoTheHunyuanFamilyWithTheirLoraTargetsNoted()
    {
        var c = Load(HunyuanFinetune);
        var student = Assert.IsType<FastVideo.Train.Models.Hunyuan.HunyuanRoleConfig>(c.Roles["student"]);
        Assert.Equal("hunyuan", student.Family);
        Assert.Equal("full", student.EnableGradientCheckpointingType);
        Assert.Equal(7.0, c.Pipeline.FlowShift);
        Assert.Equal("fastvideo.pipelines.basic.hunyuan.hunyuan_pipeline.HunyuanVideoPipeline",
            Assert.IsType<ValidationOptions>(c.Callbacks.Single(cb => cb.Key == "validation").Value).PipelineTarget);
        Assert.DoesNotContain(c.Notes, n => n.KeyPath.Contains("lora"));
        // FastVideo trains with its DiT's default guidance (6016) and validates with 6000; one value here.
        var guidance = Assert.Single(c.Notes, n => n.KeyPath == "models.student.embedded_guidance_scale");
        Assert.Equal(RecipeNoteKind.DiffersFromFastVideo, guidance.Kind);
        Assert.Contains("embeds 6016 (6.016 x 1000) there", guidance.Detail);
        Assert.EndsWith("here training and sampling both embed embedded_guidance_scale x 1000 = 6000", guidance.Detail);
        Assert.EndsWith("= 3500", Assert.Single(Load(HunyuanFinetune.Replace("trainable: true\n", "trainable: true\n    embedded_guidance_scale: 3.5\n")).Notes,
            n => n.KeyPath == "models.student.embedded_guidance_scale").Detail);

        c = Load(HunyuanLora);
        student = Assert.IsType<FastVideo.Train.Models.Hunyuan.HunyuanRoleConfig>(c.Roles["student"]);
        Assert.True(student.Lora.Enable && c.Training.Model.PreconditionOutputs);
        var notes = c.Notes.Where(n => n.KeyPath == "models.student.lora.target_modules").ToList();
        Assert.Equal(2, notes.Count);
        Assert.All(notes, n => Assert.Equal((RecipeNoteKind.DiffersFromFastVideo, RecipeTestSupport.LineOf(HunyuanLora, "- img_attn_qkv")), (n.Kind, n.Line)));   // the value's line
        Assert.Contains("fuses img_attn_qkv (attn.to_q, to_k, to_v); txt_attn_qkv (attn.add_q_proj, add_k_proj, add_v_proj) and gives the fused layer " +
                        "one rank-16 adapter", notes[0].Detail);
        Assert.StartsWith("self_attn_qkv, self_attn_proj name layers of the token refiner (FastVideo's txt_in)", notes[1].Detail);
        // Diffusers' names and FastVideo's unfused ones need no note.
        Assert.DoesNotContain(Load(HunyuanLora.Replace("img_attn_qkv", "to_q").Replace("txt_attn_qkv", "add_q_proj").Replace("self_attn_qkv", "to_k")
            .Replace("self_attn_proj", "to_add_out")).Notes, n => n.KeyPath.Contains("lora"));
    }

    [Fact]
    public void SelfForcingsAttnKindIsIgnoredWithAWarning()
    {
        var c = Load(SelfForcing);
        var warning = Assert.Single(c.Notes, n => n.Kind == RecipeNoteKind.Ignored);
        Assert.Equal($"warning: run.yaml:{RecipeTestSupport.LineOf(SelfForcing, "attn_kind")}: method.attn_kind: ignored, as FastVideo does " +
                     "(FastVideo's SelfForcingMethod does not read it)", warning.ToString());
        Assert.IsType<WanCausalRoleConfig>(c.Roles["student"]);
    }

    [Fact]
    public void Dmd2RecipeBindsIntoTheFamiliesMethodAndCallbacksItsClassPathsName()
    {
        var c = Load(Dmd2);
        Assert.Equal("dmd2", c.Recipe.Method);
        Assert.Null(c.Recipe.Family);
        Assert.Equal(["student", "teacher", "critic"], c.Roles.Keys);
        var student = Assert.IsType<WanCausalRoleConfig>(c.Roles["student"]);
        Assert.Equal("wan_causal", student.Family);
        Assert.Equal(3, student.NumFramesPerBlock);
        Assert.Equal("outputs/ode_init/transformer/model.safetensors", student.TransformerOverrideSafetensor);
        Assert.Equal("wan", c.Roles["teacher"].Family);   // the package path fastvideo.train.models.wan.wan.WanModel
        Assert.Equal(typeof(RoleConfig), c.Roles["teacher"].GetType());
        Assert.False(c.Roles["teacher"].Trainable);
        Assert.True(c.Roles["teacher"].DisableCustomInitWeights);
        Assert.Equal("FLASH_ATTN", c.Roles["teacher"].AttentionBackend);
        Assert.Equal(5.0, c.Roles["teacher"].FlowShift);

        var m = c.MethodOptions<DMD2Options>();
        Assert.Equal(RolloutMode.DataLatent, m.RolloutMode);
        Assert.Equal([1000, 757, 522], m.DmdDenoisingSteps);
        Assert.Equal(0.02, m.MinTimestepRatio);
        Assert.Equal(0.98, m.MaxTimestepRatio);
        Assert.Equal(8e-6, m.FakeScoreLearningRate);

        var t = c.Training;
        Assert.Equal(1e-5, t.Optimizer.LearningRate);   // written 1e-5 (a string to PyYAML, which FastVideo float()s)
        Assert.Equal([new DataSource("data/Wan-Syn_77x448x832_600k", 1)], t.Data.DataPath);
        Assert.Equal("my-team", t.Tracker.Entity);
        Assert.Equal("Org/Student-Diffusers", t.ModelPath);
        Assert.Equal(-1, c.Pipeline.DitConfig.LocalAttnSize);
        Assert.Equal(0, c.Pipeline.DitConfig.SinkSize);

        Assert.Equal(["grad_clip", "validation", "ema"], c.Callbacks.Select(kv => kv.Key));
        var v = c.CallbackOptions<ValidationOptions>("validation")!;
        Assert.Equal(69, v.NumFrames);
        Assert.Equal([1000, 757, 522], v.SamplingTimesteps);
        Assert.Equal("fastvideo.pipelines.basic.wan.wan_causal_dmd_pipeline.WanCausalDMDPipeline", v.PipelineTarget);
        Assert.Equal(new EmaOptions { Decay = 0.98, StartIter = 0 }, c.CallbackOptions<EmaOptions>("ema"));
        c.RequireImplemented();   // everything it asks for trains here
    }

    [Fact]
    public void KeysFastVideoIgnoresLoadWithAWarningNamingKeyAndLine()
    {
        var c = Load(Dmd2);
        var warnings = c.Notes.Where(n => n.Kind == RecipeNoteKind.Ignored).ToList();
        Assert.Equal(["training.vsa.decay_rate", "training.vsa.decay_interval_steps"], warnings.Select(n => n.KeyPath));
        Assert.Equal($"warning: run.yaml:{RecipeTestSupport.LineOf(Dmd2, "decay_rate")}: training.vsa.decay_rate: ignored, as FastVideo does " +
                     "(FastVideo's training config has no such key)", warnings[0].ToString());
    }

    [Fact]
    public void MethodKeysFastVideoIgnoresAreDroppedOnlyForTheMethodThatIgnoresThem()
    {
        // FastVideo's SelfForcingMethod does not read method.attn_kind (its VSA recipe sets it). A registry of its own
        // holds a stand-in self_forcing (DMD2's options under that name and class path), so this does not depend on the
        // built-in one.
        var methods = new MethodRegistry();
        methods.Register(DMD2Method.Descriptor with
        {
            Name = "self_forcing", ClassPaths = ["fastvideo.train.methods.distribution_matching.self_forcing.SelfForcingMethod"],
        });
        var yaml = Dmd2.Replace("distribution_matching.dmd2.DMD2Method", "distribution_matching.self_forcing.SelfForcingMethod")
            .Replace("  rollout_mode: data_latent", "  rollout_mode: data_latent\n  attn_kind: vsa");
        var c = RecipeLoader.LoadText(yaml, "run.yaml", [], ModelFamilyRegistry.Default, methods);
        Assert.Contains(c.Notes, n => n is { Kind: RecipeNoteKind.Ignored, KeyPath: "method.attn_kind" } && n.Detail.Contains("SelfForcingMethod does not read it"));
        // For DMD2 it is not one of FastVideo's ignored keys: an unknown key, as any other.
        var e = Assert.Throws<RecipeError>(() => Load(Dmd2.Replace("  rollout_mode: data_latent", "  rollout_mode: data_latent\n  attn_kind: vsa")));
        Assert.Equal("method.attn_kind", e.KeyPath);
    }

    [Fact]
    public void OtherUnknownKeysStayErrorsWithASuggestion()
    {
        var e = Assert.Throws<RecipeError>(() => Load(Dmd2.Replace("lr_power: 0.0", "lr_powr: 0.0")));
        Assert.Equal($"run.yaml:{RecipeTestSupport.LineOf(Dmd2, "lr_power")}: training.optimizer.lr_powr: unknown key; did you mean 'lr_power'?", e.Message);
        e = Assert.Throws<RecipeError>(() => Load(Dmd2.Replace("disable_custom_init_weights: true\n    attention_backend: FLASH_ATTN",
            "disable_custom_init_weight: true\n    attention_backend: FLASH_ATTN")));
        Assert.Equal("models.teacher.disable_custom_init_weight", e.KeyPath);
        Assert.Contains("did you mean 'disable_custom_init_weights'?", e.Message);
        e = Assert.Throws<RecipeError>(() => Load(Dmd2.Replace("fake_score_betas:", "fake_score_beta:")));
        Assert.Contains("method.fake_score_beta: unknown key; did you mean 'fake_score_betas'?", e.Message);
        // FastVideo ignores unknown top-level keys; here they are errors too.
        e = Assert.Throws<RecipeError>(() => Load(Dmd2 + "\ncallback:\n  ema: {}\n"));
        Assert.Equal("callback: unknown key; did you mean 'callbacks'?", e.Message[(e.Message.IndexOf(' ') + 1)..]);
    }

    [Fact]
    public void FalsyValuesFastVideoReplacesAreKeptAndNoted()
    {
        // FastVideo's int(x or default) makes min_lr_ratio: 0 into 0.5 and project_name: "" into "fastvideo".
        var c = Load(ListFinetune.Replace("optimizer: {learning_rate: 2.0e-6}", "optimizer: {learning_rate: 2.0e-6, min_lr_ratio: 0}\n  tracker: {project_name: \"\"}"));
        Assert.Equal(0.0, c.Training.Optimizer.MinLrRatio);
        Assert.Equal("", c.Training.Tracker.ProjectName);
        var notes = c.Notes.Where(n => n.Kind == RecipeNoteKind.DiffersFromFastVideo).Select(n => n.ToString()).ToList();
        Assert.Contains("differs from FastVideo: run.yaml:7: training.optimizer.min_lr_ratio: 0 is kept as written; FastVideo replaces a falsy value by its default (0.5)", notes);
        Assert.Contains("differs from FastVideo: run.yaml:8: training.tracker.project_name: \"\" is kept as written; FastVideo replaces a falsy value by its default (fastvideo)", notes);
        // A falsy value whose FastVideo default is falsy too means the same: no note.
        Assert.DoesNotContain(Load(ListFinetune.Replace("{learning_rate: 2.0e-6}", "{learning_rate: 2.0e-6, weight_decay: 0}")).Notes,
            n => n.KeyPath.Contains("weight_decay"));
    }

    [Fact]
    public void NullInTrainingMeansTheDefaultAsInFastVideo()
    {
        var c = Load(ListFinetune.Replace("checkpoint: {resume_from_checkpoint: latest}",
            "checkpoint: {resume_from_checkpoint: null, output_dir: null}\n  dit_precision: null\n  model: null"));
        Assert.Equal("", c.Training.Checkpoint.ResumeFromCheckpoint);
        Assert.Equal("", c.Training.Checkpoint.OutputDir);
        Assert.Equal("fp32", c.Training.DitPrecision);
    }

    [Theory]
    [InlineData("models:\n  student:\n    _target_: fastvideo.train.models.ltx2.LTX2Model\n    init_from: m\n", "models.student._target_",
        "fastvideo.train.models.ltx2.LTX2Model", "model", "fastvideo.train.models.wan.WanModel")]
    [InlineData("models:\n  student: {_target_: fastvideo.train.models.wan.WanModel, init_from: m}\n  critic:\n    _target_: fastvideo.train.models.kandinsky5.Kandinsky5Model\n",
        "models.critic._target_", "fastvideo.train.models.kandinsky5.Kandinsky5Model", "model", null)]
    [InlineData("models:\n  student: {_target_: fastvideo.train.models.wan.WanModel, init_from: m}\nmethod:\n  _target_: fastvideo.train.methods.distribution_matching.anyflow.AnyFlowMethod\n",
        "method._target_", "fastvideo.train.methods.distribution_matching.anyflow.AnyFlowMethod", "method", null)]
    [InlineData("models:\n  student: {_target_: fastvideo.train.models.wan.WanModel, init_from: m}\nmethod:\n  _target_: fastvideo.train.methods.rl.diffusion_nft.DiffusionNFTMethod\n",
        "method._target_", "fastvideo.train.methods.rl.diffusion_nft.DiffusionNFTMethod", "method", null)]
    [InlineData("models:\n  student: {_target_: fastvideo.train.models.wan.WanModel, init_from: m}\nmethod:\n  _target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod\ncallbacks:\n  metrics:\n    _target_: fastvideo.train.callbacks.vbench.VBenchCallback\n",
        "callbacks.metrics._target_", "fastvideo.train.callbacks.vbench.VBenchCallback", "callback", null)]
    [InlineData("models:\n  student: {_target_: fastvideo.train.models.wan.WanModle, init_from: m}\n", "models.student._target_",
        "fastvideo.train.models.wan.WanModle", "model", "fastvideo.train.models.wan.WanModel")]
    public void AnUnsupportedTargetIsOneErrorWithItsLineTheNearestAndTheSupportedOnes(string head, string key, string target, string kind, string? nearest)
    {
        var yaml = head + (head.Contains("method:") ? "" : "method:\n  _target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod\n") + "training: {}\n";
        var e = Assert.Throws<RecipeError>(() => Load(yaml));
        Assert.Equal(key, e.KeyPath);
        Assert.Equal(RecipeTestSupport.LineOf(yaml, target), e.Line);
        Assert.StartsWith($"run.yaml:{e.Line}: {key}: unsupported target '{target}': FastVideoSharp does not implement this {kind}; nearest supported target: '", e.Message);
        if (nearest is not null) Assert.Contains($"nearest supported target: '{nearest}'", e.Message);
        var catalog = kind switch
        {
            "model" => (IClassPathCatalog)ModelFamilyRegistry.Default,
            "method" => MethodRegistry.Default,
            _ => CallbackRegistry.Default,
        };
        var names = kind switch
        {
            "model" => ModelFamilyRegistry.Default.FamilyNames,
            "method" => MethodRegistry.Default.Names,
            _ => CallbackRegistry.Default.Names,
        };
        // Every supported one of its kind, by the class path its registry entry declares.
        Assert.EndsWith($"; supported {kind}s: " + string.Join(", ", names.Select(n => $"{catalog.ClassPathOf(n)} ({n})")), e.Message);
        Assert.Contains(kind == "model" ? "fastvideo.train.models.wan.WanCausalModel (wan_causal)" : kind == "method"
            ? "fastvideo.train.methods.distribution_matching.dmd2.DMD2Method (dmd2)" : "fastvideo.train.callbacks.ema.EMACallback (ema)", e.Message);
    }

    [Fact]
    public void ATargetThatIsNotAClassPathIsAnError()
    {
        var e = Assert.Throws<RecipeError>(() => Load("models:\n  student: {_target_: [a], init_from: m}\nmethod: {_target_: fastvideo.train.methods.FineTuneMethod}\ntraining: {}\n"));
        Assert.Equal("run.yaml:2: models.student._target_: expected a class path (package.module.ClassName), got a list", e.Message);
    }

    [Fact]
    public void CallbacksAreFoundByTargetUnderAnyNameAndByTheirBareNames()
    {
        var c = Load(ListFinetune + "\ncallbacks:\n  clip:\n    _target_: fastvideo.train.callbacks.GradNormClipCallback\n    max_grad_norm: 2.0\n  ema: {}\n");
        Assert.Equal(["grad_clip", "ema"], c.Callbacks.Select(kv => kv.Key));   // renamed to the callback the class path names
        Assert.Equal(2.0, c.CallbackOptions<GradClipOptions>("grad_clip")!.MaxGradNorm);

        // A name that is no callback needs a _target_ (FastVideo skips it with a warning; here it is an error).
        var yaml = ListFinetune + "\ncallbacks:\n  grad_clp: {max_grad_norm: 1.0}\n";
        var e = Assert.Throws<RecipeError>(() => Load(yaml));
        Assert.Equal($"run.yaml:{RecipeTestSupport.LineOf(yaml, "grad_clp")}: callbacks.grad_clp: unknown callback 'grad_clp'; did you mean 'grad_clip'? (known: ema, grad_clip, validation)", e.Message);
        // The same callback twice.
        e = Assert.Throws<RecipeError>(() => Load(ListFinetune + "\ncallbacks:\n  grad_clip: {}\n  clip2: {_target_: fastvideo.train.callbacks.grad_clip.GradNormClipCallback}\n"));
        Assert.Contains("callbacks.clip2: callback 'grad_clip' is already given as callbacks.grad_clip", e.Message);
    }

    [Fact]
    public void FormsDoNotMix()
    {
        var e = Assert.Throws<RecipeError>(() => Load(ListFinetune + "\nrecipe: {family: wan}\n"));
        Assert.Equal("recipe", e.KeyPath);
        Assert.Contains("use one form per file", e.Message);
        e = Assert.Throws<RecipeError>(() => Load(ListFinetune.Replace("init_from: fake/model", "init_from: fake/model, family: wan")));
        Assert.Equal("models.student.family", e.KeyPath);
    }

    [Fact]
    public void TheOtherFormMayNameClassPathsToo()
    {
        // A role's _target_ stands for its family, method._target_ for recipe.method, a callback's for its name.
        var c = RecipeTestSupport.Load("""
            roles:
              student: {_target_: fastvideo.train.models.wan.WanCausalModel, init_from: m}
            method: {_target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod}
            callbacks:
              clip: {_target_: fastvideo.train.callbacks.grad_clip.GradNormClipCallback}
            """);
        Assert.Equal(RecipeForm.RecipeRoles, c.Form);
        Assert.Equal("finetune", c.Recipe.Method);
        Assert.Equal("wan_causal", c.Roles["student"].Family);
        Assert.Equal(["grad_clip"], c.Callbacks.Select(kv => kv.Key));
        var e = Assert.Throws<RecipeError>(() => RecipeTestSupport.Load(
            "recipe: {family: wan, method: dmd2}\nroles: {student: {init_from: m}}\nmethod: {_target_: fastvideo.train.methods.FineTuneMethod}\n"));
        Assert.Equal("recipe.yaml:3: method._target_: names method 'finetune', but recipe.method is 'dmd2'", e.Message);
        e = Assert.Throws<RecipeError>(() => RecipeTestSupport.Load(
            "roles: {student: {family: wan, _target_: fastvideo.train.models.wan.WanCausalModel, init_from: m}}\n"));
        Assert.Contains("roles.student.family: 'wan' does not match _target_, which names family 'wan_causal'", e.Message);
    }

    [Fact]
    public void FamiliesAndMethodsOfUserAssembliesDeclareTheirClassPaths()
    {
        var families = ModelFamilyRegistry.CreateBuiltIn();
        families.Register(WanModel.Family with { Name = "my_wan", ClassPaths = ["mylab.models.MyWan"] });
        var methods = MethodRegistry.CreateBuiltIn();
        methods.Register(FastVideo.Train.Methods.FineTuning.FineTuneMethod.Descriptor with { Name = "my_sft", ClassPaths = ["mylab.methods.MySft"] });
        var c = RecipeLoader.LoadText("models: {student: {_target_: mylab.models.MyWan, init_from: m}}\nmethod: {_target_: mylab.methods.MySft}\ntraining: {}\n",
            "run.yaml", [], families, methods);
        Assert.Equal("my_wan", c.Roles["student"].Family);
        Assert.Equal("my_sft", c.Recipe.Method);

        // A family copied from another keeps its class paths unless it declares its own: refused, not shadowed.
        var e = Assert.Throws<ArgumentException>(() => families.Register(WanModel.Family with { Name = "copy" }));
        Assert.Contains("class path 'fastvideo.train.models.wan.WanModel' is already declared by family 'wan'", e.Message);
        Assert.Throws<ArgumentException>(() => families.Register(WanModel.Family with { Name = "bad", ClassPaths = ["NoDots"] }));
    }

    [Fact]
    public void BuiltInEntriesDeclareFastVideosClassPaths()
    {
        Assert.Equal("wan", ModelFamilyRegistry.Default.NameOfClassPath("fastvideo.train.models.wan.WanModel"));
        Assert.Equal("wan_causal", ModelFamilyRegistry.Default.NameOfClassPath("fastvideo.train.models.wan.wan_causal.WanCausalModel"));
        Assert.Equal("finetune", MethodRegistry.Default.NameOfClassPath("fastvideo.train.methods.fine_tuning.FineTuneMethod"));
        Assert.Equal("dmd2", MethodRegistry.Default.NameOfClassPath("fastvideo.train.methods.DMD2Method"));
        foreach (var (cls, name) in new[] { ("GradNormClipCallback", "grad_clip"), ("ValidationCallback", "validation"), ("EMACallback", "ema") })
        {
            Assert.Equal(name, CallbackRegistry.Default.NameOfClassPath($"fastvideo.train.callbacks.{name}.{cls}"));
            Assert.Equal(name, CallbackRegistry.Default.NameOfClassPath($"fastvideo.train.callbacks.{cls}"));
        }
        // Every built-in entry declares one (so every recipe can be written in FastVideo's form).
        Assert.All(ModelFamilyRegistry.Default.FamilyNames, n => Assert.NotNull(ModelFamilyRegistry.Default.ClassPathOf(n)));
        Assert.All(MethodRegistry.Default.Names, n => Assert.NotNull(MethodRegistry.Default.ClassPathOf(n)));
        Assert.All(CallbackRegistry.Default.Names, n => Assert.NotNull(CallbackRegistry.Default.ClassPathOf(n)));
    }

    [Fact]
    public void FeaturesThatAreNotImplementedLoadAndAreRefusedByTraining()
    {
        var c = Load(LoraFinetune.Replace("attention_backend: null", "attention_backend: ATTN_QAT_TRAIN")
            .Replace("pipeline: {}", "pipeline:\n  dit_config: {quant_config: nvfp4_qat_train}") + "\n");
        var refused = c.Notes.Where(n => n.Kind == RecipeNoteKind.NotImplemented).Select(n => n.KeyPath).ToList();
        Assert.Equal(["models.student.attention_backend", "pipeline.dit_config.quant_config"], refused);
        var e = Assert.Throws<RecipeError>(() => TrainingBuilder.Build(c));
        Assert.Equal("models.student.attention_backend", e.KeyPath);
        Assert.Equal(RecipeTestSupport.LineOf(LoraFinetune, "attention_backend"), e.Line);
    }

    [Fact]
    public void ValidationPipelinesAreCheckedAndTheirSamplerDifferenceNoted()
    {
        var c = Load(LoraFinetune);
        var note = Assert.Single(c.Notes, n => n.KeyPath == "callbacks.validation.pipeline_target");
        Assert.Equal(RecipeNoteKind.DiffersFromFastVideo, note.Kind);
        Assert.Contains("UniPC", note.Detail);
        var e = Assert.Throws<RecipeError>(() => Load(LoraFinetune.Replace("wan.wan_pipeline.WanPipeline", "ltx2.ltx2_pipeline.LTX2Pipeline")));
        Assert.Equal("callbacks.validation.pipeline_target", e.KeyPath);
        Assert.Contains("is not a validation pipeline of an implemented family", e.Message);
        // A few-step pipeline needs its timesteps; sampling_steps may only repeat their count.
        e = Assert.Throws<RecipeError>(() => Load(LoraFinetune.Replace("wan.wan_pipeline.WanPipeline", "wan.wan_dmd_pipeline.WanDMDPipeline")));
        Assert.Equal("callbacks.validation.sampling_timesteps", e.KeyPath);
        e = Assert.Throws<RecipeError>(() => Load(Dmd2.Replace("sampling_steps: [3]", "sampling_steps: [4]")));
        Assert.Contains("sampling_steps may repeat the count of sampling_timesteps: [3]", e.Message);
    }

    [Fact]
    public void ExampleRecipesInFastVideosFormLoadConvertAndCoverEachImplementedFamilyAndMethod()
    {
        var dir = Path.Combine(TestPaths.RepoRoot, "examples", "recipes", "fastvideo");
        var loaded = Directory.GetFiles(dir, "*.yaml").Select(f => RecipeLoader.Load(f, [], ModelFamilyRegistry.Default)).ToList();
        Assert.All(loaded, c => Assert.Equal(RecipeForm.FastVideo, c.Form));
        Assert.All(loaded, c => c.RequireImplemented());
        Assert.All(loaded, c => Assert.DoesNotContain(c.Notes, n => n.Kind == RecipeNoteKind.Ignored));
        // Each implemented family and each implemented method appears in one of them.
        foreach (var family in ModelFamilyRegistry.Default.FamilyNames)
            Assert.Contains(loaded, c => c.Roles.Values.Any(r => r.Family == family));
        foreach (var method in MethodRegistry.Default.Names)
            Assert.Contains(loaded, c => c.Recipe.Method == method);
    }
}

using System.Text;
using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Models.Dits;
using FastVideo.Tests.Configs;
using FastVideo.Tests.Weights;
using FastVideo.Train.Models;
using Xunit;

namespace FastVideo.Tests.CommandLine;

/// <summary>
/// FastVideo's command line (<c>fastvideo train --config FILE [--dry-run] [--a.b.c VALUE | --a.b.c=VALUE]</c>) next to
/// ours, and <c>config show</c> / <c>config convert</c> on both forms. Tests that set HF_HUB_CACHE run alone.
/// </summary>
[Collection("env")]
public class FastVideoCommandLineTests
{
    /// <summary>Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json.</summary>
    private static readonly WanTransformerConfig Wan13B = new()
    {
        PatchSize = [1, 2, 2], NumAttentionHeads = 12, AttentionHeadDim = 128, InChannels = 16, OutChannels = 16,
        TextDim = 4096, FreqDim = 256, FfnDim = 8960, NumLayers = 30, CrossAttnNorm = true, Eps = 1e-6, RopeMaxSeqLen = 1024,
    };

    private static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = Cli.Cli.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>
    /// A local Hugging Face cache holding <paramref name="modelId"/> as a Diffusers pipeline whose transformer is a
    /// header-only safetensors file (<see cref="HeaderOnlyWeights"/>).
    /// </summary>
    private static void WriteHeaderOnlyCache(string hub, string modelId, WanTransformerConfig config) =>
        WriteHeaderOnlyCache(hub, modelId, "WanPipeline", config.ToJson().ToJsonString(), () => new WanTransformer3DModel(config, TorchSharp.torch.META));

    /// <inheritdoc cref="WriteHeaderOnlyCache(string, string, WanTransformerConfig)"/>
    /// <param name="metaModel">The architecture built on the meta device (no memory): its parameter names and shapes.</param>
    /// <param name="files">Further files of the snapshot (e.g. <c>vae/config.json</c>) and their text.</param>
    private static void WriteHeaderOnlyCache(string hub, string modelId, string pipelineClass, string transformerConfig,
        Func<TorchSharp.torch.nn.Module> metaModel, params (string Path, string Text)[] files)
    {
        var repo = Path.Combine(hub, "models--" + modelId.Replace("/", "--"));
        const string hash = "0123456789abcdef0123456789abcdef01234567";
        var snapshot = Path.Combine(repo, "snapshots", hash);
        Directory.CreateDirectory(Path.Combine(snapshot, "transformer"));
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), hash);
        File.WriteAllText(Path.Combine(snapshot, "model_index.json"), $"{{\"_class_name\": \"{pipelineClass}\"}}");
        File.WriteAllText(Path.Combine(snapshot, "transformer", "config.json"), transformerConfig);
        foreach (var (path, text) in files)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(snapshot, path))!);
            File.WriteAllText(Path.Combine(snapshot, path), text);
        }
        using var model = metaModel();
        HeaderOnlyWeights.Write(model, Path.Combine(snapshot, "transformer", "diffusion_pytorch_model.safetensors"));
    }

    [Fact]
    public void FastVideosFineTuningRecipeDryRunsWithTheModelInTheLocalHuggingFaceCache()
    {
        // fine_tuning/wan/t2v.yaml's sections and values (FastVideo main 2f3d4074), as `--config` gets them.
        using var dir = new TempDir();
        using var env = new EnvScope().Set("HF_HUB_CACHE", dir["hub"]).Set("HF_HOME", null).Set("HUGGINGFACE_HUB_CACHE", null);
        WriteHeaderOnlyCache(dir["hub"], "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", Wan13B);
        var recipe = dir.Write("t2v.yaml", """
            models:
              student:
                _target_: fastvideo.train.models.wan.WanModel
                init_from: Wan-AI/Wan2.1-T2V-1.3B-Diffusers
                trainable: true
            method:
              _target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod
            training:
              distributed: {num_gpus: 8, sp_size: 1, tp_size: 1, hsdp_replicate_dim: 8, hsdp_shard_dim: 1}
              data: {data_path: data/preprocessed, dataloader_num_workers: 4, train_batch_size: 1, training_cfg_rate: 0.0, seed: 1000,
                     num_latent_t: 20, num_height: 448, num_width: 832, num_frames: 77}
              optimizer: {learning_rate: 1.0e-6, betas: [0.9, 0.999], weight_decay: 0.01, lr_scheduler: constant, lr_warmup_steps: 0}
              loop: {max_train_steps: 4000, gradient_accumulation_steps: 1}
              checkpoint: {output_dir: outputs/wan_finetune, training_state_checkpointing_steps: 100, checkpoints_total_limit: 3, resume_from_checkpoint: latest}
              tracker: {project_name: fastvideo, run_name: wan_finetune}
              model: {enable_gradient_checkpointing_type: full}
            callbacks:
              grad_clip:
                _target_: fastvideo.train.callbacks.grad_clip.GradNormClipCallback
                max_grad_norm: 1.0
              validation:
                _target_: fastvideo.train.callbacks.validation.ValidationCallback
                pipeline_target: fastvideo.pipelines.basic.wan.wan_pipeline.WanPipeline
                dataset_file: data/validation_prompts.json
                every_steps: 100
                sampling_steps: [50]
                guidance_scale: 5.0
            pipeline:
              flow_shift: 3
            """);
        var data = Directory.CreateDirectory(dir["my_data"]).FullName;

        var (code, stdout, stderr) = Run("train", "--config", recipe, "--dry-run", "--training.data.data_path", data);
        Assert.True(code == 0, stderr);
        Assert.Contains("method: finetune", stdout);
        Assert.Contains("student", stdout);
        // 1.3B parameters, read from the header: every one trainable, checkpointing "full" applied to the plan.
        long parameters = 1_418_996_800;
        Assert.Contains(parameters.ToString("N0", System.Globalization.CultureInfo.InvariantCulture), stdout.Replace(" ", ","));
        Assert.Contains("differs from FastVideo: " + recipe, stdout);   // the notes come first
        Assert.Contains("training.distributed.num_gpus: FastVideo spreads a step over 8 ranks", stdout);

        // The same plan with the value after '=', and with our own spelling of the command.
        Assert.Equal(stdout, Run("train", "--config", recipe, "--dry-run", $"--training.data.data_path={data}").Stdout);
        Assert.Equal(stdout, Run("train", recipe, "--dry-run", "--set", $"training.data.data_path={data}").Stdout);
        Assert.Equal(stdout, Run("train", "--dry-run", "--config", recipe, $"--training.data.data_path={data}").Stdout);
    }

    [Fact]
    public void FastVideosHunyuanLoraRecipeDryRunsWithTheModelInTheLocalHuggingFaceCache()
    {
        // The test recipe written after fine_tuning/hunyuan/t2v_lora.yaml (targets in FastVideo's DiT names) on a
        // header-only hunyuanvideo-community/HunyuanVideo (Diffusers' default config = the 13B transformer).
        using var dir = new TempDir();
        using var env = new EnvScope().Set("HF_HUB_CACHE", dir["hub"]).Set("HF_HOME", null).Set("HUGGINGFACE_HUB_CACHE", null);
        var config = new HunyuanVideoTransformerConfig();
        WriteHeaderOnlyCache(dir["hub"], "hunyuanvideo-community/HunyuanVideo", "HunyuanVideoPipeline", config.ToJson().ToJsonString(),
            () => new HunyuanVideoTransformer3DModel(config, TorchSharp.torch.META),
            ("vae/config.json", "{\"_class_name\": \"AutoencoderKLHunyuanVideo\", \"latent_channels\": 16, \"scaling_factor\": 0.476986, " +
                                "\"spatial_compression_ratio\": 8, \"temporal_compression_ratio\": 4}"));
        var recipe = dir.Write("t2v_lora.yaml", FastVideoFormRecipes.HunyuanLora);
        var data = Directory.CreateDirectory(dir["my_data"]).FullName;

        var (code, stdout, stderr) = Run("train", "--config", recipe, "--dry-run", "--training.data.data_path", data);
        Assert.True(code == 0, stderr);
        Assert.Contains("method: finetune", stdout);
        // img_attn_qkv, img_attn_proj, txt_attn_qkv, txt_attn_proj = 8 [3072, 3072] projections in each of the 20 dual
        // blocks, rank 16: 160 x 16 x (3072 + 3072) adapter parameters; the refiner's self_attn_* add none.
        long adapters = 160L * 16 * (3072 + 3072);
        Assert.Contains(adapters.ToString("N0", System.Globalization.CultureInfo.InvariantCulture), stdout.Replace(" ", ","));
        Assert.Contains("models.student.lora.target_modules: FastVideo's HunyuanVideo DiT fuses img_attn_qkv", stdout);
    }

    [Fact]
    public void RecipeGivenTwiceAndOverrideWithoutValueAreUsageErrors()
    {
        var (code, _, stderr) = Run("train", "a.yaml", "--config", "b.yaml", "--dry-run");
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Equal("error: train: the recipe is given twice, as RECIPE 'a.yaml' and --config 'b.yaml'; give one\n", stderr);
        (code, _, stderr) = Run("train", "--config", "b.yaml", "--training.loop.max_train_steps");
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.StartsWith("error: --training.loop.max_train_steps: missing value for the override", stderr);
        // An undotted unknown flag stays an unknown option (FastVideo would take it for a top-level key).
        (code, _, stderr) = Run("train", "--config", "b.yaml", "--dryrun");
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("'--dryrun'", stderr);
    }

    [Fact]
    public void ConfigShowPrintsEitherFormInItsOwnFormWithItsNotes()
    {
        using var dir = new TempDir();
        var recipe = dir.Write("fv.yaml", FastVideoFormRecipes.Dmd2);
        var (code, stdout, stderr) = Run("config", "show", recipe, "--training.loop.max_train_steps", "7");
        Assert.True(code == 0, stderr);
        Assert.StartsWith("models:\n  student:\n    _target_: fastvideo.train.models.wan.WanCausalModel\n", stdout);
        Assert.Contains("\n  loop:\n    max_train_steps: 7\n", stdout);
        Assert.Contains($"\n# warning: {recipe}:{RecipeTestSupport.LineOf(FastVideoFormRecipes.Dmd2, "decay_rate")}: training.vsa.decay_rate: ignored, as FastVideo does", stdout);
        Assert.Contains("\n# differs from FastVideo: ", stdout);

        var ours = dir.Write("ours.yaml", RecipeTestSupport.Example);
        (code, stdout, _) = Run("config", "show", ours);
        Assert.Equal(0, code);
        Assert.StartsWith("recipe:\n  family: wan\n  method: dmd2\nroles:\n", stdout);
    }

    public static IEnumerable<object[]> ConvertCases() => FastVideoFormRecipes.All().Select(r => new[] { r[0] }).Append(["ours"]);

    [Theory]
    [MemberData(nameof(ConvertCases))]
    public void ConvertWritesTheOtherFormAndARoundTripGivesTheSameTypedRecipe(string which)
    {
        using var dir = new TempDir();
        var text = which == "ours"
            ? RecipeTestSupport.Example.Replace("teacher: {family: wan_causal,", "teacher: {family: wan,")
            : (string)FastVideoFormRecipes.All().Single(r => (string)r[0] == which)[1];
        var recipe = dir.Write("r.yaml", text);
        var original = RecipeLoader.Load(recipe, [], ModelFamilyRegistry.Default);

        var (code, _, stderr) = Run("config", "convert", recipe, "--out", dir["other.yaml"]);
        Assert.True(code == 0, stderr);
        var other = RecipeLoader.Load(dir["other.yaml"], [], ModelFamilyRegistry.Default);
        Assert.NotEqual(original.Form, other.Form);
        foreach (var note in original.Notes) Assert.Contains($"\n# {note}\n", File.ReadAllText(dir["other.yaml"]));
        (code, _, stderr) = Run("config", "convert", dir["other.yaml"], "--out", dir["back.yaml"]);
        Assert.True(code == 0, stderr);
        var back = RecipeLoader.Load(dir["back.yaml"], [], ModelFamilyRegistry.Default);
        Assert.Equal(original.Form, back.Form);

        // The same typed recipe all the way round (records and their printed form, defaults included). recipe.family,
        // the default family of roles that name none, has no place in FastVideo's form: every role keeps its own.
        var withoutDefaultFamily = original with { Recipe = original.Recipe with { Family = other.Recipe.Family } };
        Assert.All(original.Roles.Values, r => Assert.NotNull(r.Family));
        Assert.Equal(RecipePrinter.ToYaml(withoutDefaultFamily), RecipePrinter.ToYaml(other));
        Assert.Equal(RecipePrinter.ToYaml(withoutDefaultFamily), RecipePrinter.ToYaml(back));
        Assert.Equal(original.Roles.Values.Select(r => r.GetType()), other.Roles.Values.Select(r => r.GetType()));
        Assert.Equal(original.Method.GetType(), other.Method.GetType());
        Assert.Equal(original.Training, other.Training with { Data = other.Training.Data with { DataPath = original.Training.Data.DataPath },
            Optimizer = other.Training.Optimizer with { Betas = original.Training.Optimizer.Betas }, Tracker = other.Training.Tracker with { Trackers = original.Training.Tracker.Trackers },
            Model = other.Training.Model with { MobaConfig = original.Training.Model.MobaConfig } });
        if (original.Form == RecipeForm.FastVideo) FastVideoFormRecipes.CheckTypedValuesAgainstYaml(text, other with { Notes = original.Notes });
    }

    [Fact]
    public void ExampleRecipesInFastVideosFormTrainOnTheMachine()
    {
        // Each example, pointed at a tiny synthetic dataset and model of its family (the quickstart's layout), trains two steps.
        var root = TestPaths.TempDir("fv-examples");
        var (data, model) = Train.TrainFixture.SyntheticDataAndModel(root);
        var (hunyuanData, hunyuanModel) = Train.TrainFixture.SyntheticHunyuanDataAndModel(root);
        foreach (var recipe in Directory.GetFiles(Path.Combine(TestPaths.RepoRoot, "examples", "recipes", "fastvideo"), "*.yaml").Order())
        {
            var name = Path.GetFileNameWithoutExtension(recipe);
            var loaded = RecipeLoader.Load(recipe, [], ModelFamilyRegistry.Default);
            bool hunyuan = loaded.Roles.Values.Any(r => r.Family == "hunyuan");
            // KD builds its teacher-trajectory cache first: a fresh folder per run, and a short teacher ODE (8 steps, whose
            // grid holds the examples' t_list).
            string[] kd = loaded.Method is FastVideo.Train.Methods.KnowledgeDistillation.KDOptions
                ? ["--method.teacher_path_cache", Path.Combine(root, name + "-cache"), "--method.teacher_inference_steps", "8"] : [];
            string[] args =
            [
                "train", "--config", recipe, "--training.data.data_path", hunyuan ? hunyuanData : data, "--training.checkpoint.output_dir", Path.Combine(root, name),
                "--training.loop.max_train_steps", "2", "--training.data.train_batch_size", "2", "--pipeline.text_len", hunyuan ? "7" : "6",
                "--training.data.num_latent_t", "2", "--training.data.num_height", "8", "--training.data.num_width", "8",
                "--callbacks.validation.every_steps", "0", .. loaded.Roles.Keys.SelectMany(r => new[] { $"--models.{r}.init_from", hunyuan ? hunyuanModel : model }), .. kd,
            ];
            var (code, stdout, stderr) = Run(args);
            Assert.True(code == 0, $"{name}: {stderr}\n{stdout}");
            Assert.Equal(2, File.ReadLines(Path.Combine(root, name, "metrics.jsonl")).Count());
        }
    }
}

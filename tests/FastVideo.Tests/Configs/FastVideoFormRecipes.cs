using System.Globalization;
using FastVideo.Configs;
using FastVideo.Train.Callbacks;
using FastVideo.Train.Methods;
using FastVideo.Train.Models;
using Xunit;
using YamlDotNet.RepresentationModel;

namespace FastVideo.Tests.Configs;

/// <summary>
/// Recipes in FastVideo's form written for these tests (not FastVideo's files): together they use every section, key
/// and value form that FastVideo's own Wan / causal Wan / HunyuanVideo recipes for the implemented methods use
/// (upstream-recipe-format.md; FastVideo main at 2f3d4074): <c>_target_</c> class paths and their package aliases,
/// bare callback names, data_path as a string, a list and a map, numbers as 1e-5 / 1.0e-6, betas as a list and as
/// "b1,b2", null / "" / latest, empty lists and maps, role LoRA and attention backends, causal settings, DMD2's
/// options and FastVideo's keys it ignores (a warning each).
/// </summary>
internal static class FastVideoFormRecipes
{
    /// <summary>DMD2: three roles (a causal student), every training section, the three callbacks.</summary>
    public const string Dmd2 = """
        # DMD2 in FastVideo's form (comments, as FastVideo's recipes have them)
        models:
          student:
            _target_: fastvideo.train.models.wan.WanCausalModel
            init_from: Org/Student-Diffusers
            trainable: true
            transformer_override_safetensor: outputs/ode_init/transformer/model.safetensors
            num_frames_per_block: 3
            enable_gradient_checkpointing_type: null
          teacher:                          # a trailing comment
            _target_: fastvideo.train.models.wan.wan.WanModel
            init_from: Org/Teacher-Diffusers
            trainable: false
            disable_custom_init_weights: true
            attention_backend: FLASH_ATTN
            flow_shift: 5.0
          critic:
            _target_: fastvideo.train.models.wan.WanModel
            init_from: Org/Teacher-Diffusers
            trainable: true
            disable_custom_init_weights: true
            attention_backend: TORCH_SDPA

        method:
          _target_: fastvideo.train.methods.distribution_matching.dmd2.DMD2Method
          rollout_mode: data_latent
          generator_update_interval: 5
          real_score_guidance_scale: 4.5
          dmd_denoising_steps: [1000, 757, 522]
          warp_denoising_step: true
          min_timestep_ratio: 0.02
          max_timestep_ratio: 0.98
          fake_score_learning_rate: 8.0e-6
          fake_score_betas: [0.0, 0.999]
          fake_score_lr_scheduler: constant

        training:
          distributed:
            num_gpus: 4
            sp_size: 1
            tp_size: 1
            hsdp_replicate_dim: 1
            hsdp_shard_dim: 4
            pin_cpu_memory: false
          data:
            data_path: data/Wan-Syn_77x448x832_600k
            preprocessed_data_type: t2v
            dataloader_num_workers: 4
            train_batch_size: 1
            training_cfg_rate: 0.0
            seed: 1000
            num_latent_t: 21
            num_height: 480
            num_width: 832
            num_frames: 81
          optimizer:
            learning_rate: 1e-5
            betas: [0.0, 0.999]
            weight_decay: 0.01
            lr_scheduler: constant
            lr_warmup_steps: 0
            lr_num_cycles: 0
            lr_power: 0.0
            min_lr_ratio: 0.5
          loop:
            max_train_steps: 4000
            gradient_accumulation_steps: 1
          checkpoint:
            output_dir: outputs/wan2.1_dmd2
            training_state_checkpointing_steps: 20
            checkpoints_total_limit: 3
            resume_from_checkpoint: ""
          tracker:
            trackers: []
            entity: my-team
            project_name: distillation_wan
            run_name: wan2.1_dmd2
          model:
            weighting_scheme: uniform
            logit_mean: 0.0
            logit_std: 1.0
            mode_scale: 1.0
            precondition_outputs: false
            moba_config: {}
            enable_gradient_checkpointing_type: full
          vsa:
            sparsity: 0.0
            cache_tile_buf: false
            decay_rate: 0.03
            decay_interval_steps: 1
          dit_precision: fp32
          model_path: Org/Student-Diffusers

        callbacks:
          grad_clip:
            max_grad_norm: 1.0
          validation:
            pipeline_target: fastvideo.pipelines.basic.wan.wan_causal_dmd_pipeline.WanCausalDMDPipeline
            dataset_file: examples/validation_4.json
            every_steps: 50
            sampling_steps: [3]
            sampling_timesteps: [1000, 757, 522]
            guidance_scale: 6.0
            num_frames: 69
            output_dir: null
          ema:
            _target_: fastvideo.train.callbacks.ema.EMACallback
            decay: 0.98
            start_iter: 0        # delay EMA updates until this iteration

        pipeline:
          flow_shift: 5
          dit_config:
            local_attn_size: -1
            sink_size: 0
        """;

    /// <summary>A LoRA finetune: data_path as a map, betas as a string, the other spellings of null and latest.</summary>
    public const string LoraFinetune = """
        models:
          student:
            _target_: fastvideo.train.models.wan.WanModel
            init_from: Wan-AI/Wan2.1-T2V-1.3B-Diffusers
            trainable: true
            enable_gradient_checkpointing_type: full
            attention_backend: null
            lora:
              enable: true
              rank: 16
              alpha: 32
              target_modules:
                - to_q
                - to_k
                - to_v
                - to_out

        method:
          _target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod

        training:
          dit_precision: bf16
          distributed:
            num_gpus: 1
          data:
            data_path:
              data/crush-smol: 2
              data/mixkit: 1
            seed: 42
            training_cfg_rate: 0.1
          optimizer:
            learning_rate: 1.0e-6
            betas: "0.9,0.999"
          checkpoint:
            output_dir: outputs/wan_t2v_lora
            resume_from_checkpoint: null
          model:
            precondition_outputs: true
            weighting_scheme: logit_normal
            logit_mean: 0.5
            logit_std: 1.5
          tracker:
            project_name: fastvideo

        callbacks:
          grad_clip:
            _target_: fastvideo.train.callbacks.grad_clip.GradNormClipCallback
            max_grad_norm: 1.0
            log_grad_norms: false
          validation:
            _target_: fastvideo.train.callbacks.validation.ValidationCallback
            pipeline_target: fastvideo.pipelines.basic.wan.wan_pipeline.WanPipeline
            dataset_file: data/validation.json
            every_steps: 0
            sampling_steps: [5]
            guidance_scale: 5.0
            num_frames: null
            sampling_timesteps: null

        pipeline: {}
        """;

    /// <summary>A finetune with data_path as a list and the training section's smallest form.</summary>
    public const string ListFinetune = """
        models:
          student: {_target_: fastvideo.train.models.wan.WanModel, init_from: fake/model, trainable: true}
        method: {_target_: fastvideo.train.methods.FineTuneMethod}
        training:
          data: {data_path: [data/a, data/b]}
          checkpoint: {resume_from_checkpoint: latest}
          optimizer: {learning_rate: 2.0e-6}
        pipeline:
          flow_shift: 3
        """;

    /// <summary>Self-Forcing: a causal student with a transformer override, a 14B-style teacher, the rollout's keys and
    /// attn_kind (which FastVideo's SelfForcingMethod ignores: a warning).</summary>
    public const string SelfForcing = """
        models:
          student:
            _target_: fastvideo.train.models.wan.WanCausalModel
            init_from: wlsaidhi/SFWan2.1-T2V-1.3B-Diffusers
            trainable: true
            transformer_override_safetensor: /mnt/weka/ode_init/model.safetensors
          teacher:
            _target_: fastvideo.train.models.wan.WanModel
            init_from: Wan-AI/Wan2.1-T2V-14B-Diffusers
            trainable: false
            disable_custom_init_weights: true
          critic:
            _target_: fastvideo.train.models.wan.WanModel
            init_from: Wan-AI/Wan2.1-T2V-1.3B-Diffusers
            trainable: true
            disable_custom_init_weights: true

        method:
          _target_: fastvideo.train.methods.distribution_matching.self_forcing.SelfForcingMethod
          rollout_mode: simulate
          generator_update_interval: 5
          real_score_guidance_scale: 4.0
          dmd_denoising_steps: [1000, 750, 500, 250]
          warp_denoising_step: true
          chunk_size: 3
          student_sample_type: sde
          context_noise: 0.0
          same_step_across_blocks: true
          enable_gradient_in_rollout: true
          start_gradient_frame: 0
          fake_score_learning_rate: 4.0e-7
          fake_score_betas: [0.0, 0.999]
          fake_score_lr_scheduler: constant
          attn_kind: vsa

        training:
          distributed: {num_gpus: 8, sp_size: 1, tp_size: 1, hsdp_replicate_dim: 1, hsdp_shard_dim: 8}
          data: {data_path: data/vidprom_16k_umt5_text_embed, train_batch_size: 1, seed: 1000, num_latent_t: 21,
                 num_height: 480, num_width: 832, num_frames: 81}
          optimizer: {learning_rate: 2.0e-6, betas: [0.0, 0.999], weight_decay: 0.01}
          loop: {max_train_steps: 4000}
          model: {enable_gradient_checkpointing_type: full}

        callbacks:
          ema: {decay: 0.99, start_iter: 200}
          grad_clip: {max_grad_norm: 1.0}
          validation:
            pipeline_target: fastvideo.pipelines.basic.wan.wan_causal_dmd_pipeline.WanCausalDMDPipeline
            dataset_file: examples/validation_4.json
            every_steps: 50
            sampling_steps: [4]
            sampling_timesteps: [1000, 750, 500, 250]
            num_frames: 81

        pipeline:
          flow_shift: 5
          dit_config:
            local_attn_size: -1
            sink_size: 0
        """;

    /// <summary>Causal KD: the method's keys (t_list with its trailing 0, teacher settings, num_frames_per_block).</summary>
    public const string KdCausal = """
        models:
          student: {_target_: fastvideo.train.models.wan.WanCausalModel, init_from: wlsaidhi/SFWan2.1-T2V-1.3B-Diffusers, trainable: true}
          teacher:                          # remove once cache is complete
            _target_: fastvideo.train.models.wan.WanModel
            init_from: Wan-AI/Wan2.1-T2V-14B-Diffusers
            trainable: false
            disable_custom_init_weights: true
        method:
          _target_: fastvideo.train.methods.knowledge_distillation.kd.KDCausalMethod
          teacher_path_cache: data/kd_cache/wan14b_4step
          t_list: [999, 937, 833, 624, 0]   # student inference schedule (num_steps+1)
          student_sample_steps: 4
          teacher_inference_steps: 48
          teacher_guidance_scale: 3.5
          num_frames_per_block: 3
        training:
          data: {data_path: data/Wan-Syn_77x448x832_600k, train_batch_size: 2, seed: 1000, num_latent_t: 20}
          optimizer: {learning_rate: 7e-5, betas: [0.9, 0.999], weight_decay: 0.0}
        callbacks:
          grad_clip: {max_grad_norm: 1.0}
        pipeline:
          flow_shift: 5
        """;

    /// <summary>Diffusion-forcing SFT, frame-wise (the role's num_frames_per_block and the method's chunk_size).</summary>
    public const string Dfsft = """
        models:
          student:
            _target_: fastvideo.train.models.wan.WanCausalModel
            init_from: Wan-AI/Wan2.1-T2V-1.3B-Diffusers
            trainable: true
            num_frames_per_block: 1
        method:
          _target_: fastvideo.train.methods.fine_tuning.dfsft.DiffusionForcingSFTMethod
          chunk_size: 1
        training:
          dit_precision: bf16
          data: {seed: 42, num_latent_t: 6, num_height: 64, num_width: 64, num_frames: 21}
          optimizer: {learning_rate: 2.0e-6}
        pipeline: {}
        """;

    /// <summary>A HunyuanVideo finetune: the keys of FastVideo's hunyuan recipes (role-level activation checkpointing,
    /// 720p data sizes, latest resume, HunyuanVideoPipeline validation, flow_shift 7).</summary>
    public const string HunyuanFinetune = """
        # HunyuanVideo T2V finetune (data preprocessed with the dual text encoders, LLaMA + CLIP)
        models:
          student:
            _target_: fastvideo.train.models.hunyuan.HunyuanModel
            init_from: hunyuanvideo-community/HunyuanVideo
            trainable: true
            enable_gradient_checkpointing_type: full

        method:
          _target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod

        training:
          distributed:
            num_gpus: 8
            sp_size: 1
            tp_size: 1
            hsdp_replicate_dim: 1
            hsdp_shard_dim: 8
          data:
            data_path: data/hunyuan_training_data
            dataloader_num_workers: 4
            train_batch_size: 1
            training_cfg_rate: 0.0
            seed: 1000
            num_latent_t: 32
            num_height: 720
            num_width: 1280
            num_frames: 125
          optimizer:
            learning_rate: 1.0e-5
            betas: [0.9, 0.999]
            weight_decay: 0.01
            lr_scheduler: constant
            lr_warmup_steps: 0
          loop:
            max_train_steps: 5000
            gradient_accumulation_steps: 1
          checkpoint:
            output_dir: outputs/hunyuan_finetune
            training_state_checkpointing_steps: 500
            checkpoints_total_limit: 3
            resume_from_checkpoint: latest
          tracker:
            project_name: fastvideo_hunyuan
            run_name: hunyuan_finetune
          model:
            enable_gradient_checkpointing_type: full
          dit_precision: bf16

        callbacks:
          grad_clip: {_target_: fastvideo.train.callbacks.grad_clip.GradNormClipCallback, max_grad_norm: 1.0}
          validation:
            _target_: fastvideo.train.callbacks.validation.ValidationCallback
            pipeline_target: fastvideo.pipelines.basic.hunyuan.hunyuan_pipeline.HunyuanVideoPipeline
            dataset_file: data/hunyuan_training_data/validation_prompts.json
            every_steps: 100
            sampling_steps: [50]
            guidance_scale: 1.0

        pipeline:
          flow_shift: 7
        """;

    /// <summary>A HunyuanVideo LoRA finetune with its targets in FastVideo's DiT names (fused qkv, the token refiner's
    /// self_attn_* which adapt nothing), x0-space loss, a null resume and the package alias of the class path.</summary>
    public const string HunyuanLora = """
        models:
          student:
            _target_: fastvideo.train.models.hunyuan.hunyuan.HunyuanModel
            init_from: hunyuanvideo-community/HunyuanVideo
            trainable: true
            flow_shift: 7.0
            lora:
              enable: true
              rank: 16
              alpha: 32
              target_modules:
                - img_attn_qkv
                - img_attn_proj
                - txt_attn_qkv
                - txt_attn_proj
                - self_attn_qkv
                - self_attn_proj
        method:
          _target_: fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod
        training:
          distributed: {num_gpus: 1, sp_size: 1, tp_size: 1, hsdp_replicate_dim: 1, hsdp_shard_dim: 1}
          data:
            data_path: data/hunyuan_overfit_preprocessed
            dataloader_num_workers: 0
            train_batch_size: 1
            seed: 42
            num_latent_t: 20
            num_height: 480
            num_width: 832
            num_frames: 77
          optimizer: {learning_rate: 1.0e-4, betas: [0.9, 0.999], weight_decay: 0.0, lr_scheduler: constant, lr_warmup_steps: 0}
          loop: {max_train_steps: 10, gradient_accumulation_steps: 1}
          checkpoint:
            output_dir: outputs/hunyuan_t2v_lora_4090_debug
            training_state_checkpointing_steps: 5
            checkpoints_total_limit: 2
            resume_from_checkpoint: null
          tracker: {project_name: fastvideo_hunyuan, run_name: hunyuan_t2v_lora_4090_debug}
          model:
            precondition_outputs: true
            enable_gradient_checkpointing_type: full
        callbacks:
          grad_clip:
            max_grad_norm: 1.0
          validation:
            pipeline_target: fastvideo.pipelines.basic.hunyuan.hunyuan_pipeline.HunyuanVideoPipeline
            dataset_file: data/hunyuan_overfit_preprocessed/validation_prompts.json
            every_steps: 10
            sampling_steps: [5]
            guidance_scale: 1.0
        pipeline: {}
        """;

    public static IEnumerable<object[]> All() =>
    [
        ["dmd2", Dmd2], ["lora", LoraFinetune], ["list", ListFinetune], ["self_forcing", SelfForcing], ["kd_causal", KdCausal],
        ["dfsft", Dfsft], ["tfsft", Dfsft.Replace("fine_tuning.dfsft.DiffusionForcingSFTMethod", "fine_tuning.tfsft.TeacherForcingSFTMethod")],
        ["hunyuan_finetune", HunyuanFinetune], ["hunyuan_lora", HunyuanLora],
        ["kd", KdCausal.Replace("kd.KDCausalMethod", "kd.KDMethod").Replace("WanCausalModel", "WanModel").Replace("  num_frames_per_block: 3\n", "")],
    ];

    public static RunConfig Load(string yaml, params string[] overrides) =>
        RecipeLoader.LoadText(yaml, "run.yaml", overrides, ModelFamilyRegistry.Default);

    /// <summary>
    /// Every leaf of <paramref name="yaml"/> against the loaded config, printed in FastVideo's form: the same value at
    /// the same path, with FastVideo's equivalences (a class path alias is its class; data_path as one folder or a
    /// list is a map folder -> 1; betas "b1,b2" is [b1, b2]; a null in training is the default; an int is a float
    /// where the record holds one). Keys FastVideo ignores (the warnings) must be gone.
    /// </summary>
    public static void CheckTypedValuesAgainstYaml(string yaml, RunConfig config)
    {
        var printed = Parse(RecipePrinter.ToYaml(config, RecipeForm.FastVideo, ModelFamilyRegistry.Default, MethodRegistry.Default,
            CallbackRegistry.Default));
        var ignored = config.Notes.Where(n => n.Kind == RecipeNoteKind.Ignored).Select(n => n.KeyPath).ToHashSet();
        int leaves = 0;
        Walk(Parse(yaml), "");
        Assert.True(leaves > 5, $"only {leaves} leaves compared");
        return;

        void Walk(YamlNode node, string path)
        {
            if (ignored.Contains(path))
            {
                Assert.Null(At(printed, path));
                return;
            }
            switch (node)
            {
                case YamlMappingNode map when path.EndsWith("data_path", StringComparison.Ordinal):
                    Assert.Equal(map.Children.ToDictionary(e => ((YamlScalarNode)e.Key).Value!, e => Scalar(e.Value)),
                        DataPath(At(printed, path)));
                    leaves++;
                    return;
                case YamlMappingNode map when map.Children.Count == 0:
                    // {} is an empty free map (moba_config: {}) or a section of defaults (pipeline: {}).
                    Assert.True(At(printed, path) is YamlMappingNode, $"{path}: expected a map");
                    leaves++;
                    return;
                case YamlMappingNode map:
                    foreach (var (k, v) in map.Children) Walk(v, path.Length == 0 ? ((YamlScalarNode)k).Value! : $"{path}.{((YamlScalarNode)k).Value}");
                    return;
                case YamlSequenceNode seq when path.EndsWith("data_path", StringComparison.Ordinal):
                    Assert.Equal(seq.Children.ToDictionary(c => ((YamlScalarNode)c).Value!, _ => (object?)1.0), DataPath(At(printed, path)));
                    leaves++;
                    return;
                case YamlSequenceNode seq:
                    var actual = Assert.IsType<YamlSequenceNode>(At(printed, path));
                    Assert.Equal(seq.Children.Select(Scalar).ToList(), actual.Children.Select(Scalar).ToList());
                    leaves++;
                    return;
                case YamlScalarNode scalar:
                    var expected = Scalar(scalar);
                    var at = At(printed, path);
                    leaves++;
                    // null = the default: training drops it (as FastVideo's x or default), roles are printed without it.
                    if (expected is null && (path.StartsWith("training.", StringComparison.Ordinal) || at is null)) return;
                    if (path.EndsWith("data_path", StringComparison.Ordinal))
                    {
                        Assert.Equal(new Dictionary<string, object?> { [(string)expected!] = 1.0 }, DataPath(at));
                        return;
                    }
                    if (path.EndsWith("betas", StringComparison.Ordinal) && expected is string betas)
                    {
                        Assert.Equal(betas.Split(',').Select(b => (object?)double.Parse(b, CultureInfo.InvariantCulture)).ToList(),
                            Assert.IsType<YamlSequenceNode>(at).Children.Select(Scalar).ToList());
                        return;
                    }
                    if (path.EndsWith(FastVideoForm.TargetKey, StringComparison.Ordinal))
                    {
                        Assert.Equal(Class(path, (string)expected!), Class(path, (string)Scalar(at!)!));
                        return;
                    }
                    Assert.True(at is YamlScalarNode, $"{path}: missing from the loaded recipe");
                    Assert.True(Equals(expected, Scalar(at!)), $"{path}: the recipe says {expected ?? "null"}, the loaded recipe {Scalar(at!) ?? "null"}");
                    return;
            }
        }
    }

    /// <summary>The registry entry a class path names (so an alias equals the canonical path).</summary>
    private static string? Class(string path, string classPath) => path.Split('.')[0] switch
    {
        "models" => ModelFamilyRegistry.Default.NameOfClassPath(classPath),
        "method" => MethodRegistry.Default.NameOfClassPath(classPath),
        _ => CallbackRegistry.Default.NameOfClassPath(classPath),
    };

    private static Dictionary<string, object?> DataPath(YamlNode? node) =>
        Assert.IsType<YamlMappingNode>(node).Children.ToDictionary(e => ((YamlScalarNode)e.Key).Value!, e => Scalar(e.Value));

    private static YamlNode Parse(string yaml)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        return stream.Documents[0].RootNode;
    }

    private static YamlNode? At(YamlNode root, string path)
    {
        YamlNode? node = root;
        foreach (var segment in path.Split('.'))
            node = node is YamlMappingNode m && m.Children.TryGetValue(new YamlScalarNode(segment), out var next) ? next : null;
        return node;
    }

    /// <summary>A scalar as a comparable value: numbers as double (1e-5 included), booleans, null, strings.</summary>
    private static object? Scalar(YamlNode node)
    {
        var s = Assert.IsType<YamlScalarNode>(node);
        var text = s.Value ?? "";
        if (s.Style is YamlDotNet.Core.ScalarStyle.DoubleQuoted or YamlDotNet.Core.ScalarStyle.SingleQuoted) return text;
        if (text is "" or "null" or "~") return null;
        if (text is "true" or "false") return text == "true";
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : text;
    }
}

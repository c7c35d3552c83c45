using FastVideo.Configs;
using Xunit;

namespace FastVideo.Tests.Configs;

internal static class RecipeTestSupport
{
    /// <summary>The example recipe from the format description.</summary>
    public const string Example = """
        recipe: {family: wan, method: dmd2}
        roles:
          student: {init_from: path/or/Org/Model, trainable: true}
          teacher: {family: wan_causal, init_from: Org/Teacher, trainable: false, flow_shift: 5.0}
        method:   # bound into DMD2Options
          rollout_mode: simulate
          dmd_denoising_steps: [1000, 750, 500, 250]
          fake_score_learning_rate: 1.0e-5
          fake_score_betas: [0.0, 0.999]
          fake_score_lr_scheduler: constant
        training:
          data: {data_path: data/synth, train_batch_size: 2, seed: 42, num_latent_t: 4}
          optimizer: {learning_rate: 1.0e-4, betas: [0.9, 0.999], lr_scheduler: cosine}
          loop: {max_train_steps: 100}
          dit_precision: fp32
        callbacks:
          grad_clip: {max_grad_norm: 1.0}
          ema: {decay: 0.999}
        pipeline: {flow_shift: 3.0}
        """;

    /// <summary>The smallest valid recipe: one role and a family.</summary>
    public const string Minimal = """
        recipe:
          family: wan
        roles:
          student:
            init_from: Org/Model
        """;

    /// <summary>A recipe of the "probe" test method (<see cref="ProbeOptions"/>: typed options and a free map).</summary>
    public const string Probe = """
        recipe: {family: wan, method: probe}
        roles:
          student: {init_from: Org/Model}
        method: {steps: 2}
        """;

    public static RunConfig Load(string yaml, params string[] overrides) =>
        RecipeLoader.LoadText(yaml, "recipe.yaml", overrides, TestFamilies.Instance, TestMethods.Instance);

    /// <summary>The method options of a loaded recipe as <typeparamref name="T"/>.</summary>
    public static T Method<T>(RunConfig config) where T : MethodOptions => Assert.IsType<T>(config.Method);

    /// <summary>Loads and expects a <see cref="RecipeError"/>.</summary>
    public static RecipeError Fail(string yaml, params string[] overrides) =>
        Assert.Throws<RecipeError>(() => Load(yaml, overrides));

    /// <summary>1-based line of the first occurrence of <paramref name="text"/> (so tests do not hard-code lines).</summary>
    public static int LineOf(string yaml, string text)
    {
        int index = yaml.IndexOf(text, StringComparison.Ordinal);
        Assert.True(index >= 0, $"'{text}' not in the recipe");
        return yaml[..index].Count(c => c == '\n') + 1;
    }
}

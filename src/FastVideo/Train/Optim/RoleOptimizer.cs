using FastVideo.Configs;
using FastVideo.Train.Models;

namespace FastVideo.Train.Optim;

/// <summary>One role's AdamW and its LR scheduler, stepped together. Owns the AdamW (and so its moments).</summary>
public sealed class RoleOptimizer : IDisposable
{
    public RoleOptimizer(string role, AdamW optimizer, LambdaLrScheduler scheduler)
    {
        Role = role; Optimizer = optimizer; Scheduler = scheduler;
    }

    public string Role { get; }
    public AdamW Optimizer { get; }
    public LambdaLrScheduler Scheduler { get; }

    public void Dispose() => Optimizer.Dispose();

    /// <summary>
    /// Spec 7.1: AdamW over the role's trainable transformer parameters (named as the module names them, i.e. the
    /// Diffusers keys) and the schedule of spec 7.2 over <c>loop.max_train_steps</c>. <paramref name="keyPath"/>
    /// names the optimizer section in errors.
    /// </summary>
    public static RoleOptimizer Create(ModelBase model, OptimizerConfig cfg, int maxTrainSteps, string? stepRules = null,
        string keyPath = "training.optimizer")
    {
        var named = model.Transformer.named_parameters().Where(p => p.parameter.requires_grad)
            .Select(p => (p.name, p.parameter)).ToList();
        if (named.Count == 0)
            throw new UserError($"role '{model.Role}' has no trainable parameters (roles.{model.Role}.trainable is false?)");
        if (cfg.Betas.Count != 2)
            throw new UserError($"{keyPath}.betas: expected two numbers, got {cfg.Betas.Count}");
        var adam = new AdamW(named, cfg.LearningRate, cfg.Betas[0], cfg.Betas[1], cfg.Eps, cfg.WeightDecay);
        var schedule = LrSchedule.Create(cfg.LrScheduler, cfg.LearningRate, cfg.LrWarmupSteps, maxTrainSteps,
            cfg.LrNumCycles, cfg.LrPower, cfg.MinLrRatio, stepRules, keyPath);
        return new RoleOptimizer(model.Role, adam, new LambdaLrScheduler(adam, schedule));
    }
}

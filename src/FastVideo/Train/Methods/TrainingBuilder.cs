using FastVideo.Configs;
using FastVideo.Train.Models;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods;

/// <summary>Builds the roles and the method of a recipe, checking everything cheap before any weights load.</summary>
public static class TrainingBuilder
{
    /// <summary>
    /// Builds inside a dispose scope: module parameters and buffers survive it (modules register them), and so must
    /// any other tensor a family or method keeps from its constructor (detach it with DetachFromDisposeScope); the
    /// loaded weights and every conversion in between are freed when the build returns.
    /// </summary>
    public static TrainingMethod Build(RunConfig config, ModelFamilyRegistry? families = null, MethodRegistry? methods = null)
    {
        families ??= ModelFamilyRegistry.Default;
        // A recipe asking for a feature that is not implemented (VSA, another attention backend, ...) loads but does not train.
        config.RequireImplemented();
        var method = (methods ?? MethodRegistry.Default).Get(config.Recipe.Method);
        method.CheckRoles(config);
        CheckSharedLatentSpace(config, families);
        CheckDataParallel(config, families, method, FastVideo.Distributed.World.Current);

        using var scope = NewDisposeScope();
        var models = new Dictionary<string, ModelBase>(StringComparer.Ordinal);
        try
        {
            foreach (var (role, rc) in config.Roles) models[role] = families.Create(role, rc, config);
            return method.Create(config, models);
        }
        catch
        {
            foreach (var m in models.Values) m.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A run on several processes needs a method and families whose per-sample draws are dealt by rank
    /// (<see cref="FastVideo.Distributed.DataParallelDraws"/>); otherwise every process would draw the same noise.
    /// </summary>
    public static void CheckDataParallel(RunConfig config, ModelFamilyRegistry families, MethodDescriptor method, FastVideo.Distributed.ProcessGroup group)
    {
        if (!group.IsDistributed) return;
        const string fix = "run it in one process (without mpiexec), or give it data-parallel draws (DataParallelDraws)";
        if (!method.DataParallelDraws)
            throw new UserError($"recipe.method: method '{method.Name}' does not deal its random draws to the processes of a data-parallel run yet; {fix}");
        foreach (var (role, rc) in config.Roles)
        {
            var family = rc.Family ?? config.Recipe.Family!;
            if (!families.Get(family).DataParallelDraws)
                throw new UserError($"roles.{role}: family '{family}' does not deal its random draws to the processes of a data-parallel run yet; {fix}");
        }
    }

    /// <summary>Roles of one method exchange latents, so their families must share a latent space.</summary>
    public static void CheckSharedLatentSpace(RunConfig config, ModelFamilyRegistry families)
    {
        var spaces = config.Roles.Select(kv =>
        {
            var family = kv.Value.Family ?? config.Recipe.Family ?? throw new UserError($"roles.{kv.Key}.family: no family given and recipe.family is not set");
            return (Role: kv.Key, Family: family, Space: families.Get(family).LatentSpace);
        }).ToList();
        var distinct = spaces.Select(s => s.Space).Distinct().ToList();
        if (distinct.Count > 1)
            throw new UserError("roles: the roles' families do not share a latent space: " +
                string.Join(", ", spaces.Select(s => $"{s.Role} ({s.Family}: {s.Space})")) +
                "; the roles of a method exchange latents, and each family's transformer reads its own VAE's latents " +
                "(different channels, normalisation and meaning), so use one family's latent space for every role");
    }
}

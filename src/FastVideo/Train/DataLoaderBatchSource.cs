using System.Text.Json.Nodes;
using FastVideo.Configs;
using FastVideo.Data;
using FastVideo.Distributed;
using FastVideo.Train.Models;
using FastVideo.Weights;
using static TorchSharp.torch;

namespace FastVideo.Train;

/// <summary>
/// The trainer's batch source over FastVideo parquet data: a <see cref="DataLoader"/> configured from
/// <c>training.data</c> and the student family's text length, with its position checkpointed as JSON. In a
/// multi-process run (<see cref="World.Current"/>) each process reads its shard of every epoch's order.
/// </summary>
public sealed class DataLoaderBatchSource : IBatchSource, IRowSource
{
    private readonly DataLoader _loader;
    private readonly BatchCollator _rows;   // the loader's collation without CFG dropout

    public DataLoaderBatchSource(DataLoader loader)
    {
        _loader = loader;
        _rows = new BatchCollator(loader.Collator.TextLen, cfgRate: 0.0, loader.Collator.Seed);
    }

    public DataLoader Loader => _loader;

    /// <summary>Builds the loader for a recipe. CFG-dropped text becomes the dataset's empty-caption embedding
    /// (negative_prompt_embeds.safetensors beside the data) when there is one, else zeros as upstream.</summary>
    public static DataLoaderBatchSource FromConfig(RunConfig config, ModelFamilyRegistry families)
    {
        var data = config.Training.Data;
        if (data.DataPath.Count == 0) throw new UserError("training.data.data_path: required for training (a folder of FastVideo parquet files)");
        var studentFamily = config.Roles.TryGetValue("student", out var s) ? s.Family ?? config.Recipe.Family : config.Recipe.Family;
        int textLen = config.Pipeline.TextLen ?? (studentFamily is null ? 512 : families.Get(studentFamily).Defaults.TextLen);
        Tensor? uncond = null;
        var negPath = ParquetVideoDataset.FindNegativePromptEmbeds(data.DataPath);
        if (negPath is not null && data.TrainingCfgRate > 0)
        {
            var (embeds, mask) = NegativePromptEmbeds.Load(negPath, "training.data.data_path");
            mask.Dispose();
            if (embeds.shape[0] is var n && n != 1)
            {
                embeds.Dispose();
                throw new UserError($"training.data.data_path: '{negPath}' holds {n} empty-caption embeddings; CFG dropout needs one [1, L, D]");
            }
            uncond = embeds;
        }
        // The loader's collator copies the empty-caption embedding, so the tensor is freed here.
        var world = World.Current;
        using (uncond) return new DataLoaderBatchSource(DataLoader.FromConfig(data, textLen, uncond, rank: world.Rank, ranks: world.Size));
    }

    public RawBatch Next() => _loader.Next();

    public long RowCount => _loader.Dataset.Count;

    public string Description => string.Join(", ", _loader.Dataset.Sources.Select(s => s.Path));

    public RawBatch ReadRows(IReadOnlyList<long> indices) => _loader.Dataset.ReadBatch(indices, _rows);

    public JsonNode? GetState()
    {
        var s = _loader.GetState();
        return new JsonObject { ["epoch"] = s.Epoch, ["position"] = s.Position, ["seed"] = s.Seed, ["global_batch"] = _loader.GlobalBatchSize };
    }

    /// <summary>Continues where the checkpoint's loader stood. Positions count global batches, so a run may resume on
    /// another number of processes only with the same global batch (processes x train_batch_size).</summary>
    public void Restore(JsonNode? state)
    {
        if (state is null) return;
        long saved = (long?)state["global_batch"] ?? _loader.BatchSize;   // older checkpoints: one process
        if (saved != _loader.GlobalBatchSize)
            throw new UserError($"the checkpoint's data position counts batches of {saved} samples (processes x train_batch_size), " +
                                $"but this run's global batch is {_loader.GlobalBatchSize}: resume with the same number of processes and batch size");
        _loader.Restore(new LoaderState((long)state["epoch"]!, (long)state["position"]!, (long)state["seed"]!));
    }

    public void Dispose() => _loader.Dispose();
}

using System.Text.Json.Nodes;
using FastVideo.Data;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.KnowledgeDistillation;

/// <summary>
/// KD's training batches, read from a complete <see cref="TrajectoryCache"/> (upstream's <c>_KDPathDataset</c> behind
/// its lazy loader wrapper): each epoch a permutation of the entries keyed by (seed, epoch), as the parquet
/// <see cref="DataLoader"/> orders rows, in batches of train_batch_size (the last short one dropped or completed from
/// the epoch's start, as drop_last says). A batch holds <c>real</c> as its <see cref="RawBatch.VaeLatent"/> [B,C,T,H,W]
/// (the latents KD's prepare_batch gets), the text as its conditioning, and <c>trajectory_latents</c> [B,S,T,C,H,W] and
/// <c>trajectory_timesteps</c> [B,S] as <see cref="RawBatch.Extras"/>. Its position is checkpointed as the loader's is.
/// Until <see cref="Activate"/> (after the cache is built) it yields nothing.
/// </summary>
public sealed class TrajectoryCacheBatchSource : IBatchSource
{
    private TrajectoryCache? _cache;
    private long _total, _batchesPerEpoch, _epoch, _position;
    private readonly int _batchSize;
    private readonly bool _dropLast;
    private readonly long _seed;

    public TrajectoryCacheBatchSource(int batchSize, bool dropLast, long seed)
    {
        if (batchSize < 1) throw new UserError($"training.data.train_batch_size: must be at least 1, got {batchSize}");
        (_batchSize, _dropLast, _seed) = (batchSize, dropLast, seed);
    }

    /// <summary>Starts reading from <paramref name="cache"/>, whose entries [0, <paramref name="total"/>) are all on disk.</summary>
    public void Activate(TrajectoryCache cache, long total)
    {
        _batchesPerEpoch = _dropLast ? total / _batchSize : (total + _batchSize - 1) / _batchSize;
        if (_batchesPerEpoch == 0)
            throw new UserError($"the trajectory cache {cache.Directory} has {total} entries, fewer than train_batch_size {_batchSize} with drop_last: no batch can be made");
        (_cache, _total) = (cache, total);
    }

    private TrajectoryCache Cache => _cache ?? throw new InvalidOperationException("the trajectory cache is not built yet (the method builds it in OnTrainStart)");

    public RawBatch Next()
    {
        var cache = Cache;
        var order = DataLoader.EpochOrder(_seed, _epoch, checked((int)_total));
        var indices = Enumerable.Range(0, _batchSize).Select(i => (long)order[(_position * _batchSize + i) % order.Length]).ToArray();
        (_epoch, _position) = _position + 1 >= _batchesPerEpoch ? (_epoch + 1, 0) : (_epoch, _position + 1);

        using var scope = NewDisposeScope();
        var entries = indices.Select(cache.Read).ToList();
        Tensor Stack(Func<TrajectoryEntry, Tensor> pick) => stack(entries.Select(pick).ToArray());
        var batch = new RawBatch
        {
            VaeLatent = Stack(e => e.Real).permute(0, 2, 1, 3, 4).contiguous().MoveToOuterDisposeScope(),   // [B,T,C,H,W] -> [B,C,T,H,W]
            Conditioning = Conditioning.FromText(Stack(e => e.TextEmbedding), Stack(e => e.TextAttentionMask)).MoveToOuterDisposeScope(),
            SampleIndices = indices,
            Extras = new Dictionary<string, Tensor>
            {
                ["trajectory_latents"] = Stack(e => e.TrajectoryLatents).MoveToOuterDisposeScope(),
                ["trajectory_timesteps"] = Stack(e => e.TrajectoryTimesteps).MoveToOuterDisposeScope(),
            },
        };
        foreach (var e in entries) e.Dispose();
        return batch;
    }

    public JsonNode? GetState() => new JsonObject { ["epoch"] = _epoch, ["position"] = _position, ["seed"] = _seed };

    public void Restore(JsonNode? state)
    {
        if (state is null) return;
        long seed = (long)state["seed"]!, epoch = (long)state["epoch"]!, position = (long)state["position"]!;
        if (seed != _seed)
            throw new UserError($"the saved trajectory-cache loader state was made with data.seed {seed} but this run has data.seed {_seed}; resume with the same seed");
        if (epoch < 0 || position < 0 || position >= Math.Max(1, _batchesPerEpoch))
            throw new UserError($"the saved trajectory-cache loader state (epoch {epoch}, batch {position}) does not fit this cache ({_batchesPerEpoch} batches per epoch)");
        (_epoch, _position) = (epoch, position);
    }

    public void Dispose() { }
}

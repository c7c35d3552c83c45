using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.ExceptionServices;
using FastVideo.Configs;
using static TorchSharp.torch;

namespace FastVideo.Data;

/// <summary>Where a loader stands: the next batch it yields is batch <see cref="Position"/> of epoch
/// <see cref="Epoch"/> in the order drawn from <see cref="Seed"/>. Saved with checkpoints.</summary>
public sealed record LoaderState(long Epoch, long Position, long Seed);

public sealed record DataLoaderOptions
{
    public int BatchSize { get; init; } = 1;
    /// <summary>true: the last incomplete batch of an epoch is dropped. false: it is completed cyclically from the
    /// start of the epoch's order (upstream's padding), so every batch has <see cref="BatchSize"/> rows.</summary>
    public bool DropLast { get; init; } = true;
    public long Seed { get; init; }
    /// <summary>Batches prepared ahead on a background thread (0 = build each batch when asked).</summary>
    public int PrefetchBatches { get; init; } = 2;
    /// <summary>Text rows per sample (pipeline text_len).</summary>
    public int TextLen { get; init; } = 512;
    public double CfgRate { get; init; }
    /// <summary>Optional empty-caption embedding [L, D] or [1, L, D] used for CFG-dropped samples.</summary>
    public Tensor? UnconditionalText { get; init; }
    /// <summary>Data parallel: this process's rank and the number of processes; each takes every
    /// <see cref="Ranks"/>-th sample of the epoch's order, from its rank on (one process: 0 and 1).</summary>
    public int Rank { get; init; }
    public int Ranks { get; init; } = 1;
}

/// <summary>
/// Endless, resumable batches over a <see cref="ParquetVideoDataset"/>.
/// <para>Order: every epoch is a fresh permutation of all samples drawn from SplitMix64 keyed by (seed, epoch)
/// (upstream repeats one permutation forever). Batch k of an epoch = permutation[k*B .. (k+1)*B).</para>
/// <para>Data parallel over N processes (upstream's DP sampler): the same permutation on every rank, dealt like
/// cards: row i of rank r's batch k is permutation[(k*B + i)*N + r], so the N batches k together are batch k of one
/// process with batch N*B (same global order), and an epoch has (count / N*B) batches (rounded up without
/// drop_last, the last ones completed cyclically).</para>
/// <para>Resume: <see cref="GetState"/> names the next batch <see cref="Next"/> returns; a loader given that state
/// with <see cref="Restore"/> yields exactly the batches an uninterrupted loader would, including dropout choices
/// (keyed by sample index) and later epochs.</para>
/// <para>Prefetch: with <see cref="DataLoaderOptions.PrefetchBatches"/> &gt; 0 a background thread keeps up to that
/// many batches ready; <see cref="LastWaitSeconds"/> tells how long the last <see cref="Next"/> waited.</para>
/// </summary>
public sealed class DataLoader : IDisposable
{
    private sealed record Item(RawBatch? Batch, ExceptionDispatchInfo? Error, long Epoch, long Position);

    private readonly ParquetVideoDataset _dataset;
    private readonly bool _ownsDataset;
    private readonly BatchCollator _collator;
    private readonly DataLoaderOptions _options;
    private long _epoch, _position; // next batch to hand out
    private int[]? _order;
    private long _orderEpoch = -1;
    private readonly object _orderLock = new();

    private Thread? _producer;
    private BlockingCollection<Item>? _queue;
    private CancellationTokenSource? _cancel;
    private ExceptionDispatchInfo? _fault;
    private bool _disposed;

    public DataLoader(ParquetVideoDataset dataset, DataLoaderOptions options, bool ownsDataset = false)
    {
        _dataset = dataset;
        _ownsDataset = ownsDataset;
        _options = options;
        if (options.BatchSize < 1) throw new UserError($"train_batch_size must be at least 1, got {options.BatchSize}");
        if (options.PrefetchBatches < 0) throw new UserError($"prefetch_batches must be >= 0, got {options.PrefetchBatches}");
        if (dataset.Count > int.MaxValue) throw new UserError($"dataset has {dataset.Count} samples; at most {int.MaxValue} are supported");
        if (options.Ranks < 1 || options.Rank < 0 || options.Rank >= options.Ranks)
            throw new ArgumentException($"rank {options.Rank} of {options.Ranks} processes");
        long global = (long)options.BatchSize * options.Ranks;
        BatchesPerEpoch = options.DropLast ? dataset.Count / global : (dataset.Count + global - 1) / global;
        if (BatchesPerEpoch == 0)
            throw new UserError($"the dataset has {dataset.Count} samples, fewer than train_batch_size {options.BatchSize}" +
                                (options.Ranks > 1 ? $" x {options.Ranks} processes" : "") + " with drop_last: no batch can be made");
        _collator = new BatchCollator(options.TextLen, options.CfgRate, options.Seed, options.UnconditionalText);
    }

    /// <summary>Opens <c>data.data_path</c> and builds a loader from the recipe's data section.</summary>
    public static DataLoader FromConfig(DataConfig data, int textLen, Tensor? unconditionalText = null, DatasetOptions? datasetOptions = null,
        int rank = 0, int ranks = 1)
    {
        var dataset = ParquetVideoDataset.Open(data.DataPath, datasetOptions);
        try
        {
            return new DataLoader(dataset, new DataLoaderOptions
            {
                BatchSize = data.TrainBatchSize, DropLast = data.DropLast, Seed = data.Seed,
                PrefetchBatches = data.PrefetchBatches, TextLen = textLen, CfgRate = data.TrainingCfgRate,
                UnconditionalText = unconditionalText, Rank = rank, Ranks = ranks,
            }, ownsDataset: true);
        }
        catch
        {
            dataset.Dispose();
            throw;
        }
    }

    public ParquetVideoDataset Dataset => _dataset;
    public BatchCollator Collator => _collator;
    public int BatchSize => _options.BatchSize;
    /// <summary>Samples per step over all processes: train_batch_size x processes.</summary>
    public long GlobalBatchSize => (long)_options.BatchSize * _options.Ranks;
    public long BatchesPerEpoch { get; }
    /// <summary>Seconds the last <see cref="Next"/> spent waiting for its batch (building it, without prefetch).</summary>
    public double LastWaitSeconds { get; private set; }
    public double TotalWaitSeconds { get; private set; }
    public long BatchesServed { get; private set; }

    public LoaderState GetState() => new(_epoch, _position, _options.Seed);

    /// <summary>Continues from a saved state. Throws <see cref="UserError"/> when the state does not fit this loader
    /// (other seed, or a position past the end of an epoch of this dataset and batch size).</summary>
    public void Restore(LoaderState state)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (state.Seed != _options.Seed)
            throw new UserError($"the saved data loader state was made with data.seed {state.Seed} but this run has " +
                                $"data.seed {_options.Seed}; resume with the same seed");
        if (state.Epoch < 0 || state.Position < 0 || state.Position > BatchesPerEpoch)
            throw new UserError($"the saved data loader state (epoch {state.Epoch}, batch {state.Position}) does not fit " +
                                $"this dataset ({BatchesPerEpoch} batches per epoch): did the data or batch size change?");
        StopProducer();
        _fault = null;
        (_epoch, _position) = state.Position == BatchesPerEpoch ? (state.Epoch + 1, 0) : (state.Epoch, state.Position);
    }

    /// <summary>The sample indices of this rank's batch <paramref name="position"/> of epoch <paramref name="epoch"/>.</summary>
    public long[] BatchIndices(long epoch, long position)
    {
        var order = Order(epoch);
        var idx = new long[_options.BatchSize];
        for (int i = 0; i < idx.Length; i++)
            idx[i] = order[((position * _options.BatchSize + i) * _options.Ranks + _options.Rank) % order.Length];
        return idx;
    }

    /// <summary>The sample order of an epoch: a permutation keyed by (seed, epoch).</summary>
    public static int[] EpochOrder(long seed, long epoch, int count) => SplitMix64.Keyed(seed, epoch).Permutation(count);

    private int[] Order(long epoch)
    {
        lock (_orderLock)
        {
            if (_orderEpoch != epoch)
            {
                _order = EpochOrder(_options.Seed, epoch, (int)_dataset.Count);
                _orderEpoch = epoch;
            }
            return _order!;
        }
    }

    private RawBatch Build(long epoch, long position) => _dataset.ReadBatch(BatchIndices(epoch, position), _collator);

    private (long, long) Advance(long epoch, long position) =>
        position + 1 >= BatchesPerEpoch ? (epoch + 1, 0) : (epoch, position + 1);

    /// <summary>The next batch (the caller disposes it). Iterates endlessly across epochs. A data error is thrown
    /// here, and again on later calls.</summary>
    public RawBatch Next()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _fault?.Throw();
        var sw = Stopwatch.StartNew();
        RawBatch batch;
        if (_options.PrefetchBatches == 0)
        {
            try
            {
                batch = Build(_epoch, _position);
            }
            catch (Exception e)
            {
                _fault = ExceptionDispatchInfo.Capture(e);
                throw;
            }
        }
        else
        {
            if (_producer is null) StartProducer();
            var item = _queue!.Take();
            if (item.Error is not null)
            {
                _fault = item.Error;
                item.Error.Throw();
            }
            Debug.Assert(item.Epoch == _epoch && item.Position == _position);
            batch = item.Batch!;
        }
        LastWaitSeconds = sw.Elapsed.TotalSeconds;
        TotalWaitSeconds += LastWaitSeconds;
        BatchesServed++;
        (_epoch, _position) = Advance(_epoch, _position);
        return batch;
    }

    private void StartProducer()
    {
        _cancel = new CancellationTokenSource();
        _queue = new BlockingCollection<Item>(new ConcurrentQueue<Item>(), _options.PrefetchBatches);
        var token = _cancel.Token;
        var queue = _queue;
        long epoch = _epoch, position = _position;
        _producer = new Thread(() =>
        {
            try
            {
                while (!token.IsCancellationRequested)
                {
                    Item item;
                    try
                    {
                        item = new Item(Build(epoch, position), null, epoch, position);
                    }
                    catch (Exception e)
                    {
                        queue.Add(new Item(null, ExceptionDispatchInfo.Capture(e), epoch, position), token);
                        return; // the consumer rethrows; nothing after a failed batch is produced
                    }
                    try
                    {
                        queue.Add(item, token);
                    }
                    catch (OperationCanceledException)
                    {
                        item.Batch?.Dispose();
                        return;
                    }
                    (epoch, position) = Advance(epoch, position);
                }
            }
            catch (OperationCanceledException) { }
        })
        { IsBackground = true, Name = "FastVideo data prefetch" };
        _producer.Start();
    }

    private void StopProducer()
    {
        if (_producer is null) return;
        _cancel!.Cancel();
        // Unblock a producer waiting on a full queue, then wait for the batch it may be building.
        while (_producer.IsAlive)
        {
            while (_queue!.TryTake(out var item)) item.Batch?.Dispose();
            _producer.Join(50);
        }
        while (_queue!.TryTake(out var rest)) rest.Batch?.Dispose();
        _queue.Dispose();
        _cancel.Dispose();
        _producer = null;
        _queue = null;
        _cancel = null;
    }

    public void Dispose()
    {
        if (_disposed) return;
        StopProducer();
        _disposed = true;
        if (_ownsDataset) _dataset.Dispose();
    }
}

using FastVideo.Data;

namespace FastVideo.Train;

/// <summary>
/// Random access to the rows behind a batch source, by global sample index, as the dataset holds them (no CFG text
/// dropout): what a method reads when it precomputes something per row (KD's teacher trajectories).
/// </summary>
public interface IRowSource
{
    /// <summary>Rows in the dataset.</summary>
    long RowCount { get; }

    /// <summary>Where the rows come from (the data paths), for messages and cache metadata.</summary>
    string Description { get; }

    /// <summary>The rows <paramref name="indices"/> collated into one batch, their text never dropped.</summary>
    RawBatch ReadRows(IReadOnlyList<long> indices);
}

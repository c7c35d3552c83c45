using static TorchSharp.torch;

namespace FastVideo.Data;

/// <summary>A tensor as it sits in a parquet row: raw little-endian bytes, a shape and an element type.</summary>
public readonly record struct TensorBytes(ReadOnlyMemory<byte> Bytes, long[] Shape, TensorDType DType)
{
    public long ElementCount => ShapeProduct(Shape);

    /// <summary>Encodes float32 values (row-major, <paramref name="shape"/>) as <paramref name="dtype"/> bytes.</summary>
    public static TensorBytes FromFloats(ReadOnlySpan<float> values, long[] shape, TensorDType dtype = TensorDType.Float32)
    {
        if (ShapeProduct(shape) != values.Length)
            throw new ArgumentException($"{values.Length} values do not fill shape [{string.Join(", ", shape)}]");
        return new TensorBytes(TensorDTypes.Encode(values, dtype), (long[])shape.Clone(), dtype);
    }

    /// <summary>Encodes a float tensor (any shape; it is read as float32 values).</summary>
    public static TensorBytes FromTensor(Tensor tensor, TensorDType dtype = TensorDType.Float32)
    {
        using var scope = NewDisposeScope(); // frees the intermediate tensors of the conversion chain
        var t = tensor.detach().to(ScalarType.Float32).contiguous().cpu();
        return FromFloats(t.data<float>().ToArray(), t.shape, dtype);
    }

    public void DecodeTo(Span<float> destination) => TensorDTypes.Decode(Bytes.Span, DType, destination);

    public float[] ToFloatArray()
    {
        var a = new float[ElementCount];
        DecodeTo(a);
        return a;
    }

    /// <summary>A new float32 tensor with <see cref="Shape"/> (the caller disposes it).</summary>
    public Tensor ToTensor() => tensor(ToFloatArray(), Shape);

    internal static long ShapeProduct(long[] shape)
    {
        long n = 1;
        foreach (var d in shape) n = checked(n * d);
        return n;
    }

    internal static string Format(long[]? shape) => shape is null ? "null" : "[" + string.Join(", ", shape) + "]";
}

/// <summary>
/// One clip of a FastVideo T2V dataset (one parquet row): the VAE latent <c>[C,T,H,W]</c>, the text embedding
/// <c>[L_valid, D]</c> and the metadata columns. Rows returned by <see cref="ParquetVideoDataset.ReadRow"/> own their
/// bytes; rows handed to a collator inside <see cref="ParquetVideoDataset.ReadBatch"/> are views valid for that call.
/// </summary>
public sealed class VideoRow
{
    public required TensorBytes Latent { get; init; }
    public required TensorBytes Text { get; init; }
    public string Id { get; init; } = "";
    public string Caption { get; init; } = "";
    public string FileName { get; init; } = "";
    public string MediaType { get; init; } = "video";
    public long? Width { get; init; }
    public long? Height { get; init; }
    /// <summary>FastVideo's writer stores the latent T here.</summary>
    public long? NumFrames { get; init; }
    public double? DurationSec { get; init; }
    public double? Fps { get; init; }

    /// <summary>Every metadata column read from the file (name -> value), in file column order; empty for rows
    /// built in memory. This is what goes into a batch's info_list (plus "prompt").</summary>
    public IReadOnlyDictionary<string, object?> Metadata { get; init; } = new Dictionary<string, object?>();

    /// <summary>Where the row came from, for error messages: "path: row N" (empty for rows built in memory).</summary>
    public string Source { get; init; } = "";

    /// <summary>The info_list entry: the metadata columns (or the typed fields when the row was built in memory)
    /// plus <c>prompt</c> = caption, as upstream's collator builds it.</summary>
    public Dictionary<string, object?> ToInfo()
    {
        var info = Metadata.Count > 0
            ? new Dictionary<string, object?>(Metadata)
            : new Dictionary<string, object?>
            {
                [ParquetSchema.Id] = Id, [ParquetSchema.FileName] = FileName, [ParquetSchema.Caption] = Caption,
                [ParquetSchema.MediaType] = MediaType, [ParquetSchema.Width] = Width, [ParquetSchema.Height] = Height,
                [ParquetSchema.NumFrames] = NumFrames, [ParquetSchema.DurationSec] = DurationSec, [ParquetSchema.Fps] = Fps,
            };
        info["prompt"] = Caption;
        return info;
    }

    /// <summary>A copy whose tensor bytes are owned arrays (detaches a view from the reader's cache).</summary>
    public VideoRow Detach() => new()
    {
        Latent = Latent with { Bytes = Latent.Bytes.ToArray() },
        Text = Text with { Bytes = Text.Bytes.ToArray() },
        Id = Id, Caption = Caption, FileName = FileName, MediaType = MediaType, Width = Width, Height = Height,
        NumFrames = NumFrames, DurationSec = DurationSec, Fps = Fps, Metadata = Metadata, Source = Source,
    };
}

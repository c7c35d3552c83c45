using Parquet.Schema;
using PqSchema = Parquet.Schema.ParquetSchema;

namespace FastVideo.Data;

/// <summary>
/// FastVideo's T2V parquet layout (upstream <c>pyarrow_schema_t2v</c>, reference spec 2.1): one row = one clip.
/// Tensors are stored as three columns each: <c>X_bytes</c> (raw little-endian), <c>X_shape</c> (list&lt;int64&gt;)
/// and <c>X_dtype</c> (string). Every other column is metadata.
/// </summary>
public static class ParquetSchema
{
    public const string Id = "id";
    public const string LatentBytes = "vae_latent_bytes";
    public const string LatentShape = "vae_latent_shape";
    public const string LatentDType = "vae_latent_dtype";
    public const string TextBytes = "text_embedding_bytes";
    public const string TextShape = "text_embedding_shape";
    public const string TextDType = "text_embedding_dtype";
    public const string FileName = "file_name";
    public const string Caption = "caption";
    public const string MediaType = "media_type";
    public const string Width = "width";
    public const string Height = "height";
    public const string NumFrames = "num_frames";
    public const string DurationSec = "duration_sec";
    public const string Fps = "fps";

    /// <summary>Columns the reader needs: both tensors and the caption (the prompt of info_list). The other spec
    /// columns are metadata: read when present, and always written.</summary>
    public static readonly IReadOnlyList<string> RequiredColumns =
        [LatentBytes, LatentShape, LatentDType, TextBytes, TextShape, TextDType, Caption];

    /// <summary>All columns of the layout, in upstream's order.</summary>
    public static readonly IReadOnlyList<string> AllColumns =
        [Id, LatentBytes, LatentShape, LatentDType, TextBytes, TextShape, TextDType,
         FileName, Caption, MediaType, Width, Height, NumFrames, DurationSec, Fps];

    /// <summary>True for the helper columns of a stored tensor (<c>*_bytes</c>, <c>*_shape</c>, <c>*_dtype</c>), which
    /// are not metadata (upstream's generic rule).</summary>
    public static bool IsTensorColumn(string name) =>
        name.EndsWith("_bytes", StringComparison.Ordinal) || name.EndsWith("_shape", StringComparison.Ordinal) ||
        name.EndsWith("_dtype", StringComparison.Ordinal);

    /// <summary>The schema our writer emits: pyarrow's column types and nullability (all columns nullable, shapes
    /// as the standard 3-level list named list/element).</summary>
    internal static PqSchema CreateWriteSchema() => new(
        new DataField<string>(Id, true),
        new DataField<byte[]>(LatentBytes, true),
        new ListField(LatentShape, new DataField<long>("element")),
        new DataField<string>(LatentDType, true),
        new DataField<byte[]>(TextBytes, true),
        new ListField(TextShape, new DataField<long>("element")),
        new DataField<string>(TextDType, true),
        new DataField<string>(FileName, true),
        new DataField<string>(Caption, true),
        new DataField<string>(MediaType, true),
        new DataField<long>(Width, true),
        new DataField<long>(Height, true),
        new DataField<long>(NumFrames, true),
        new DataField<double>(DurationSec, true),
        new DataField<double>(Fps, true));

    /// <summary>A readable description of a column's parquet/CLR type (for inspect and error messages).</summary>
    public static string Describe(Field field) => field switch
    {
        ListField l => $"list<{(l.Item is DataField d ? DescribeType(d.ClrType) : l.Item.SchemaType.ToString().ToLowerInvariant())}>",
        DataField { MaxRepetitionLevel: > 0 } d => $"repeated {DescribeType(d.ClrType)}",
        DataField d => DescribeType(d.ClrType),
        _ => field.SchemaType.ToString().ToLowerInvariant(),
    };

    private static string DescribeType(Type t) =>
        t == typeof(ReadOnlyMemory<char>) || t == typeof(string) ? "string"
        : t == typeof(ReadOnlyMemory<byte>) || t == typeof(byte[]) ? "binary"
        : t == typeof(long) ? "int64" : t == typeof(int) ? "int32" : t == typeof(short) ? "int16"
        : t == typeof(double) ? "float64" : t == typeof(float) ? "float32" : t == typeof(bool) ? "bool"
        : t.Name.ToLowerInvariant();
}

using System.Buffers.Binary;
using System.Text;

namespace FastVideo.Tests.Train;

/// <summary>
/// A TensorBoard event-file reader written for the tests, sharing no code with the writer: its own table CRC32C,
/// TFRecord parsing that checks both CRCs, and a generic protobuf decoder.
/// </summary>
/// <remarks>
/// Cross-checked once by hand (2026-11-28) outside .NET: files from these tests re-read with Debian python3's crcmod
/// (crc-32c) for both CRCs and each record decoded by <c>protoc --decode=tensorflow.Event</c> against the field
/// definitions of tensorflow's event.proto/summary.proto. That check caught session_log's field number (7, not 6),
/// a mistake this reader had shared with the writer.
/// </remarks>
internal static class TensorBoardEventReader
{
    public sealed record Event(double WallTime, long Step, string? FileVersion, int? SessionStatus, List<(string Tag, float Value)> Scalars,
        List<Image> Images);

    public sealed record Image(string Tag, int Height, int Width, int Colorspace, byte[] Encoded);

    private static readonly uint[] Table = MakeTable();

    private static uint[] MakeTable()
    {
        const uint poly = 0x82F63B78;   // Castagnoli polynomial 0x1EDC6F41, bit-reversed
        var t = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? (c >> 1) ^ poly : c >> 1;
            t[i] = c;
        }
        return t;
    }

    public static uint Crc32C(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFF;
        foreach (var b in data) c = Table[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFF;
    }

    private static uint Masked(ReadOnlySpan<byte> data)
    {
        uint c = Crc32C(data);
        return unchecked(((c >> 15) | (c << 17)) + 0xa282ead8);
    }

    /// <summary>Every record's data; throws on a bad CRC or a truncated record.</summary>
    public static List<byte[]> ReadRecords(string path)
    {
        // ReadWrite sharing: the file may still be open for writing by a live tracker.
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var bytes = new byte[fs.Length];
        fs.ReadExactly(bytes);
        var records = new List<byte[]>();
        int pos = 0;
        while (pos < bytes.Length)
        {
            if (bytes.Length - pos < 12) throw new InvalidDataException($"truncated header at {pos}");
            var lenBytes = bytes.AsSpan(pos, 8);
            if (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(pos + 8)) != Masked(lenBytes))
                throw new InvalidDataException($"length CRC mismatch at {pos}");
            int len = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(lenBytes));
            pos += 12;
            if (bytes.Length - pos < len + 4) throw new InvalidDataException($"truncated data at {pos}");
            var data = bytes.AsSpan(pos, len).ToArray();
            if (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(pos + len)) != Masked(data))
                throw new InvalidDataException($"data CRC mismatch at {pos}");
            records.Add(data);
            pos += len + 4;
        }
        return records;
    }

    public static List<Event> ReadEvents(string path) => ReadRecords(path).Select(DecodeEvent).ToList();

    /// <summary>
    /// What TensorBoard shows for a folder: files in name order, a SessionLog START (status 1) at step s dropping
    /// what was read at steps &gt;= s; per tag, step -&gt; value.
    /// </summary>
    public static Dictionary<string, SortedDictionary<long, float>> View(string dir)
    {
        var view = new Dictionary<string, SortedDictionary<long, float>>();
        foreach (var file in Directory.GetFiles(dir).Order(StringComparer.Ordinal))
            foreach (var e in ReadEvents(file))
            {
                if (e.SessionStatus == 1)
                    foreach (var series in view.Values)
                        foreach (var s in series.Keys.Where(s => s >= e.Step).ToList()) series.Remove(s);
                foreach (var (tag, value) in e.Scalars)
                {
                    if (!view.TryGetValue(tag, out var series)) view[tag] = series = new();
                    series[e.Step] = value;
                }
            }
        return view;
    }

    private static Event DecodeEvent(byte[] data)
    {
        double wall = 0; long step = 0; string? version = null; int? status = null;
        var scalars = new List<(string, float)>();
        var images = new List<Image>();
        foreach (var (field, wire, value) in Fields(data))
            switch (field, wire)
            {
                case (1, 1): wall = BitConverter.Int64BitsToDouble((long)(ulong)value); break;
                case (2, 0): step = (long)(ulong)value; break;
                case (3, 2): version = Encoding.UTF8.GetString((byte[])value); break;
                case (5, 2):
                    foreach (var (vf, vw, v) in Fields((byte[])value))
                    {
                        if ((vf, vw) != (1, 2)) throw new InvalidDataException($"unexpected Summary field {vf}/{vw}");
                        string? tag = null; float? simple = null; byte[]? image = null;
                        foreach (var (f, w, x) in Fields((byte[])v))
                            switch (f, w)
                            {
                                case (1, 2): tag = Encoding.UTF8.GetString((byte[])x); break;
                                case (2, 5): simple = BitConverter.Int32BitsToSingle((int)(uint)x); break;
                                case (4, 2): image = (byte[])x; break;   // Summary.Image
                                default: throw new InvalidDataException($"unexpected Summary.Value field {f}/{w}");
                            }
                        if (tag is null) throw new InvalidDataException("value without tag");
                        if (image is not null)
                        {
                            int height = 0, width = 0, colorspace = 0; byte[]? encoded = null;
                            foreach (var (f, w, x) in Fields(image))
                                switch (f, w)
                                {
                                    case (1, 0): height = (int)(ulong)x; break;
                                    case (2, 0): width = (int)(ulong)x; break;
                                    case (3, 0): colorspace = (int)(ulong)x; break;
                                    case (4, 2): encoded = (byte[])x; break;
                                    default: throw new InvalidDataException($"unexpected Summary.Image field {f}/{w}");
                                }
                            images.Add(new Image(tag, height, width, colorspace, encoded ?? throw new InvalidDataException("image without encoded_image_string")));
                        }
                        else scalars.Add((tag, simple ?? throw new InvalidDataException("value without simple_value or image")));
                    }
                    break;
                case (7, 2):   // session_log (6 is log_message)
                    foreach (var (f, w, x) in Fields((byte[])value))
                        if ((f, w) == (1, 0)) status = (int)(ulong)x;
                    break;
                default: throw new InvalidDataException($"unexpected Event field {field}/{wire}");
            }
        return new Event(wall, step, version, status, scalars, images);
    }

    /// <summary>Generic protobuf fields: varint and fixed64 as ulong, fixed32 as uint, length-delimited as byte[].</summary>
    private static IEnumerable<(int Field, int Wire, object Value)> Fields(byte[] msg)
    {
        int pos = 0;
        ulong Varint()
        {
            ulong v = 0;
            for (int shift = 0; ; shift += 7)
            {
                if (shift > 63) throw new InvalidDataException("varint too long");
                byte b = msg[pos++];
                v |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return v;
            }
        }
        while (pos < msg.Length)
        {
            ulong key = Varint();
            int field = (int)(key >> 3), wire = (int)(key & 7);
            object value;
            switch (wire)
            {
                case 0: value = Varint(); break;
                case 1: value = BinaryPrimitives.ReadUInt64LittleEndian(msg.AsSpan(pos)); pos += 8; break;
                case 2: int n = checked((int)Varint()); value = msg.AsSpan(pos, n).ToArray(); pos += n; break;
                case 5: value = BinaryPrimitives.ReadUInt32LittleEndian(msg.AsSpan(pos)); pos += 4; break;
                default: throw new InvalidDataException($"wire type {wire}");
            }
            yield return (field, wire, value);
        }
    }
}

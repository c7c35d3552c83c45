using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace FastVideo.Train.Tracking;

/// <summary>
/// The on-disk pieces of a TensorBoard event file, written by hand (no generated protobuf classes, no TensorFlow
/// package) and read back for the resume cut: TFRecord framing (<see cref="WriteRecord"/>, <see cref="ReadRecords"/>),
/// its masked CRC32C, and the few <c>tensorflow.Event</c> messages the tracker writes (<see cref="FileVersion"/>,
/// <see cref="SessionStart"/>, <see cref="Scalars"/>, <see cref="Images"/>). TorchSharp's SummaryWriter was measured
/// against it and not taken (bench/results/tensorboard-summarywriter-2026-12-03.md).
/// </summary>
public static class TensorBoardEvents
{
    /// <summary>The first event of every file; version 2 makes TensorBoard purge on <see cref="SessionStart"/>.</summary>
    public const string FileVersionString = "brain.Event:2";

    // tensorflow.Event field numbers (tensorflow/core/util/event.proto; 6 is log_message, not session_log).
    private const int EventWallTime = 1, EventStep = 2, EventFileVersion = 3, EventSummary = 5, EventSessionLog = 7;
    // tensorflow.Summary: repeated Value value = 1; Value: tag = 1, simple_value = 2, image = 4. SessionLog: status = 1.
    private const int SummaryValue = 1, ValueTag = 1, ValueSimpleValue = 2, ValueImage = 4, SessionLogStatus = 1;
    // tensorflow.Summary.Image: height = 1, width = 2, colorspace = 3, encoded_image_string = 4.
    private const int ImageHeight = 1, ImageWidth = 2, ImageColorspace = 3, ImageEncoded = 4;
    private const int SessionLogStart = 1;   // SessionLog.SessionStatus.START

    /// <summary>CRC32C (Castagnoli), as TFRecord uses; BitOperations.Crc32C is the hardware step when available.</summary>
    public static uint Crc32C(ReadOnlySpan<byte> data)
    {
        uint crc = ~0u;
        foreach (byte b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }

    /// <summary>TFRecord's masked CRC: a CRC stored next to data that itself holds CRCs must not look like one.</summary>
    public static uint MaskedCrc32C(ReadOnlySpan<byte> data)
    {
        uint crc = Crc32C(data);
        return unchecked(((crc >> 15) | (crc << 17)) + 0xa282ead8u);
    }

    /// <summary>One TFRecord: u64 LE length, u32 LE masked CRC of those 8 bytes, the data, u32 LE masked CRC of it.</summary>
    public static void WriteRecord(Stream stream, ReadOnlySpan<byte> data)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], MaskedCrc32C(header[..8]));
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, MaskedCrc32C(data));
        stream.Write(header);
        stream.Write(data);
        stream.Write(footer);
    }

    /// <summary>The <c>file_version</c> event that opens a file.</summary>
    public static byte[] FileVersion(double wallTime)
    {
        var e = new ProtoWriter();
        e.Double(EventWallTime, wallTime);
        e.String(EventFileVersion, FileVersionString);
        return e.ToArray();
    }

    /// <summary>
    /// A <c>SessionLog{status: START}</c> event at <paramref name="step"/>: TensorBoard drops the data it has already
    /// read at this step and later, which is how the steps of an interrupted run are replaced by the resumed run's.
    /// </summary>
    public static byte[] SessionStart(double wallTime, long step)
    {
        var log = new ProtoWriter();
        log.Varint(SessionLogStatus, SessionLogStart);
        return Event(wallTime, step, EventSessionLog, log);
    }

    /// <summary>One event holding every metric of a step as a scalar (<c>simple_value</c> is a float32).</summary>
    public static byte[] Scalars(double wallTime, long step, IEnumerable<KeyValuePair<string, double>> values)
    {
        var summary = new ProtoWriter();
        foreach (var (tag, value) in values)
        {
            var v = new ProtoWriter();
            v.String(ValueTag, tag);
            v.Float(ValueSimpleValue, (float)value);
            summary.Message(SummaryValue, v);
        }
        return Event(wallTime, step, EventSummary, summary);
    }

    /// <summary>
    /// One event holding encoded images (PNG, or an animated GIF that TensorBoard's image dashboard plays, as
    /// PyTorch's add_video writes videos). Colorspace 3 = RGB.
    /// </summary>
    public static byte[] Images(double wallTime, long step, IEnumerable<TrackedImage> images)
    {
        var summary = new ProtoWriter();
        foreach (var im in images)
        {
            var image = new ProtoWriter();
            image.Varint(ImageHeight, (ulong)im.Height);
            image.Varint(ImageWidth, (ulong)im.Width);
            image.Varint(ImageColorspace, 3);
            image.Bytes(ImageEncoded, im.Encoded);
            var v = new ProtoWriter();
            v.String(ValueTag, im.Tag);
            v.Message(ValueImage, image);
            summary.Message(SummaryValue, v);
        }
        return Event(wallTime, step, EventSummary, summary);
    }

    /// <summary>
    /// The records of an event file in order, up to the first one that is cut short or fails its CRCs (what a crash
    /// mid-write leaves at the end); <paramref name="complete"/> tells whether the whole file was read.
    /// </summary>
    public static List<byte[]> ReadRecords(string path, out bool complete)
    {
        var records = new List<byte[]>();
        var bytes = File.ReadAllBytes(path);
        int at = 0;
        complete = false;
        while (true)
        {
            if (at == bytes.Length) { complete = true; break; }
            if (bytes.Length - at < 12) break;
            var header = bytes.AsSpan(at, 8);
            if (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 8, 4)) != MaskedCrc32C(header)) break;
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(header);
            if (length > (ulong)(bytes.Length - at - 16)) break;
            var data = bytes.AsSpan(at + 12, (int)length);
            if (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(at + 12 + (int)length, 4)) != MaskedCrc32C(data)) break;
            records.Add(data.ToArray());
            at += 16 + (int)length;
        }
        return records;
    }

    /// <summary>An event's <c>step</c> (0 when absent, as protobuf defaults it); null if the bytes are not an event.</summary>
    public static long? StepOf(ReadOnlySpan<byte> evt)
    {
        int at = 0;
        long step = 0;
        while (at < evt.Length)
        {
            if (!ReadVarint(evt, ref at, out var tag)) return null;
            int field = (int)(tag >> 3), wire = (int)(tag & 7);
            switch (wire)
            {
                case 0:
                    if (!ReadVarint(evt, ref at, out var v)) return null;
                    if (field == EventStep) step = (long)v;
                    break;
                case 1: at += 8; break;
                case 5: at += 4; break;
                case 2:
                    if (!ReadVarint(evt, ref at, out var len) || len > (ulong)(evt.Length - at)) return null;
                    at += (int)len;
                    break;
                default: return null;
            }
        }
        return at == evt.Length ? step : null;
    }

    private static bool ReadVarint(ReadOnlySpan<byte> b, ref int at, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 64 && at < b.Length; shift += 7)
        {
            byte x = b[at++];
            value |= (ulong)(x & 0x7F) << shift;
            if (x < 0x80) return true;
        }
        return false;
    }

    /// <summary>An event at <paramref name="step"/> holding <paramref name="payload"/> in field <paramref name="field"/>.</summary>
    private static byte[] Event(double wallTime, long step, int field, ProtoWriter payload)
    {
        var e = new ProtoWriter();
        e.Double(EventWallTime, wallTime);
        e.Varint(EventStep, (ulong)step);
        e.Message(field, payload);
        return e.ToArray();
    }

    /// <summary>The handful of protobuf wire encodings the events above need.</summary>
    private sealed class ProtoWriter
    {
        private const int WireVarint = 0, WireFixed64 = 1, WireLengthDelimited = 2, WireFixed32 = 5;
        private readonly MemoryStream _buffer = new();

        public byte[] ToArray() => _buffer.ToArray();

        public void Varint(int field, ulong value)
        {
            Tag(field, WireVarint);
            RawVarint(value);
        }

        public void Double(int field, double value)
        {
            Tag(field, WireFixed64);
            Span<byte> b = stackalloc byte[8];
            BinaryPrimitives.WriteDoubleLittleEndian(b, value);
            _buffer.Write(b);
        }

        public void Float(int field, float value)
        {
            Tag(field, WireFixed32);
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteSingleLittleEndian(b, value);
            _buffer.Write(b);
        }

        public void String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

        public void Message(int field, ProtoWriter message) => Bytes(field, message._buffer.GetBuffer().AsSpan(0, (int)message._buffer.Length));

        public void Bytes(int field, ReadOnlySpan<byte> value)
        {
            Tag(field, WireLengthDelimited);
            RawVarint((ulong)value.Length);
            _buffer.Write(value);
        }

        private void Tag(int field, int wireType) => RawVarint(((ulong)field << 3) | (uint)wireType);

        private void RawVarint(ulong value)
        {
            while (value >= 0x80)
            {
                _buffer.WriteByte((byte)(value | 0x80));
                value >>= 7;
            }
            _buffer.WriteByte((byte)value);
        }
    }
}

using System.Buffers;
using System.Buffers.Binary;
using System.IO.Compression;
using Microsoft.Win32.SafeHandles;
using Parquet.Meta;

namespace FastVideo.Data;

/// <summary>
/// Fast reading of the big tensor columns (flat, nullable or required BYTE_ARRAY) of one row group. Parquet.Net
/// decoded Wan-sized rows (17 MB each) at 4-11 rows per CPU-second here (copies through pooled streams, fresh
/// large buffers), short of the loader's 20 rows/s target, so for these two columns we read the column chunk with one positional
/// read and decode its pages here: data page v1 and v2, PLAIN or dictionary-encoded values, uncompressed, snappy
/// or gzip. Values then point into pooled buffers owned by the row group. Anything else (other codecs, encodings
/// or nesting) returns false and the caller falls back to Parquet.Net, so this never limits what can be read.
/// </summary>
internal static class BinaryColumnChunk
{
    private const int PageData = 0, PageIndex = 1, PageDictionary = 2, PageDataV2 = 3;
    private const int EncPlain = 0, EncPlainDictionary = 2, EncRle = 3, EncRleDictionary = 8;

    /// <summary>Tries to decode the chunk. Buffers rented from <see cref="ArrayPool{T}.Shared"/> are added to
    /// <paramref name="owned"/> (the caller returns them), also when this returns false.</summary>
    public static bool TryRead(SafeFileHandle file, ColumnMetaData meta, int maxDefinitionLevel, int rows, List<byte[]> owned,
        out ReadOnlyMemory<byte>[] values, out bool[] present)
    {
        values = new ReadOnlyMemory<byte>[rows];
        present = new bool[rows];
        if (maxDefinitionLevel > 1 || meta.Type != Parquet.Meta.Type.BYTE_ARRAY) return false;
        if (meta.Codec is not (CompressionCodec.UNCOMPRESSED or CompressionCodec.SNAPPY or CompressionCodec.GZIP)) return false;
        long start = meta.DictionaryPageOffset is long d && d > 0 && d < meta.DataPageOffset ? d : meta.DataPageOffset;
        if (meta.TotalCompressedSize <= 0 || meta.TotalCompressedSize > int.MaxValue) return false;
        int size = (int)meta.TotalCompressedSize;
        var chunk = Rent(size, owned);
        for (int got = 0; got < size;)
        {
            int n = RandomAccess.Read(file, chunk.AsSpan(got, size - got), start + got);
            if (n == 0) return false; // truncated file: let the general reader report it
            got += n;
        }

        List<ReadOnlyMemory<byte>>? dictionary = null;
        int pos = 0, row = 0;
        while (row < rows)
        {
            if (pos >= size || !PageHeader.TryParse(chunk.AsSpan(pos, size - pos), out var h, out int headerLength)) return false;
            pos += headerLength;
            if (h.CompressedSize < 0 || pos + h.CompressedSize > size) return false;
            var body = chunk.AsMemory(pos, h.CompressedSize);
            pos += h.CompressedSize;
            switch (h.Type)
            {
                case PageDictionary:
                {
                    if (!TryDecompress(meta.Codec, body, h.UncompressedSize, owned, out var data)) return false;
                    dictionary = new List<ReadOnlyMemory<byte>>(h.NumValues);
                    int p = 0;
                    for (int i = 0; i < h.NumValues; i++)
                        if (!TryPlainValue(data, ref p, out var v)) return false; else dictionary.Add(v);
                    break;
                }
                case PageData:
                case PageDataV2:
                {
                    int n = h.NumValues;
                    if (n < 0 || row + n > rows) return false;
                    ReadOnlyMemory<byte> levels, payload;
                    if (h.Type == PageData)
                    {
                        if (!TryDecompress(meta.Codec, body, h.UncompressedSize, owned, out var data)) return false;
                        if (maxDefinitionLevel == 1)
                        {
                            if (h.DefinitionLevelEncoding != EncRle || data.Length < 4) return false;
                            int len = BinaryPrimitives.ReadInt32LittleEndian(data.Span);
                            if (len < 0 || 4 + len > data.Length) return false;
                            levels = data.Slice(4, len);
                            payload = data[(4 + len)..];
                        }
                        else
                        {
                            levels = default;
                            payload = data;
                        }
                    }
                    else
                    {
                        int lv = h.RepetitionLevelsLength + h.DefinitionLevelsLength;
                        if (h.RepetitionLevelsLength != 0 || lv > body.Length) return false;
                        levels = body[..lv];
                        var rest = body[lv..];
                        if (h.IsCompressed)
                        {
                            if (!TryDecompress(meta.Codec, rest, h.UncompressedSize - lv, owned, out payload)) return false;
                        }
                        else payload = rest;
                    }

                    // Which rows of the page hold a value.
                    if (maxDefinitionLevel == 1)
                    {
                        var defs = new int[n];
                        if (!Hybrid.TryDecode(levels.Span, 1, defs)) return false;
                        for (int i = 0; i < n; i++) present[row + i] = defs[i] == 1;
                    }
                    else
                    {
                        for (int i = 0; i < n; i++) present[row + i] = true;
                    }
                    int nonNull = 0;
                    for (int i = 0; i < n; i++) if (present[row + i]) nonNull++;

                    if (h.Encoding == EncPlain)
                    {
                        int p = 0;
                        for (int i = 0; i < n; i++)
                            if (present[row + i] && !TryPlainValue(payload, ref p, out values[row + i])) return false;
                    }
                    else if (h.Encoding is EncPlainDictionary or EncRleDictionary)
                    {
                        if (dictionary is null || payload.Length < 1) return false;
                        int bitWidth = payload.Span[0];
                        var idx = new int[nonNull];
                        if (bitWidth > 32 || !Hybrid.TryDecode(payload.Span[1..], bitWidth, idx)) return false;
                        int k = 0;
                        for (int i = 0; i < n; i++)
                        {
                            if (!present[row + i]) continue;
                            int j = idx[k++];
                            if ((uint)j >= (uint)dictionary.Count) return false;
                            values[row + i] = dictionary[j];
                        }
                    }
                    else return false;
                    row += n;
                    break;
                }
                case PageIndex:
                    break;
                default:
                    return false;
            }
        }
        return true;
    }

    private static byte[] Rent(int size, List<byte[]> owned)
    {
        var a = ArrayPool<byte>.Shared.Rent(Math.Max(1, size));
        owned.Add(a);
        return a;
    }

    private static bool TryDecompress(CompressionCodec codec, ReadOnlyMemory<byte> src, int uncompressedSize, List<byte[]> owned,
        out ReadOnlyMemory<byte> result)
    {
        result = default;
        if (uncompressedSize < 0) return false;
        switch (codec)
        {
            case CompressionCodec.UNCOMPRESSED:
                result = src;
                return src.Length == uncompressedSize;
            case CompressionCodec.SNAPPY:
            {
                var dst = Rent(uncompressedSize, owned);
                if (!Snappier.Snappy.TryDecompress(src.Span, dst.AsSpan(0, uncompressedSize), out int written) || written != uncompressedSize)
                    return false;
                result = dst.AsMemory(0, uncompressedSize);
                return true;
            }
            case CompressionCodec.GZIP:
            {
                var dst = Rent(uncompressedSize, owned);
                using var gz = new GZipStream(new MemoryStream(src.ToArray()), CompressionMode.Decompress);
                int got = 0;
                while (got < uncompressedSize)
                {
                    int n = gz.Read(dst, got, uncompressedSize - got);
                    if (n == 0) return false;
                    got += n;
                }
                result = dst.AsMemory(0, uncompressedSize);
                return true;
            }
            default:
                return false;
        }
    }

    // PLAIN BYTE_ARRAY: 4-byte little-endian length, then the bytes.
    private static bool TryPlainValue(ReadOnlyMemory<byte> data, ref int p, out ReadOnlyMemory<byte> value)
    {
        value = default;
        if (p + 4 > data.Length) return false;
        int len = BinaryPrimitives.ReadInt32LittleEndian(data.Span[p..]);
        if (len < 0 || p + 4 + len > data.Length) return false;
        value = data.Slice(p + 4, len);
        p += 4 + len;
        return true;
    }

    /// <summary>The RLE / bit-packed hybrid encoding of levels and dictionary indices.</summary>
    internal static class Hybrid
    {
        public static bool TryDecode(ReadOnlySpan<byte> src, int bitWidth, Span<int> dst)
        {
            int p = 0, o = 0;
            int byteWidth = (bitWidth + 7) / 8;
            while (o < dst.Length)
            {
                if (!TryVarint(src, ref p, out ulong header)) return false;
                if ((header & 1) == 0)
                {
                    long count = (long)(header >> 1);
                    if (p + byteWidth > src.Length) return false;
                    int value = 0;
                    for (int i = 0; i < byteWidth; i++) value |= src[p + i] << (8 * i);
                    p += byteWidth;
                    for (long i = 0; i < count && o < dst.Length; i++) dst[o++] = value;
                }
                else
                {
                    long groups = (long)(header >> 1);
                    long bits = groups * 8 * bitWidth;
                    if (p + (bits + 7) / 8 > src.Length) return false;
                    long bit = (long)p * 8;
                    for (long i = 0; i < groups * 8 && o < dst.Length; i++)
                    {
                        int v = 0;
                        for (int b = 0; b < bitWidth; b++, bit++)
                            v |= ((src[(int)(bit >> 3)] >> (int)(bit & 7)) & 1) << b;
                        dst[o++] = v;
                    }
                    p += (int)((bits + 7) / 8);
                }
            }
            return true;
        }
    }

    private static bool TryVarint(ReadOnlySpan<byte> s, ref int p, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (p >= s.Length) return false;
            byte b = s[p++];
            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return true;
        }
        return false;
    }

    /// <summary>The fields of a Thrift-compact-encoded parquet PageHeader this reader needs.</summary>
    internal struct PageHeader
    {
        public int Type, UncompressedSize, CompressedSize, NumValues, Encoding, DefinitionLevelEncoding;
        public int DefinitionLevelsLength, RepetitionLevelsLength;
        public bool IsCompressed;

        public static bool TryParse(ReadOnlySpan<byte> s, out PageHeader h, out int length)
        {
            h = new PageHeader { IsCompressed = true, Type = -1 };
            int p = 0;
            length = 0;
            try
            {
                short last = 0;
                while (true)
                {
                    if (!Field(s, ref p, ref last, out short id, out int type)) return false;
                    if (type == 0) break;
                    switch (id)
                    {
                        case 1 when type == 5: h.Type = I32(s, ref p); break;
                        case 2 when type == 5: h.UncompressedSize = I32(s, ref p); break;
                        case 3 when type == 5: h.CompressedSize = I32(s, ref p); break;
                        case 5 when type == 12: SubHeader(s, ref p, ref h, v2: false); break;
                        case 7 when type == 12: DictionaryHeader(s, ref p, ref h); break;
                        case 8 when type == 12: SubHeader(s, ref p, ref h, v2: true); break;
                        default: Skip(s, ref p, type); break;
                    }
                }
            }
            catch (IndexOutOfRangeException) { return false; }
            catch (ArgumentOutOfRangeException) { return false; }
            length = p;
            return h.Type >= 0;
        }

        private static void SubHeader(ReadOnlySpan<byte> s, ref int p, ref PageHeader h, bool v2)
        {
            short last = 0;
            while (Field(s, ref p, ref last, out short id, out int type) && type != 0)
            {
                if (!v2)
                {
                    switch (id)
                    {
                        case 1 when type == 5: h.NumValues = I32(s, ref p); break;
                        case 2 when type == 5: h.Encoding = I32(s, ref p); break;
                        case 3 when type == 5: h.DefinitionLevelEncoding = I32(s, ref p); break;
                        default: Skip(s, ref p, type); break;
                    }
                }
                else
                {
                    switch (id)
                    {
                        case 1 when type == 5: h.NumValues = I32(s, ref p); break;
                        case 4 when type == 5: h.Encoding = I32(s, ref p); break;
                        case 5 when type == 5: h.DefinitionLevelsLength = I32(s, ref p); break;
                        case 6 when type == 5: h.RepetitionLevelsLength = I32(s, ref p); break;
                        case 7 when type is 1 or 2: h.IsCompressed = type == 1; break;
                        default: Skip(s, ref p, type); break;
                    }
                }
            }
        }

        private static void DictionaryHeader(ReadOnlySpan<byte> s, ref int p, ref PageHeader h)
        {
            short last = 0;
            while (Field(s, ref p, ref last, out short id, out int type) && type != 0)
            {
                switch (id)
                {
                    case 1 when type == 5: h.NumValues = I32(s, ref p); break;
                    case 2 when type == 5: h.Encoding = I32(s, ref p); break;
                    default: Skip(s, ref p, type); break;
                }
            }
        }

        // Compact protocol field header: high nibble = id delta (0 = explicit zigzag i16 follows), low nibble = type.
        private static bool Field(ReadOnlySpan<byte> s, ref int p, ref short last, out short id, out int type)
        {
            byte b = s[p++];
            type = b & 0x0F;
            id = 0;
            if (type == 0) return true;
            int delta = b >> 4;
            id = delta != 0 ? (short)(last + delta) : (short)ZigZag(Varint(s, ref p));
            last = id;
            return true;
        }

        private static int I32(ReadOnlySpan<byte> s, ref int p) => (int)ZigZag(Varint(s, ref p));

        private static ulong Varint(ReadOnlySpan<byte> s, ref int p) =>
            TryVarint(s, ref p, out var v) ? v : throw new IndexOutOfRangeException();

        private static long ZigZag(ulong v) => (long)(v >> 1) ^ -(long)(v & 1);

        private static void Skip(ReadOnlySpan<byte> s, ref int p, int type)
        {
            switch (type)
            {
                case 1: case 2: break;                       // bool (value in the type)
                case 3: p++; break;                          // byte
                case 4: case 5: case 6: Varint(s, ref p); break;
                case 7: p += 8; break;                       // double
                case 8: p += checked((int)Varint(s, ref p)); break; // binary
                case 9: case 10:                             // list, set
                {
                    byte hdr = s[p++];
                    long n = hdr >> 4;
                    if (n == 15) n = (long)Varint(s, ref p);
                    int et = hdr & 0x0F;
                    for (long i = 0; i < n; i++) { if (et is 1 or 2) p++; else Skip(s, ref p, et); }
                    break;
                }
                case 11:                                     // map
                {
                    long n = (long)Varint(s, ref p);
                    if (n == 0) break;
                    byte kv = s[p++];
                    for (long i = 0; i < n; i++)
                    {
                        int kt = kv >> 4, vt = kv & 0x0F;
                        if (kt is 1 or 2) p++; else Skip(s, ref p, kt);
                        if (vt is 1 or 2) p++; else Skip(s, ref p, vt);
                    }
                    break;
                }
                case 12:                                     // struct
                {
                    short last = 0;
                    while (Field(s, ref p, ref last, out _, out int t) && t != 0) Skip(s, ref p, t);
                    break;
                }
                default: throw new IndexOutOfRangeException();
            }
            if (p > s.Length) throw new IndexOutOfRangeException();
        }
    }
}

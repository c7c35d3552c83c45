using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace FastVideo.Data;

/// <summary>Element type of a tensor stored as raw little-endian bytes in a parquet column.</summary>
public enum TensorDType
{
    Float32,
    Float16,
    BFloat16,
    Float64,
}

public static class TensorDTypes
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this TensorDType dtype) => dtype switch
    {
        TensorDType.Float32 => 4,
        TensorDType.Float16 => 2,
        TensorDType.BFloat16 => 2,
        TensorDType.Float64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>The spelling written to the <c>*_dtype</c> column (numpy's names, as FastVideo writes them).</summary>
    public static string Name(this TensorDType dtype) => dtype switch
    {
        TensorDType.Float32 => "float32",
        TensorDType.Float16 => "float16",
        TensorDType.BFloat16 => "bfloat16",
        TensorDType.Float64 => "float64",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>Names accepted in a <c>*_dtype</c> column: numpy's, torch's ("torch.float16") and the short forms.</summary>
    public const string KnownNames = "float32, float16, bfloat16, float64 (also fp32/fp16/bf16, torch.float16, <f4 ...)";

    public static bool TryParse(string? text, out TensorDType dtype)
    {
        dtype = TensorDType.Float32;
        if (text is null) return false;
        var t = text.Trim().ToLowerInvariant();
        if (t.StartsWith("torch.", StringComparison.Ordinal)) t = t["torch.".Length..];
        switch (t)
        {
            case "float32": case "float": case "fp32": case "f4": case "<f4": case "single":
                dtype = TensorDType.Float32; return true;
            case "float16": case "half": case "fp16": case "f2": case "<f2":
                dtype = TensorDType.Float16; return true;
            case "bfloat16": case "bf16":
                dtype = TensorDType.BFloat16; return true;
            case "float64": case "double": case "fp64": case "f8": case "<f8":
                dtype = TensorDType.Float64; return true;
            default:
                return false;
        }
    }

    /// <summary>Decodes little-endian elements of <paramref name="dtype"/> into float32.</summary>
    public static void Decode(ReadOnlySpan<byte> src, TensorDType dtype, Span<float> dst)
    {
        if (src.Length != dst.Length * dtype.Size())
            throw new ArgumentException($"{src.Length} bytes do not hold {dst.Length} {dtype.Name()} values");
        switch (dtype)
        {
            case TensorDType.Float32:
                if (BitConverter.IsLittleEndian) src.CopyTo(MemoryMarshal.AsBytes(dst));
                else for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadSingleLittleEndian(src[(4 * i)..]);
                break;
            case TensorDType.Float16:
            {
                var bits = MemoryMarshal.Cast<byte, ushort>(src);
                for (int i = 0; i < dst.Length; i++)
                {
                    ushort b = BitConverter.IsLittleEndian ? bits[i] : BinaryPrimitives.ReverseEndianness(bits[i]);
                    dst[i] = (float)BitConverter.UInt16BitsToHalf(b);
                }
                break;
            }
            case TensorDType.BFloat16:
            {
                // bfloat16 is the upper half of a float32: widening is a shift, exact.
                var bits = MemoryMarshal.Cast<byte, ushort>(src);
                for (int i = 0; i < dst.Length; i++)
                {
                    uint b = BitConverter.IsLittleEndian ? bits[i] : BinaryPrimitives.ReverseEndianness(bits[i]);
                    dst[i] = BitConverter.UInt32BitsToSingle(b << 16);
                }
                break;
            }
            case TensorDType.Float64:
                for (int i = 0; i < dst.Length; i++) dst[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(src[(8 * i)..]);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }
    }

    /// <summary>Encodes float32 values as little-endian <paramref name="dtype"/> bytes (round to nearest even).</summary>
    public static byte[] Encode(ReadOnlySpan<float> values, TensorDType dtype)
    {
        var dst = new byte[values.Length * dtype.Size()];
        switch (dtype)
        {
            case TensorDType.Float32:
                for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(dst.AsSpan(4 * i), values[i]);
                break;
            case TensorDType.Float16:
                for (int i = 0; i < values.Length; i++)
                    BinaryPrimitives.WriteUInt16LittleEndian(dst.AsSpan(2 * i), BitConverter.HalfToUInt16Bits((Half)values[i]));
                break;
            case TensorDType.BFloat16:
                for (int i = 0; i < values.Length; i++)
                    BinaryPrimitives.WriteUInt16LittleEndian(dst.AsSpan(2 * i), ToBFloat16Bits(values[i]));
                break;
            case TensorDType.Float64:
                for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteDoubleLittleEndian(dst.AsSpan(8 * i), values[i]);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }
        return dst;
    }

    /// <summary>float32 -> bfloat16 bits with round-to-nearest-even (what torch does); NaN stays NaN.</summary>
    public static ushort ToBFloat16Bits(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }
}

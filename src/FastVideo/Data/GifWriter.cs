using static TorchSharp.torch;

namespace FastVideo.Data;

/// <summary>Axis order of a clip tensor handed to <see cref="GifWriter"/>.</summary>
public enum ClipLayout
{
    /// <summary>[C, T, H, W] - the VAE / latent layout.</summary>
    CTHW,
    /// <summary>[T, H, W, C] - frames of interleaved pixels.</summary>
    THWC,
}

/// <summary>
/// A small animated GIF (GIF89a) encoder. Palette: exact when the clip has at most 256 distinct colours (the synthetic
/// dataset always does), otherwise a fixed 6x7x6 colour cube (252 colours) with nearest-level mapping. Loops forever.
/// LZW follows the reference variable-width scheme (the same code-width and table-reset rules as Go's compress/lzw).
/// </summary>
public static class GifWriter
{
    /// <summary>Writes a clip tensor as a GIF. Channels: 1 (grey) or 3+ (the first three are RGB). Values are mapped
    /// linearly from [<paramref name="valueMin"/>, <paramref name="valueMax"/>] to 0..255 and clipped.</summary>
    public static void Write(string path, Tensor clip, double fps = 8, int scale = 1, ClipLayout layout = ClipLayout.CTHW,
        float valueMin = -1f, float valueMax = 1f)
    {
        if (clip.dim() != 4) throw new ArgumentException($"expected a 4-D clip, got [{string.Join(", ", clip.shape)}]");
        using var scope = NewDisposeScope(); // frees the intermediate tensors of the conversion chain
        var cthw = layout == ClipLayout.CTHW ? clip.detach() : clip.detach().permute(3, 0, 1, 2);
        var f = cthw.to(ScalarType.Float32).cpu().contiguous();
        int c = (int)f.shape[0], t = (int)f.shape[1], h = (int)f.shape[2], w = (int)f.shape[3];
        if (c != 1 && c < 3) throw new ArgumentException($"a GIF needs 1 (grey) or at least 3 (RGB) channels, got {c}");
        var px = f.data<float>().ToArray();
        int plane = h * w, vol = t * plane;
        float range = valueMax - valueMin;
        if (!(range > 0)) throw new ArgumentException("valueMax must be greater than valueMin");
        byte ToByte(float v) => (byte)Math.Clamp(MathF.Round((v - valueMin) / range * 255f), 0f, 255f);

        var frames = new List<byte[]>(t);
        for (int fr = 0; fr < t; fr++)
        {
            var rgb = new byte[plane * 3];
            for (int i = 0; i < plane; i++)
                for (int k = 0; k < 3; k++)
                    rgb[3 * i + k] = ToByte(px[(c == 1 ? 0 : k) * vol + fr * plane + i]);
            frames.Add(rgb);
        }
        WriteFrames(path, frames, w, h, fps, scale);
    }

    /// <summary>Writes RGB24 frames (row-major, 3 bytes per pixel) as a GIF, via a temporary file and a rename.</summary>
    public static void WriteFrames(string path, IReadOnlyList<byte[]> rgbFrames, int width, int height, double fps = 8, int scale = 1)
    {
        var bytes = Encode(rgbFrames, width, height, fps, scale);
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = full + ".tmp";
        File.WriteAllBytes(tmp, bytes);
        File.Move(tmp, full, overwrite: true);
    }

    public static byte[] Encode(IReadOnlyList<byte[]> rgbFrames, int width, int height, double fps = 8, int scale = 1)
    {
        if (rgbFrames.Count == 0) throw new ArgumentException("a GIF needs at least one frame");
        if (scale < 1) throw new ArgumentException("scale must be at least 1");
        if (fps <= 0) throw new ArgumentException("fps must be positive");
        foreach (var f in rgbFrames)
            if (f.Length != width * height * 3) throw new ArgumentException($"frame of {f.Length} bytes is not {width}x{height} RGB");
        int outW = width * scale, outH = height * scale;
        if (outW > 65535 || outH > 65535) throw new ArgumentException("GIF frames are limited to 65535 pixels a side");

        // Palette: exact colours if they fit, else the fixed cube.
        var exact = new Dictionary<int, int>();
        foreach (var f in rgbFrames)
        {
            for (int i = 0; i < f.Length && exact.Count <= 256; i += 3)
                exact.TryAdd(f[i] << 16 | f[i + 1] << 8 | f[i + 2], exact.Count);
            if (exact.Count > 256) break;
        }
        bool useExact = exact.Count <= 256;
        int[] palette = useExact ? exact.OrderBy(kv => kv.Value).Select(kv => kv.Key).ToArray() : CubePalette();
        int tableBits = 1;
        while ((1 << tableBits) < palette.Length) tableBits++;

        var o = new MemoryStream();
        o.Write("GIF89a"u8);
        WriteU16(o, outW);
        WriteU16(o, outH);
        o.WriteByte((byte)(0x80 | 0x70 | (tableBits - 1))); // global table, 8-bit colour resolution
        o.WriteByte(0); // background colour index
        o.WriteByte(0); // pixel aspect ratio
        for (int i = 0; i < 1 << tableBits; i++)
        {
            int rgb = i < palette.Length ? palette[i] : 0;
            o.WriteByte((byte)(rgb >> 16)); o.WriteByte((byte)(rgb >> 8)); o.WriteByte((byte)rgb);
        }
        o.Write([0x21, 0xFF, 0x0B]); // application extension: loop forever
        o.Write("NETSCAPE2.0"u8);
        o.Write([0x03, 0x01, 0x00, 0x00, 0x00]);

        int delay = Math.Max(2, (int)Math.Round(100.0 / fps)); // centiseconds; below 2 viewers slow down
        int minCodeSize = Math.Max(2, tableBits);
        var indices = new byte[outW * outH];
        foreach (var f in rgbFrames)
        {
            o.Write([0x21, 0xF9, 0x04, 0x04]); // graphic control: disposal "leave in place", no transparency
            WriteU16(o, delay);
            o.Write([0x00, 0x00]);
            o.WriteByte(0x2C); // image descriptor: whole screen, no local table
            WriteU16(o, 0); WriteU16(o, 0); WriteU16(o, outW); WriteU16(o, outH);
            o.WriteByte(0);
            for (int y = 0; y < outH; y++)
                for (int x = 0; x < outW; x++)
                {
                    int i = ((y / scale) * width + x / scale) * 3;
                    indices[y * outW + x] = useExact ? (byte)exact[f[i] << 16 | f[i + 1] << 8 | f[i + 2]] : CubeIndex(f[i], f[i + 1], f[i + 2]);
                }
            o.WriteByte((byte)minCodeSize);
            var lzw = LzwEncode(indices, minCodeSize);
            for (int p = 0; p < lzw.Length; p += 255)
            {
                int n = Math.Min(255, lzw.Length - p);
                o.WriteByte((byte)n);
                o.Write(lzw, p, n);
            }
            o.WriteByte(0); // end of image data
        }
        o.WriteByte(0x3B); // trailer
        return o.ToArray();
    }

    private static int[] CubePalette()
    {
        var p = new List<int>(252);
        for (int r = 0; r < 6; r++)
            for (int g = 0; g < 7; g++)
                for (int b = 0; b < 6; b++)
                    p.Add((r * 255 / 5) << 16 | (g * 255 / 6) << 8 | (b * 255 / 5));
        return [.. p];
    }

    private static byte CubeIndex(byte r, byte g, byte b) =>
        (byte)(((r * 5 + 127) / 255 * 7 + (g * 6 + 127) / 255) * 6 + (b * 5 + 127) / 255);

    private static void WriteU16(Stream s, int v) { s.WriteByte((byte)v); s.WriteByte((byte)(v >> 8)); }

    /// <summary>GIF-flavoured LZW: codes packed LSB first, width grows from minCodeSize+1 to 12 bits, a clear code
    /// starts the stream and resets the table when code 4095 would be needed.</summary>
    internal static byte[] LzwEncode(ReadOnlySpan<byte> data, int minCodeSize)
    {
        var output = new List<byte>(data.Length / 2 + 16);
        int bitBuffer = 0, bitCount = 0;
        void Emit(int code, int width)
        {
            bitBuffer |= code << bitCount;
            bitCount += width;
            while (bitCount >= 8) { output.Add((byte)bitBuffer); bitBuffer >>= 8; bitCount -= 8; }
        }

        int clear = 1 << minCodeSize, eoi = clear + 1;
        int width = minCodeSize + 1, hi = eoi, overflow = clear << 1;
        var table = new Dictionary<int, int>();
        Emit(clear, width);
        if (data.Length == 0) { Emit(eoi, width); Flush(); return [.. output]; }

        // After each emitted code the next table slot is hi+1; widen when it reaches 2^width; reset at 4095.
        bool IncHi()
        {
            hi++;
            if (hi == overflow) { width++; overflow <<= 1; }
            if (hi == 4095)
            {
                Emit(clear, width);
                width = minCodeSize + 1;
                hi = eoi;
                overflow = clear << 1;
                table.Clear();
                return false;
            }
            return true;
        }

        int prefix = data[0];
        for (int i = 1; i < data.Length; i++)
        {
            int key = prefix << 8 | data[i];
            if (table.TryGetValue(key, out int code)) { prefix = code; continue; }
            Emit(prefix, width);
            if (IncHi()) table[key] = hi;
            prefix = data[i];
        }
        Emit(prefix, width);
        IncHi();
        Emit(eoi, width);
        Flush();
        return [.. output];

        void Flush()
        {
            if (bitCount > 0) output.Add((byte)bitBuffer);
            bitBuffer = 0;
            bitCount = 0;
        }
    }
}

using FastVideo.Data;
using FastVideo.Data.Synthetic;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Data;

public class GifWriterTests
{
    /// <summary>A plain GIF decoder (standard LZW rules, as browsers implement them) to check what the writer made.</summary>
    private sealed record DecodedGif(int Width, int Height, int[] Palette, List<byte[]> FrameIndices, List<int> Delays, bool Loops)
    {
        public byte[] Rgb(int frame) => FrameIndices[frame].SelectMany(i => new[] { (byte)(Palette[i] >> 16), (byte)(Palette[i] >> 8), (byte)Palette[i] }).ToArray();
    }

    private static DecodedGif Decode(byte[] b)
    {
        Assert.Equal("GIF89a", System.Text.Encoding.ASCII.GetString(b, 0, 6));
        int w = b[6] | b[7] << 8, h = b[8] | b[9] << 8;
        Assert.True((b[10] & 0x80) != 0, "global colour table expected");
        int tableSize = 1 << ((b[10] & 7) + 1);
        var palette = Enumerable.Range(0, tableSize).Select(i => b[13 + 3 * i] << 16 | b[14 + 3 * i] << 8 | b[15 + 3 * i]).ToArray();
        int p = 13 + 3 * tableSize;
        var frames = new List<byte[]>();
        var delays = new List<int>();
        bool loops = false;
        while (true)
        {
            byte block = b[p++];
            if (block == 0x3B) break;
            if (block == 0x21)
            {
                byte label = b[p++];
                if (label == 0xF9) delays.Add(b[p + 2] | b[p + 3] << 8);
                if (label == 0xFF && System.Text.Encoding.ASCII.GetString(b, p + 1, 11) == "NETSCAPE2.0") loops = true;
                while (b[p] != 0) p += b[p] + 1;
                p++;
                continue;
            }
            Assert.Equal(0x2C, block);
            int fw = b[p + 4] | b[p + 5] << 8, fh = b[p + 6] | b[p + 7] << 8;
            Assert.Equal(0, b[p + 8] & 0x80); // no local table
            p += 9;
            int mcs = b[p++];
            var data = new List<byte>();
            while (b[p] != 0) { data.AddRange(b.AsSpan(p + 1, b[p]).ToArray()); p += b[p] + 1; }
            p++;
            var pixels = LzwDecode(data.ToArray(), mcs);
            Assert.Equal(fw * fh, pixels.Length);
            frames.Add(pixels);
        }
        return new DecodedGif(w, h, palette, frames, delays, loops);
    }

    private static byte[] LzwDecode(byte[] data, int mcs)
    {
        int clear = 1 << mcs, eoi = clear + 1, width = mcs + 1, bitPos = 0;
        var dict = new List<byte[]>();
        void Reset() { dict.Clear(); for (int i = 0; i < clear + 2; i++) dict.Add(i < clear ? [(byte)i] : []); width = mcs + 1; }
        Reset();
        var output = new List<byte>();
        byte[]? prev = null;
        while (bitPos + width <= data.Length * 8)
        {
            int code = 0;
            for (int k = 0; k < width; k++, bitPos++) code |= ((data[bitPos >> 3] >> (bitPos & 7)) & 1) << k;
            if (code == clear) { Reset(); prev = null; continue; }
            if (code == eoi) break;
            byte[] entry;
            if (prev is null) { entry = dict[code]; output.AddRange(entry); prev = entry; continue; }
            if (code < dict.Count) entry = dict[code];
            else if (code == dict.Count) entry = [.. prev, prev[0]];
            else throw new InvalidDataException($"bad LZW code {code} (table {dict.Count})");
            output.AddRange(entry);
            if (dict.Count < 4096) dict.Add([.. prev, entry[0]]);
            if (dict.Count == 1 << width && width < 12) width++;
            prev = entry;
        }
        return output.ToArray();
    }

    [Fact]
    public void SyntheticClip_RoundTripsExactly_WithFramesDelayAndScale()
    {
        using var dir = new TempDir();
        var o = new SyntheticOptions { Frames = 5, Height = 12, Width = 16, ShapeSize = 3 };
        var clip = SyntheticVideoDataset.RenderClip(o, SyntheticVideoDataset.Classes(o)[3], 0);
        using var t = clip.ToTensor();
        var path = dir.Combine("clip.gif");
        GifWriter.Write(path, t, fps: 10, scale: 2);
        Assert.False(File.Exists(path + ".tmp"));
        var gif = Decode(File.ReadAllBytes(path));
        Assert.Equal((32, 24), (gif.Width, gif.Height));
        Assert.Equal(5, gif.FrameIndices.Count);
        Assert.All(gif.Delays, d => Assert.Equal(10, d));
        Assert.True(gif.Loops);
        int plane = 12 * 16, vol = 5 * plane;
        for (int f = 0; f < 5; f++)
        {
            var rgb = gif.Rgb(f);
            for (int y = 0; y < 24; y++)
                for (int x = 0; x < 32; x++)
                    for (int c = 0; c < 3; c++)
                    {
                        float v = clip.Pixels[c * vol + f * plane + (y / 2) * 16 + x / 2];
                        Assert.Equal((byte)Math.Round((v + 1) / 2 * 255), rgb[(y * 32 + x) * 3 + c]);
                    }
        }
    }

    [Fact]
    public void ManyColours_UseTheFixedCube_AndLongFramesExerciseTableResets()
    {
        // 64x64 noise frames: >256 colours and far more than 4096 LZW codes per frame.
        var rng = new SplitMix64(1);
        var frames = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, 64 * 64 * 3).Select(_ => (byte)rng.NextInt(256)).ToArray()).ToList();
        var gif = Decode(GifWriter.Encode(frames, 64, 64, fps: 25));
        Assert.Equal(3, gif.FrameIndices.Count);
        Assert.All(gif.Delays, d => Assert.Equal(4, d));
        for (int f = 0; f < 3; f++)
        {
            var rgb = gif.Rgb(f);
            for (int i = 0; i < rgb.Length; i++) Assert.InRange(Math.Abs(rgb[i] - frames[f][i]), 0, 26); // cube step / 2
        }
    }

    [Fact]
    public void ThwcLayout_AndGreyClips_AreAccepted()
    {
        using var dir = new TempDir();
        using var thwc = rand(4, 6, 8, 3) * 2 - 1;
        GifWriter.Write(dir.Combine("a.gif"), thwc, layout: ClipLayout.THWC);
        var a = Decode(File.ReadAllBytes(dir.Combine("a.gif")));
        Assert.Equal((8, 6, 4), (a.Width, a.Height, a.FrameIndices.Count));

        using var grey = linspace(-1, 1, 2 * 4 * 4).reshape(1, 2, 4, 4);
        GifWriter.Write(dir.Combine("g.gif"), grey);
        var g = Decode(File.ReadAllBytes(dir.Combine("g.gif")));
        var rgb = g.Rgb(1);
        Assert.Equal(255, rgb[^1]);
        Assert.Equal(rgb[^1], rgb[^2]); // grey: R = G = B
        Assert.Throws<ArgumentException>(() => GifWriter.Write(dir.Combine("bad.gif"), zeros(2, 2, 4, 4)));
    }

    [Theory]
    [InlineData(2, 1)]
    [InlineData(8, 5000)]
    [InlineData(3, 20000)]
    public void Lzw_RoundTrips(int minCodeSize, int length)
    {
        var rng = new SplitMix64((ulong)length);
        // runs and noise mixed, so both long table entries and resets happen
        var data = Enumerable.Range(0, length).Select(i => (byte)((i / 7 % 3 == 0 ? rng.NextInt(1 << minCodeSize) : i / 50) % (1 << minCodeSize))).ToArray();
        Assert.Equal(data, LzwDecode(GifWriter.LzwEncode(data, minCodeSize), minCodeSize));
    }
}

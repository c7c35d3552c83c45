using System.Text.Json;
using FastVideo.Data;
using FastVideo.Data.Synthetic;
using Xunit;
using static TorchSharp.torch;

namespace FastVideo.Tests.Data;

public class SyntheticDatasetTests
{
    private static readonly SyntheticOptions Small = new()
    {
        Colors = 4, Directions = 4, ClipsPerClass = 3, Frames = 6, Height = 16, Width = 20, ShapeSize = 4,
        TextLen = 8, EmbedDim = 8, Seed = 5, RowsPerFile = 20,
    };

    [Fact]
    public void Write_ProducesAFastVideoDataset_WithClipsCaptionsEmbeddingsAndSidecars()
    {
        using var dir = new TempDir();
        var summary = SyntheticVideoDataset.Write(Small, dir.Path);
        Assert.Equal(48, summary.Rows);
        Assert.Equal(3, summary.Files.Count); // 20 rows per file

        using var ds = ParquetVideoDataset.Open(dir.Path);
        Assert.Equal(48, ds.Count);
        Assert.Equal(dir.Combine(ParquetVideoDataset.NegativePromptEmbedsFile), ds.NegativePromptEmbedsPath);
        var encoder = new SyntheticTextEncoder(Small.EmbedDim, Small.Seed);
        var classes = SyntheticVideoDataset.Classes(Small);
        Assert.Equal(16, classes.Count);
        Assert.Equal(16, classes.Select(c => c.Prompt).Distinct().Count());
        for (long i = 0; i < ds.Count; i++)
        {
            var row = ds.ReadRow(i);
            var cls = classes[(int)(i % 16)];            // clip-major order: clip k of every class, then k+1
            var clip = SyntheticVideoDataset.RenderClip(Small, cls, (int)(i / 16));
            Assert.Equal(cls.Prompt, row.Caption);
            Assert.Equal(clip.Id, row.Id);
            Assert.Equal(new long[] { 3, 6, 16, 20 }, row.Latent.Shape);
            Assert.Equal(clip.Pixels, row.Latent.ToFloatArray());
            Assert.Equal(encoder.EncodeToArray(cls.Prompt), row.Text.ToFloatArray());
            Assert.Equal(new long[] { SyntheticTextEncoder.Tokenize(cls.Prompt).Count, 8 }, row.Text.Shape);
            Assert.Equal(20, row.Width);
            Assert.Equal(16, row.Height);
        }

        // classes.json lists the classes with their prompts.
        using var doc = JsonDocument.Parse(File.ReadAllText(dir.Combine(SyntheticVideoDataset.ClassesFile)));
        Assert.Equal(classes.Select(c => c.Prompt), doc.RootElement.GetProperty("classes").EnumerateArray().Select(c => c.GetProperty("prompt").GetString()));

        // The VAE config normalises the latents to zero mean, unit std per channel.
        using var vae = JsonDocument.Parse(File.ReadAllText(dir.Combine("vae", "config.json")));
        var mean = vae.RootElement.GetProperty("latents_mean").EnumerateArray().Select(x => x.GetSingle()).ToArray();
        var std = vae.RootElement.GetProperty("latents_std").EnumerateArray().Select(x => x.GetSingle()).ToArray();
        Assert.Equal(3, vae.RootElement.GetProperty("z_dim").GetInt32());
        using var all = stack(Enumerable.Range(0, 48).Select(i => ds.ReadRow(i).Latent.ToTensor()).ToArray());
        using var norm = (all - tensor(mean).view(1, 3, 1, 1, 1)) / tensor(std).view(1, 3, 1, 1, 1);
        for (int c = 0; c < 3; c++)
        {
            Assert.InRange(norm[.., c].mean().item<float>(), -1e-3f, 1e-3f);
            Assert.InRange(norm[.., c].std(unbiased: false).item<float>(), 0.999f, 1.001f);
        }

        // The empty caption's embedding, [1, L, D] with at least one row.
        var neg = SafetensorsMini.ReadF32(dir.Combine(ParquetVideoDataset.NegativePromptEmbedsFile))["negative_prompt_embeds"];
        Assert.Equal(new long[] { 1, 1, 8 }, neg.Shape);
        Assert.Equal(encoder.EncodeToArray(""), neg.Data);
    }

    [Fact]
    public void Write_IsDeterministic_AndSeedChangesTheClips()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        using var c = new TempDir();
        SyntheticVideoDataset.Write(Small, a.Path);
        SyntheticVideoDataset.Write(Small, b.Path);
        SyntheticVideoDataset.Write(Small with { Seed = 6 }, c.Path);
        foreach (var rel in new[] { "data/part-00000.parquet", "data/part-00002.parquet", "vae/config.json", "classes.json", "negative_prompt_embeds.safetensors" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(a.Path, rel)), File.ReadAllBytes(Path.Combine(b.Path, rel)));
        Assert.NotEqual(File.ReadAllBytes(a.Combine("data", "part-00000.parquet")), File.ReadAllBytes(c.Combine("data", "part-00000.parquet")));
    }

    [Fact]
    public void Clips_MoveAsTheirClassSays_AndStayInsideTheFrame()
    {
        var o = Small with { Directions = 8, Colors = 8, ClipsPerClass = 4 };
        foreach (var cls in SyntheticVideoDataset.Classes(o))
            for (int k = 0; k < o.ClipsPerClass; k++)
            {
                var clip = SyntheticVideoDataset.RenderClip(o, cls, k);
                Assert.InRange(clip.Speed, 1, 20);
                int lastX = clip.StartX + cls.Direction.Dx * clip.Speed * (o.Frames - 1);
                int lastY = clip.StartY + cls.Direction.Dy * clip.Speed * (o.Frames - 1);
                foreach (var v in new[] { clip.StartX, lastX }) Assert.InRange(v, 0, o.Width - o.ShapeSize);
                foreach (var v in new[] { clip.StartY, lastY }) Assert.InRange(v, 0, o.Height - o.ShapeSize);
                // the square's top-left pixel of the last frame has the class colour in the red channel
                int plane = o.Height * o.Width;
                Assert.Equal(cls.Color.R, clip.Pixels[(o.Frames - 1) * plane + lastY * o.Width + lastX]);
            }
    }

    [Fact]
    public void Channels_OtherThanThree_RepeatRgbOrCarryLuminance()
    {
        var cls = SyntheticVideoDataset.Classes(Small)[0];
        var rgb = SyntheticVideoDataset.RenderClip(Small, cls, 0);
        var wide = SyntheticVideoDataset.RenderClip(Small with { Channels = 16 }, cls, 0);
        var grey = SyntheticVideoDataset.RenderClip(Small with { Channels = 1 }, cls, 0);
        int vol = 6 * 16 * 20;
        Assert.Equal(16 * vol, wide.Pixels.Length);
        for (int c = 0; c < 16; c++) Assert.Equal(rgb.Pixels.AsSpan((c % 3) * vol, vol).ToArray(), wide.Pixels.AsSpan(c * vol, vol).ToArray());
        Assert.Equal(vol, grey.Pixels.Length);
        Assert.Contains(0.299f * 1 + 0.587f * -1 + 0.114f * -1, grey.Pixels); // red's luminance
    }

    [Fact]
    public void BadOptionsOrNonEmptyFolder_AreUserErrors()
    {
        using var dir = new TempDir();
        Assert.Throws<UserError>(() => SyntheticVideoDataset.Write(Small with { ShapeSize = 18 }, dir.Path));
        Assert.Throws<UserError>(() => SyntheticVideoDataset.Write(Small with { Frames = 30 }, dir.Path)); // no room to move
        Assert.Throws<UserError>(() => SyntheticVideoDataset.Write(Small with { Colors = 9 }, dir.Path));
        Assert.Throws<UserError>(() => SyntheticVideoDataset.Write(Small with { TextLen = 3 }, dir.Path));
        File.WriteAllText(dir.Combine("x.txt"), "occupied");
        var e = Assert.Throws<UserError>(() => SyntheticVideoDataset.Write(Small, dir.Path));
        Assert.Contains("not empty", e.Message);
    }

    [Fact]
    public void TextEncoder_IsDeterministic_OrderSensitive_AndEndsWithEndToken()
    {
        var enc = new SyntheticTextEncoder(16, 3);
        Assert.Equal(enc.EncodeToArray("a red square moving left"), new SyntheticTextEncoder(16, 3).EncodeToArray("A red  square moving LEFT"));
        Assert.NotEqual(enc.EncodeToArray("a red square moving left"), enc.EncodeToArray("a blue square moving left"));
        Assert.NotEqual(enc.EncodeToArray("red blue"), enc.EncodeToArray("blue red"));
        Assert.NotEqual(enc.EncodeToArray("red"), new SyntheticTextEncoder(16, 4).EncodeToArray("red"));
        Assert.Equal(6 * 16, enc.EncodeToArray("a red square moving left").Length);
        Assert.Equal(16, enc.EncodeToArray("").Length);
        // same word at the same position -> same row
        Assert.Equal(enc.EncodeToArray("a red").AsSpan(0, 16).ToArray(), enc.EncodeToArray("a blue").AsSpan(0, 16).ToArray());
        using var t = enc.Encode("a red");
        Assert.Equal(new long[] { 3, 16 }, t.shape);
    }

    [Fact]
    public void Arrow_PointsWhereItMoves_AndIsNamedInTheCaption()
    {
        // 5-pixel arrow pointing right: the base column is full, the apex is one pixel on the middle row.
        var right = SyntheticPalette.Directions.First(d => d.Name == "right");
        var rows = Enumerable.Range(0, 5).Select(y => new string(Enumerable.Range(0, 5)
            .Select(x => SyntheticPalette.Covers(SyntheticShape.Arrow, right, 5, x, y) ? '#' : '.').ToArray())).ToList();
        Assert.Equal(["#....", "###..", "#####", "###..", "#...."], rows);

        var o = Small with { Shape = SyntheticShape.Arrow, ShapeSize = 5, Directions = 4 };
        foreach (var cls in SyntheticVideoDataset.Classes(o))
        {
            Assert.Equal($"a {cls.Color.Name} arrow moving {cls.Direction.Name}", cls.Prompt);
            var clip = SyntheticVideoDataset.RenderClip(o, cls, 0);
            // In frame 0 the shape's mass sits behind its box centre: the centroid is offset against the motion.
            int plane = o.Height * o.Width;
            double sx = 0, sy = 0, n = 0;
            for (int y = 0; y < o.Height; y++)
                for (int x = 0; x < o.Width; x++)
                    if (clip.Pixels[y * o.Width + x] == cls.Color.R)
                    { sx += x; sy += y; n++; }
            double cx = sx / n - (clip.StartX + 2), cy = sy / n - (clip.StartY + 2);
            Assert.True(cx * cls.Direction.Dx + cy * cls.Direction.Dy < 0, $"{cls.Prompt}: centroid offset ({cx:F2},{cy:F2})");
            Assert.Equal(13, (int)n); // 5 + 3 + 3 + 1 + 1 pixels
        }
    }

    [Fact]
    public void EdgeStart_BeginsAtTheEdgeItLeaves_CentredOnTheOtherAxis()
    {
        var o = Small with { Start = SyntheticStart.Edge, Directions = 8 };
        int roomX = o.Width - o.ShapeSize, roomY = o.Height - o.ShapeSize;
        foreach (var cls in SyntheticVideoDataset.Classes(o))
            for (int k = 0; k < o.ClipsPerClass; k++)
            {
                var clip = SyntheticVideoDataset.RenderClip(o, cls, k);
                Assert.Equal(cls.Direction.Dx > 0 ? 0 : cls.Direction.Dx < 0 ? roomX : roomX / 2, clip.StartX);
                Assert.Equal(cls.Direction.Dy > 0 ? 0 : cls.Direction.Dy < 0 ? roomY : roomY / 2, clip.StartY);
            }
    }

    [Fact]
    public void LaneStart_BeginsAtTheEdgeItLeaves_AnywhereAlongIt()
    {
        var o = Small with { Start = SyntheticStart.Lane, Directions = 8, ClipsPerClass = 24 };
        int roomX = o.Width - o.ShapeSize, roomY = o.Height - o.ShapeSize;
        foreach (var cls in SyntheticVideoDataset.Classes(o))
        {
            var lanes = new HashSet<int>();
            for (int k = 0; k < o.ClipsPerClass; k++)
            {
                var clip = SyntheticVideoDataset.RenderClip(o, cls, k);
                int dx = cls.Direction.Dx, dy = cls.Direction.Dy;
                if (dx != 0) Assert.Equal(dx > 0 ? 0 : roomX, clip.StartX); else lanes.Add(clip.StartX);
                if (dy != 0) Assert.Equal(dy > 0 ? 0 : roomY, clip.StartY); else lanes.Add(clip.StartY);
                Assert.InRange(clip.StartX, 0, roomX);
                Assert.InRange(clip.StartY, 0, roomY);
            }
            // Straight motion: the lane varies (24 draws over roomX + 1 places); diagonal: fully fixed, like Edge.
            if (cls.Direction.Dx == 0 || cls.Direction.Dy == 0) Assert.True(lanes.Count > 3, $"{cls.Prompt}: lanes {string.Join(",", lanes)}");
            else Assert.Empty(lanes);
        }
    }

    [Fact]
    public void LineStart_CentredAcrossTheMotion_AnywhereAlongIt()
    {
        foreach (bool wrap in new[] { false, true })
        {
            var o = Small with { Start = SyntheticStart.Line, ClipsPerClass = 40, Wrap = wrap, MaxSpeed = wrap ? 3 : 0 };
            int roomX = o.Width - o.ShapeSize, roomY = o.Height - o.ShapeSize;
            foreach (var cls in SyntheticVideoDataset.Classes(o))
            {
                var places = new HashSet<int>();
                for (int k = 0; k < o.ClipsPerClass; k++)
                {
                    var clip = SyntheticVideoDataset.RenderClip(o, cls, k);
                    int dx = cls.Direction.Dx, dy = cls.Direction.Dy, travel = clip.Speed * (o.Frames - 1);
                    if (dx == 0) Assert.Equal(roomX / 2, clip.StartX);
                    if (dy == 0) Assert.Equal(roomY / 2, clip.StartY);
                    int along = dx != 0 ? clip.StartX : clip.StartY, room = dx != 0 ? roomX : roomY, size = dx != 0 ? o.Width : o.Height;
                    places.Add(along);
                    // Bounded: the whole path fits; on a torus: any place of the frame, past the bounded room too.
                    if (wrap) Assert.InRange(along, 0, size - 1);
                    else Assert.InRange((dx + dy) > 0 ? along + travel : along - travel, 0, room);
                }
                Assert.True(places.Count > (wrap ? 8 : 2), $"{cls.Prompt} (wrap {wrap}): places {string.Join(",", places.Order())}");
                if (wrap) Assert.Contains(places, p => p > (cls.Direction.Dx != 0 ? roomX : roomY));
            }
        }
    }

    [Fact]
    public void MinSpeed_SetsTheSlowestSpeed_EqualToMaxItFixesIt_AndIsCheckedAgainstTheFrame()
    {
        var o = Small with { ClipsPerClass = 20 };
        static HashSet<int> Speeds(SyntheticOptions o) => SyntheticVideoDataset.Classes(o)
            .SelectMany(c => Enumerable.Range(0, o.ClipsPerClass).Select(k => SyntheticVideoDataset.RenderClip(o, c, k).Speed)).ToHashSet();
        // Bounded 16x20 frame, 4-pixel square, 6 frames: the top speed is 2 vertically (12 / 5), 3 horizontally (16 / 5).
        Assert.Equal([1, 2, 3], Speeds(o).Order());
        Assert.Equal([2, 3], Speeds(o with { MinSpeed = 2 }).Order());
        var torus = o with { Wrap = true, Start = SyntheticStart.Line, MaxSpeed = 4 };
        Assert.Equal([2, 3, 4], Speeds(torus).Order());
        Assert.Equal([4], Speeds(torus with { MinSpeed = 4 }).Order());
        // Every frame of a fixed-speed clip on the torus is the first one shifted by speed x frame pixels.
        var fixedSpeed = torus with { MinSpeed = 4 };
        foreach (var cls in SyntheticVideoDataset.Classes(fixedSpeed))
        {
            var clip = SyntheticVideoDataset.RenderClip(fixedSpeed, cls, 3);
            int h = o.Height, w = o.Width, dx = clip.Direction.Dx * 4, dy = clip.Direction.Dy * 4;
            for (int f = 1; f < o.Frames; f++)
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++)
                        Assert.Equal(clip.Pixels[((y - dy * f) % h + h) % h * w + ((x - dx * f) % w + w) % w], clip.Pixels[f * h * w + y * w + x]);
        }

        var tooSlow = Assert.Throws<UserError>(() => (torus with { MinSpeed = 5 }).Validate());
        Assert.Contains("--min-speed (5) must not exceed --max-speed (4)", tooSlow.Message);
        var noRoom = Assert.Throws<UserError>(() => (o with { MinSpeed = 3 }).Validate());
        Assert.Contains("--min-speed 3", noRoom.Message);
        Assert.Contains("at most 2 pixels per frame", noRoom.Message);
    }

    [Fact]
    public void Grid_SnapsLineStartsOnATorus_SoEveryFrameIsWholeCells()
    {
        var o = Small with { Height = 16, Width = 16, ShapeSize = 4, Start = SyntheticStart.Line, Wrap = true, MaxSpeed = 4, MinSpeed = 4, Grid = 4, ClipsPerClass = 30 };
        foreach (var cls in SyntheticVideoDataset.Classes(o))
        {
            var places = new HashSet<int>();
            for (int k = 0; k < o.ClipsPerClass; k++)
            {
                var clip = SyntheticVideoDataset.RenderClip(o, cls, k);
                Assert.Equal(0, clip.StartX % 4);
                Assert.Equal(0, clip.StartY % 4);
                places.Add(clip.Direction.Dx != 0 ? clip.StartX : clip.StartY);
                // Each 4x4 cell of each frame is all shape or all background.
                for (int f = 0; f < o.Frames; f++)
                    for (int cy = 0; cy < 4; cy++)
                        for (int cx = 0; cx < 4; cx++)
                        {
                            float first = clip.Pixels[f * 256 + cy * 64 + cx * 4];
                            for (int y = 0; y < 4; y++)
                                for (int x = 0; x < 4; x++)
                                    Assert.Equal(first, clip.Pixels[f * 256 + (cy * 4 + y) * 16 + cx * 4 + x]);
                        }
            }
            Assert.Equal([0, 4, 8, 12], places.Order());
        }
        // Without --grid the same options start anywhere.
        var free = o with { Grid = 1 };
        Assert.Contains(SyntheticVideoDataset.Classes(free).SelectMany(c => Enumerable.Range(0, 30).Select(k => SyntheticVideoDataset.RenderClip(free, c, k))),
            c => (c.StartX | c.StartY) % 4 != 0);

        Assert.Contains("needs --wrap and --start line", Assert.Throws<UserError>(() => (o with { Wrap = false }).Validate()).Message);
        Assert.Contains("needs --wrap and --start line", Assert.Throws<UserError>(() => (o with { Start = SyntheticStart.Edge }).Validate()).Message);
        Assert.Contains("--grid 3 must divide the frame (16x16)", Assert.Throws<UserError>(() => (o with { Grid = 3 }).Validate()).Message);
    }

    [Fact]
    public void AxisCaptions_OneClassPerColourAndAxis_ClipsDrawBothWays()
    {
        var o = Small with { Captions = SyntheticCaptions.Axis, ClipsPerClass = 12 };
        var classes = SyntheticVideoDataset.Classes(o);
        Assert.Equal(o.Colors * 2, classes.Count);
        Assert.Equal(["a red square moving horizontally", "a red square moving vertically"], classes.Take(2).Select(c => c.Prompt));
        foreach (var cls in classes)
        {
            var drawn = Enumerable.Range(0, o.ClipsPerClass).Select(k => SyntheticVideoDataset.RenderClip(o, cls, k).Direction).ToList();
            Assert.All(drawn, d => Assert.Contains(d, cls.Directions));
            Assert.Equal(2, drawn.Distinct().Count());
        }
        // Exact captions draw exactly what they did before axis captions existed.
        var exact = SyntheticVideoDataset.Classes(Small)[1];
        Assert.Equal(SyntheticCaptions.Exact, Small.Captions);
        Assert.Equal(exact.Direction, SyntheticVideoDataset.RenderClip(Small, exact, 0).Direction);

        var e = Assert.Throws<UserError>(() => (o with { Directions = 8 }).Validate());
        Assert.Contains("--captions axis", e.Message);
    }
}

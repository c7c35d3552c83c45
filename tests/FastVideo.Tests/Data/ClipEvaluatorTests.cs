using FastVideo.Data.Synthetic;
using Xunit;

namespace FastVideo.Tests.Data;

public class ClipEvaluatorTests
{
    public static TheoryData<SyntheticOptions> Layouts => new()
    {
        new SyntheticOptions { Colors = 8, Directions = 8, ClipsPerClass = 5, Frames = 8, Height = 32, Width = 32, ShapeSize = 8, Seed = 1 },
        new SyntheticOptions { Colors = 8, Directions = 4, ClipsPerClass = 5, Frames = 6, Height = 24, Width = 40, ShapeSize = 5, Seed = 2 },
        new SyntheticOptions { Colors = 4, Directions = 8, ClipsPerClass = 5, Frames = 4, Height = 12, Width = 12, ShapeSize = 3, Channels = 16, Seed = 3 },
        new SyntheticOptions { Colors = 8, Directions = 8, ClipsPerClass = 5, Frames = 4, Height = 16, Width = 16, ShapeSize = 5, Shape = SyntheticShape.Arrow, Seed = 5 },
        new SyntheticOptions { Colors = 4, Directions = 4, ClipsPerClass = 8, Frames = 4, Height = 16, Width = 16, ShapeSize = 5, Captions = SyntheticCaptions.Axis, Start = SyntheticStart.Edge, Seed = 6 },
    };

    [Fact]
    public void ForDataset_ChecksOneObjectOfTheDatasetsShapeArea()
    {
        using var dir = new TempDir();
        var o = new SyntheticOptions { Colors = 2, Directions = 2, ClipsPerClass = 2, Frames = 4, Height = 12, Width = 12, ShapeSize = 4, Seed = 9 };
        SyntheticVideoDataset.Write(o, dir.Path);
        var evaluator = ClipEvaluator.ForDataset(dir.Path);
        var cls = SyntheticVideoDataset.Classes(o)[0];
        var clip = SyntheticVideoDataset.RenderClip(o, cls, 0);
        var a = evaluator.Evaluate(clip.Pixels, o.Channels, o.Frames, o.Height, o.Width, cls.Prompt);
        Assert.True(a.OneObject);
        Assert.True(a.Correct);
        Assert.Equal(16, ClipEvaluator.ObjectArea(SyntheticShape.Square, 4));
    }

    [Fact]
    public void AxisCaption_AcceptsEitherWayAlongTheAxis_ButNotTheAverageOfBoth()
    {
        var o = new SyntheticOptions { Colors = 1, Directions = 2, ClipsPerClass = 16, Frames = 4, Height = 16, Width = 16, ShapeSize = 5,
            Captions = SyntheticCaptions.Axis, Start = SyntheticStart.Edge, Seed = 8 };
        var evaluator = new ClipEvaluator(o.PaletteColors, o.PaletteDirections, objectArea: ClipEvaluator.ObjectArea(o.Shape, o.ShapeSize));
        var cls = Assert.Single(SyntheticVideoDataset.Classes(o));
        Assert.Equal("a red square moving horizontally", cls.Prompt);
        var clips = Enumerable.Range(0, o.ClipsPerClass).Select(k => SyntheticVideoDataset.RenderClip(o, cls, k)).ToList();
        var left = clips.First(c => c.Direction.Name == "left");
        var right = clips.First(c => c.Direction.Name == "right");
        foreach (var clip in new[] { left, right })
        {
            var a = evaluator.Evaluate(clip.Pixels, o.Channels, o.Frames, o.Height, o.Width, cls.Prompt);
            Assert.True(a.Correct, $"{clip.Direction.Name}: seen {a.Color}/{a.Direction}");
            Assert.Equal("horizontally", a.ExpectedDirection);
        }
        // A sampler that averages the two modes draws two faint squares that do not move on the whole.
        var mean = left.Pixels.Zip(right.Pixels, (x, y) => (x + y) / 2).ToArray();
        var avg = evaluator.Evaluate(mean, o.Channels, o.Frames, o.Height, o.Width, cls.Prompt);
        Assert.False(avg.DirectionCorrect, $"average seen moving {avg.Direction} ({avg.VelocityX:F2}, {avg.VelocityY:F2})");
        Assert.False(avg.Correct);

        // Two full copies of the square in one frame are not "a square" even when the motion reads right.
        var twice = (float[])right.Pixels.Clone();
        int volume = o.Frames * o.Height * o.Width;
        for (int i = 0; i < volume; i++)
            if (left.Pixels[i] != SyntheticPalette.Background.R) // a pixel of the left-moving square
                for (int ch = 0; ch < 3; ch++) twice[ch * volume + i] = left.Pixels[ch * volume + i];
        var ghost = evaluator.Evaluate(twice, o.Channels, o.Frames, o.Height, o.Width, cls.Prompt);
        Assert.False(ghost.OneObject);
        Assert.False(ghost.Correct);
        // The exact caption still takes only its own direction.
        var exact = evaluator.Evaluate(left.Pixels, o.Channels, o.Frames, o.Height, o.Width, "a red square moving right");
        Assert.False(exact.DirectionCorrect);
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void GroundTruthClips_AreRecognised(SyntheticOptions o)
    {
        var evaluator = new ClipEvaluator(o.PaletteColors, o.PaletteDirections, objectArea: ClipEvaluator.ObjectArea(o.Shape, o.ShapeSize));
        var results = SyntheticVideoDataset.Classes(o)
            .SelectMany(cls => Enumerable.Range(0, o.ClipsPerClass).Select(k => SyntheticVideoDataset.RenderClip(o, cls, k)))
            .Select(clip => evaluator.Evaluate(clip.Pixels, o.Channels, o.Frames, o.Height, o.Width, clip.Class.Prompt))
            .ToList();
        double accuracy = results.Average(r => r.Correct ? 1.0 : 0.0);
        Assert.True(accuracy >= 0.99, $"accuracy {accuracy:P1}; wrong: " +
            string.Join("; ", results.Where(r => !r.Correct).Take(5).Select(r => $"{r.ExpectedColor}/{r.ExpectedDirection} -> {r.Color}/{r.Direction}")));
        Assert.All(results, r => Assert.InRange(r.Sharpness, 0.9, 1.5)); // crisp edges score about 1
        Assert.All(results, r => Assert.True(r.OneObject));
        Assert.All(results, r => Assert.True(r.Steady));
    }

    [Fact]
    public void AClipThatStallsOrStepsBack_IsNotSteady_ThoughItsNetDirectionIsRight()
    {
        var o = new SyntheticOptions { Colors = 1, Directions = 2, ClipsPerClass = 1, Frames = 5, Height = 16, Width = 24, ShapeSize = 4, Start = SyntheticStart.Edge, TextLen = 8, EmbedDim = 8 };
        var evaluator = new ClipEvaluator(o.PaletteColors, o.PaletteDirections);
        var cls = SyntheticVideoDataset.Classes(o)[1];   // moving right
        var clip = SyntheticVideoDataset.RenderClip(o, cls, 0);
        int plane = o.Height * o.Width, volume = o.Frames * plane;
        float[] WithFrame(int target, int source)
        {
            var px = (float[])clip.Pixels.Clone();
            for (int ch = 0; ch < 3; ch++) Array.Copy(clip.Pixels, ch * volume + source * plane, px, ch * volume + target * plane, plane);
            return px;
        }
        Assert.True(evaluator.Evaluate(clip.Pixels, o.Channels, o.Frames, o.Height, o.Width, cls.Prompt).Steady);
        var stall = evaluator.Evaluate(WithFrame(2, 1), o.Channels, o.Frames, o.Height, o.Width, cls.Prompt);   // frame 2 = frame 1
        Assert.Equal("right", stall.Direction);
        Assert.False(stall.Steady);
        var back = evaluator.Evaluate(WithFrame(3, 1), o.Channels, o.Frames, o.Height, o.Width, cls.Prompt);    // frame 3 back at frame 1's place
        Assert.Equal("right", back.Direction);
        Assert.False(back.Steady);
    }

    [Fact]
    public void PerClassAveragesOfManyClips_ScoreClearlyLowerOnSharpness()
    {
        var o = new SyntheticOptions { Colors = 4, Directions = 4, ClipsPerClass = 24, Seed = 4 };
        var evaluator = new ClipEvaluator(o.PaletteColors, o.PaletteDirections);
        var crisp = new List<double>();
        var averaged = new List<double>();
        foreach (var cls in SyntheticVideoDataset.Classes(o))
        {
            var clips = Enumerable.Range(0, o.ClipsPerClass).Select(k => SyntheticVideoDataset.RenderClip(o, cls, k)).ToList();
            crisp.AddRange(clips.Select(c => evaluator.Evaluate(c.Pixels, 3, o.Frames, o.Height, o.Width).Sharpness));
            var mean = new float[clips[0].Pixels.Length];
            foreach (var c in clips) for (int i = 0; i < mean.Length; i++) mean[i] += c.Pixels[i] / clips.Count;
            averaged.Add(evaluator.Evaluate(mean, 3, o.Frames, o.Height, o.Width).Sharpness);
        }
        Assert.True(averaged.Max() < 0.5 * crisp.Min(), $"averages up to {averaged.Max():F3}, crisp clips from {crisp.Min():F3}");
    }

    [Fact]
    public void BlurredClips_LoseSharpness_ButKeepTheirClass()
    {
        var o = new SyntheticOptions { Seed = 8 };
        var evaluator = new ClipEvaluator(o.PaletteColors, o.PaletteDirections);
        foreach (var cls in SyntheticVideoDataset.Classes(o))
        {
            var clip = SyntheticVideoDataset.RenderClip(o, cls, 0);
            var sharp = evaluator.Evaluate(clip.Pixels, 3, o.Frames, o.Height, o.Width, cls.Prompt);
            var blurred = evaluator.Evaluate(BoxBlur(clip.Pixels, 3, o.Frames, o.Height, o.Width, radius: 2), 3, o.Frames, o.Height, o.Width, cls.Prompt);
            Assert.True(blurred.Sharpness < 0.5 * sharp.Sharpness, $"{cls.Prompt}: {blurred.Sharpness:F3} vs {sharp.Sharpness:F3}");
            Assert.True(blurred.Correct, $"{cls.Prompt} -> {blurred.Color}/{blurred.Direction}");
        }
    }

    [Fact]
    public void WrongPromptStillClipOrEmptyClip_AreNotCorrect()
    {
        var o = new SyntheticOptions();
        var evaluator = new ClipEvaluator();
        var cls = SyntheticVideoDataset.Classes(o)[0]; // red, left
        var clip = SyntheticVideoDataset.RenderClip(o, cls, 0);
        Assert.True(evaluator.Evaluate(clip.Pixels, 3, o.Frames, o.Height, o.Width, "a red square moving left").Correct);
        var wrongColor = evaluator.Evaluate(clip.Pixels, 3, o.Frames, o.Height, o.Width, "a blue square moving left");
        Assert.False(wrongColor.Correct);
        Assert.True(wrongColor.DirectionCorrect);
        Assert.False(evaluator.Evaluate(clip.Pixels, 3, o.Frames, o.Height, o.Width, "a red square moving right").Correct);

        // every frame = the first frame: no motion, no direction
        int vol = o.Frames * o.Height * o.Width, plane = o.Height * o.Width;
        var still = (float[])clip.Pixels.Clone();
        for (int c = 0; c < 3; c++)
            for (int f = 1; f < o.Frames; f++)
                Array.Copy(clip.Pixels, c * vol, still, c * vol + f * plane, plane);
        var s = evaluator.Evaluate(still, 3, o.Frames, o.Height, o.Width, cls.Prompt);
        Assert.Null(s.Direction);
        Assert.False(s.Correct);

        var empty = Enumerable.Repeat(-0.5f, 3 * vol).ToArray();
        var e = evaluator.Evaluate(empty, 3, o.Frames, o.Height, o.Width, cls.Prompt);
        Assert.Null(e.Color);
        Assert.Equal(0, e.Sharpness);
        Assert.False(e.Correct);
    }

    [Fact]
    public void EvaluateMany_AggregatesOverTensors()
    {
        var o = new SyntheticOptions { ClipsPerClass = 2 };
        var clips = SyntheticVideoDataset.Classes(o).Select(c => SyntheticVideoDataset.RenderClip(o, c, 1)).ToList();
        var tensors = clips.Select(c => c.ToTensor()).ToList();
        var report = new ClipEvaluator().EvaluateMany(tensors.Select((t, i) => (t, i == 0 ? "a green square moving up" : clips[i].Class.Prompt)));
        Assert.Equal(16, report.Count);
        Assert.Equal(15 / 16.0, report.Accuracy, 6);
        Assert.True(report.MeanSharpness > 0.9);
        foreach (var t in tensors) t.Dispose();
    }

    private static float[] BoxBlur(float[] px, int c, int t, int h, int w, int radius)
    {
        var result = new float[px.Length];
        for (int ch = 0; ch < c; ch++)
        for (int f = 0; f < t; f++)
        {
            int offset = (ch * t + f) * h * w;
            for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                double s = 0; int n = 0;
                for (int dy = -radius; dy <= radius; dy++)
                for (int dx = -radius; dx <= radius; dx++)
                {
                    int yy = Math.Clamp(y + dy, 0, h - 1), xx = Math.Clamp(x + dx, 0, w - 1);
                    s += px[offset + yy * w + xx]; n++;
                }
                result[offset + y * w + x] = (float)(s / n);
            }
        }
        return result;
    }
}

public class WrapAroundTests
{
    private static readonly SyntheticOptions Torus = new()
    {
        Colors = 2, Directions = 4, ClipsPerClass = 6, Frames = 8, Height = 16, Width = 16, ShapeSize = 5,
        Start = SyntheticStart.Edge, Wrap = true, MaxSpeed = 5, Seed = 3,
    };

    [Fact]
    public void Render_WrapsTheShapeAcrossTheEdges_KeepingItsArea()
    {
        foreach (var cls in SyntheticVideoDataset.Classes(Torus))
            for (int k = 0; k < Torus.ClipsPerClass; k++)
            {
                var clip = SyntheticVideoDataset.RenderClip(Torus, cls, k);
                Assert.InRange(clip.Speed, 3, 5);
                int plane = Torus.Height * Torus.Width;
                for (int f = 0; f < Torus.Frames; f++)
                {
                    // Every frame shows the whole square (25 pixels), also when it straddles an edge; at speed 3..5 over
                    // 8 frames every clip crosses one.
                    int shown = Enumerable.Range(f * plane, plane).Count(i => clip.Pixels[i] != SyntheticPalette.Background.R);
                    Assert.Equal(25, shown);
                    int x = ((clip.StartX + clip.Direction.Dx * clip.Speed * f) % 16 + 16) % 16;
                    int y = ((clip.StartY + clip.Direction.Dy * clip.Speed * f) % 16 + 16) % 16;
                    Assert.NotEqual(SyntheticPalette.Background.R, clip.Pixels[f * plane + y * 16 + x]);           // its top-left corner
                    Assert.NotEqual(SyntheticPalette.Background.R, clip.Pixels[f * plane + (y + 4) % 16 * 16 + (x + 4) % 16]); // and its far corner
                }
            }
    }

    [Fact]
    public void Evaluator_FollowsAShapeAcrossTheEdge_WhereTheBoundedCentroidJumpsBack()
    {
        using var dir = new TempDir();
        SyntheticVideoDataset.Write(Torus, dir.Path);
        var torus = ClipEvaluator.ForDataset(dir.Path);
        var flat = new ClipEvaluator(Torus.PaletteColors, Torus.PaletteDirections);
        int crossed = 0;
        foreach (var cls in SyntheticVideoDataset.Classes(Torus))
            for (int k = 0; k < Torus.ClipsPerClass; k++)
            {
                var clip = SyntheticVideoDataset.RenderClip(Torus, cls, k);
                var a = torus.Evaluate(clip.Pixels, 3, Torus.Frames, 16, 16, cls.Prompt);
                Assert.True(a.Correct, $"{cls.Prompt} clip {k}: seen {a.Color}/{a.Direction}");
                Assert.Equal(clip.Speed, Math.Abs(a.VelocityX) + Math.Abs(a.VelocityY), 6);
                if (!flat.Evaluate(clip.Pixels, 3, Torus.Frames, 16, 16, cls.Prompt).DirectionCorrect) crossed++;
            }
        Assert.True(crossed > 0, "the bounded evaluator should misread some clips that cross an edge");
    }

    [Fact]
    public void Options_RefuseASpeedOfHalfTheFrame()
    {
        var e = Assert.Throws<UserError>(() => (Torus with { MaxSpeed = 8 }).Validate());
        Assert.Contains("--max-speed at most 7", e.Message);
        (Torus with { Frames = 40 }).Validate();   // no room check on a torus
    }
}

using System.Text.Json;
using static TorchSharp.torch;

namespace FastVideo.Data.Synthetic;

/// <summary>What the evaluator saw in one clip, and how it compares with the prompt (when one was given).</summary>
public sealed record ClipAssessment(
    string? Color, string? Direction, double VelocityX, double VelocityY, double Sharpness, double ForegroundFraction,
    string? ExpectedColor, string? ExpectedDirection, IReadOnlyList<string>? AcceptedDirections = null,
    bool? OneObject = null, bool Steady = false)
{
    public bool ColorCorrect => ExpectedColor is not null && Color == ExpectedColor;
    /// <summary>The seen direction is one the caption allows: its direction, or either way along its axis
    /// ("horizontally").</summary>
    public bool DirectionCorrect => Direction is not null &&
        (AcceptedDirections ?? (ExpectedDirection is null ? [] : [ExpectedDirection])).Contains(Direction);
    /// <summary>Colour and direction match the prompt, and (when the evaluator knows the shape's area) every frame
    /// shows one object of about that area, not two ghosts or a smear.</summary>
    public bool Correct => ColorCorrect && DirectionCorrect && OneObject != false;
}

public sealed record EvaluationReport(int Count, double Accuracy, double ColorAccuracy, double DirectionAccuracy,
    double MeanSharpness, IReadOnlyList<ClipAssessment> Clips)
{
    /// <summary>Share of clips whose shape advances along the seen direction at every frame (<see cref="ClipAssessment.Steady"/>).</summary>
    public double SteadyAccuracy => Clips.Count == 0 ? 0 : Clips.Average(c => c.Steady ? 1.0 : 0.0);

    /// <summary>Share of clips with one object of the shape's area in every frame (null when not checked).</summary>
    public double? ObjectAccuracy => Clips.Count == 0 || Clips.Any(c => c.OneObject is null) ? null : Clips.Average(c => c.OneObject == true ? 1.0 : 0.0);
}

/// <summary>
/// Judges clips of the moving-shapes dataset (RGB [C, T, H, W] in [-1, 1]; channels beyond 3 are ignored).
/// <list type="bullet">
/// <item>Foreground = pixels whose RGB distance from the background exceeds half the smallest colour-background
/// distance of the palette.</item>
/// <item>Colour = the palette colour nearest to most foreground pixels (votes weighted by distance from background).</item>
/// <item>Direction = the candidate direction closest in angle to the least-squares velocity of the foreground centroid
/// over frames; below 0.25 px/frame there is no direction. On a wrap-around (torus) dataset the centroid is the
/// circular mean on each axis, and each frame's centroid is taken as the copy nearest the previous frame's, so a
/// shape crossing an edge keeps moving the same way.</item>
/// <item>Steady: there is a direction, every frame has a centroid, and each frame-to-frame step of the centroid
/// advances at least 0.25 px along that direction (no stalls or steps back, which the least-squares velocity of a
/// whole clip averages away).</item>
/// <item>One object (when the shape's area A in pixels is known, e.g. from a dataset's classes.json): every frame
/// has between 0.5 A and 1.75 A foreground pixels. Two copies of the object, or one smeared over its neighbours,
/// fail; a sampler that averages two possible motions draws exactly that.</item>
/// <item>Sharpness = sum(|grad|^2) / sum(|grad|) / contrast, with |grad| the RGB gradient magnitude (forward
/// differences) and contrast the largest distance from the background: about 1 for crisp edges and about 1/w for
/// edges smeared over w pixels, whatever the colours.</item>
/// </list>
/// </summary>
public sealed class ClipEvaluator
{
    private readonly IReadOnlyList<SyntheticColor> _colors;
    private readonly IReadOnlyList<SyntheticDirection> _directions;
    private readonly SyntheticColor _background;
    private readonly double _threshold;
    private readonly int? _objectArea;
    private readonly bool _wrap;

    public const double MinSpeed = 0.25;
    public const double MinObjectArea = 0.5, MaxObjectArea = 1.75;

    public ClipEvaluator(IReadOnlyList<SyntheticColor>? colors = null, IReadOnlyList<SyntheticDirection>? directions = null,
        SyntheticColor? background = null, int? objectArea = null, bool wrap = false)
    {
        _wrap = wrap;
        if (objectArea is <= 0) throw new ArgumentException($"objectArea must be positive, got {objectArea}");
        _objectArea = objectArea;
        _colors = colors ?? SyntheticPalette.Colors;
        _directions = directions ?? SyntheticPalette.Directions;
        _background = background ?? SyntheticPalette.Background;
        if (_colors.Count == 0 || _directions.Count == 0) throw new ArgumentException("the evaluator needs colours and directions");
        _threshold = 0.5 * _colors.Min(c => Distance(c.R, c.G, c.B, _background));
    }

    /// <summary>An evaluator restricted to the colours and directions listed in a synthetic dataset's classes.json.</summary>
    public static ClipEvaluator ForDataset(string datasetDir)
    {
        var path = Path.Combine(datasetDir, SyntheticVideoDataset.ClassesFile);
        if (!File.Exists(path)) throw new UserError($"{path} not found: not a synthetic moving-shapes dataset");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            var colors = doc.RootElement.GetProperty("colors").EnumerateArray()
                .Select(c => SyntheticPalette.Colors.First(p => p.Name == c.GetProperty("name").GetString())).ToList();
            var dirs = doc.RootElement.GetProperty("directions").EnumerateArray()
                .Select(d => SyntheticPalette.Directions.First(p => p.Name == d.GetProperty("name").GetString())).ToList();
            int? area = null;
            bool wrap = false;
            if (doc.RootElement.TryGetProperty("options", out var opts) && opts.TryGetProperty("wrap", out var w)) wrap = w.GetBoolean();
            if (opts.ValueKind == JsonValueKind.Object && opts.TryGetProperty("shape_size", out var size))
            {
                var shape = opts.TryGetProperty("shape", out var sh) ? SyntheticPalette.FromWord<SyntheticShape>(sh.GetString()) ?? SyntheticShape.Square : SyntheticShape.Square;
                area = ObjectArea(shape, size.GetInt32());
            }
            return new ClipEvaluator(colors, dirs, objectArea: area, wrap: wrap);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new UserError($"{path}: not a valid classes.json ({e.Message})", e);
        }
    }

    /// <summary>Pixels a shape covers in its size x size box (the same for every direction of an arrow up to
    /// rounding; the straight directions' count is used).</summary>
    public static int ObjectArea(SyntheticShape shape, int size) =>
        SyntheticPalette.Mask(shape, SyntheticPalette.Directions[0], size).Count(covered => covered);

    /// <summary>Evaluates a clip tensor [C, T, H, W] (any float dtype, any device).</summary>
    public ClipAssessment Evaluate(Tensor clip, string? prompt = null)
    {
        if (clip.dim() != 4) throw new ArgumentException($"expected a clip [C, T, H, W], got [{string.Join(", ", clip.shape)}]");
        using var scope = NewDisposeScope(); // frees the intermediate tensors of the conversion chain
        var c = clip.detach().to(ScalarType.Float32).cpu().contiguous();
        var s = c.shape;
        return Evaluate(c.data<float>().ToArray(), (int)s[0], (int)s[1], (int)s[2], (int)s[3], prompt);
    }

    public ClipAssessment Evaluate(float[] pixels, int channels, int frames, int height, int width, string? prompt = null)
    {
        if (channels < 3) throw new ArgumentException($"the evaluator needs RGB clips (3 or more channels), got {channels}");
        if (pixels.Length != (long)channels * frames * height * width) throw new ArgumentException("pixels do not fill [C, T, H, W]");
        int plane = height * width, volume = frames * plane;
        var bgR = _background.R; var bgG = _background.G; var bgB = _background.B;

        var votes = new double[_colors.Count];
        var cx = new List<double>(); var cy = new List<double>(); var ct = new List<double>();
        long fgPixels = 0;
        bool oneObject = true;
        for (int f = 0; f < frames; f++)
        {
            double wsum = 0, xs = 0, ys = 0, xc = 0, xsn = 0, yc = 0, ysn = 0;
            long frameFg = 0;
            for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int i = f * plane + y * width + x;
                float r = pixels[i], g = pixels[volume + i], b = pixels[2 * volume + i];
                double d = Distance(r, g, b, _background);
                if (d <= _threshold) continue;
                fgPixels++;
                frameFg++;
                wsum += d; xs += d * x; ys += d * y;
                if (_wrap)
                {
                    xc += d * Math.Cos(2 * Math.PI * x / width); xsn += d * Math.Sin(2 * Math.PI * x / width);
                    yc += d * Math.Cos(2 * Math.PI * y / height); ysn += d * Math.Sin(2 * Math.PI * y / height);
                }
                int best = 0; double bestDist = double.MaxValue;
                for (int k = 0; k < _colors.Count; k++)
                {
                    double dk = Distance(r, g, b, _colors[k]);
                    if (dk < bestDist) { bestDist = dk; best = k; }
                }
                votes[best] += d;
            }
            if (wsum > 0)
            {
                if (_wrap)
                {
                    cx.Add(Unwrapped(Math.Atan2(xsn, xc) * width / (2 * Math.PI), cx, width));
                    cy.Add(Unwrapped(Math.Atan2(ysn, yc) * height / (2 * Math.PI), cy, height));
                }
                else { cx.Add(xs / wsum); cy.Add(ys / wsum); }
                ct.Add(f);
            }
            if (_objectArea is { } area && (frameFg < MinObjectArea * area || frameFg > MaxObjectArea * area)) oneObject = false;
        }

        string? color = votes.Max() > 0 ? _colors[Array.IndexOf(votes, votes.Max())].Name : null;
        double vx = Slope(ct, cx), vy = Slope(ct, cy);
        double speed = Math.Sqrt(vx * vx + vy * vy);
        static double Along(SyntheticDirection d, double dx, double dy) => (d.Dx * dx + d.Dy * dy) / Math.Sqrt(d.Dx * d.Dx + d.Dy * d.Dy);
        var seen = ct.Count >= 2 && speed >= MinSpeed ? _directions.MaxBy(d => Along(d, vx, vy)) : null;
        string? direction = seen?.Name;
        bool steady = seen is not null && ct.Count == frames
            && Enumerable.Range(1, frames - 1).All(f => Along(seen, cx[f] - cx[f - 1], cy[f] - cy[f - 1]) >= MinSpeed);

        var caption = prompt is null ? null : SyntheticPalette.ParseCaption(prompt);
        return new ClipAssessment(color, direction, vx, vy, Sharpness(pixels, channels, frames, height, width, _background),
            fgPixels / (double)volume, caption?.Color?.Name, caption?.MotionWord, caption?.AcceptedDirections,
            _objectArea is null ? null : oneObject, steady);
    }

    /// <summary>Scores many clips against their prompts.</summary>
    public EvaluationReport EvaluateMany(IEnumerable<(Tensor Clip, string Prompt)> clips)
    {
        var all = clips.Select(c => Evaluate(c.Clip, c.Prompt)).ToList();
        if (all.Count == 0) return new EvaluationReport(0, 0, 0, 0, 0, all);
        return new EvaluationReport(all.Count, all.Average(a => a.Correct ? 1.0 : 0.0), all.Average(a => a.ColorCorrect ? 1.0 : 0.0),
            all.Average(a => a.DirectionCorrect ? 1.0 : 0.0), all.Average(a => a.Sharpness), all);
    }

    /// <summary>Edge sharpness of an RGB clip (see the class summary); 0 for a flat clip.</summary>
    public static double Sharpness(float[] pixels, int channels, int frames, int height, int width, SyntheticColor? background = null)
    {
        var bg = background ?? SyntheticPalette.Background;
        int plane = height * width, volume = frames * plane;
        double sumSq = 0, sum = 0, contrast = 0;
        for (int f = 0; f < frames; f++)
        for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
        {
            int i = f * plane + y * width + x;
            double g2 = 0;
            for (int c = 0; c < 3; c++)
            {
                int ci = c * volume + i;
                if (x + 1 < width) { double gx = pixels[ci + 1] - pixels[ci]; g2 += gx * gx; }
                if (y + 1 < height) { double gy = pixels[ci + width] - pixels[ci]; g2 += gy * gy; }
            }
            sumSq += g2;
            sum += Math.Sqrt(g2);
            contrast = Math.Max(contrast, Distance(pixels[i], pixels[volume + i], pixels[2 * volume + i], bg));
        }
        return sum > 0 && contrast > 0 ? sumSq / sum / contrast : 0;
    }

    private static double Distance(float r, float g, float b, SyntheticColor c)
    {
        double dr = r - c.R, dg = g - c.G, db = b - c.B;
        return Math.Sqrt(dr * dr + dg * dg + db * db);
    }

    /// <summary>The copy of a torus coordinate (period <paramref name="period"/>) nearest the track's last point.</summary>
    private static double Unwrapped(double v, List<double> track, int period)
    {
        if (track.Count == 0) return v;
        double last = track[^1];
        return v + period * Math.Round((last - v) / period);
    }

    private static double Slope(List<double> t, List<double> v)
    {
        if (t.Count < 2) return 0;
        double mt = t.Average(), mv = v.Average(), num = 0, den = 0;
        for (int i = 0; i < t.Count; i++) { num += (t[i] - mt) * (v[i] - mv); den += (t[i] - mt) * (t[i] - mt); }
        return den > 0 ? num / den : 0;
    }
}

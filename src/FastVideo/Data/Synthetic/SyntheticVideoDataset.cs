using System.Text.Json;
using static TorchSharp.torch;

namespace FastVideo.Data.Synthetic;

/// <summary>Options of the moving-shapes dataset (the <c>fastvideo dataset synth</c> flags).</summary>
public sealed record SyntheticOptions
{
    /// <summary>How many palette colours (the first N of <see cref="SyntheticPalette.Colors"/>, at most 8).</summary>
    public int Colors { get; init; } = 4;
    /// <summary>How many directions (the first N of left, right, up, down, then the diagonals; at most 8).</summary>
    public int Directions { get; init; } = 4;
    public int ClipsPerClass { get; init; } = 8;
    public int Frames { get; init; } = 8;
    public int Height { get; init; } = 32;
    public int Width { get; init; } = 32;
    /// <summary>3 = RGB. More channels repeat R, G, B cyclically (e.g. 16 to mimic Wan's latent channels);
    /// 1 or 2 carry the luminance.</summary>
    public int Channels { get; init; } = 3;
    /// <summary>Side of the shape's box in pixels.</summary>
    public int ShapeSize { get; init; } = 8;
    public SyntheticShape Shape { get; init; } = SyntheticShape.Square;
    /// <summary>Caps the speed in pixels per frame (0 = as fast as the frame allows). Slow motion is decided late in
    /// denoising, after the position, so a text-conditioned model must take the direction from the caption.</summary>
    public int MaxSpeed { get; init; }
    /// <summary>The slowest speed a clip may draw, in pixels per frame (0 = half the top speed, rounded up). Equal to
    /// <see cref="MaxSpeed"/> it fixes the speed: with --wrap, a speed of a whole patch per frame makes the motion a
    /// shift by whole tokens.</summary>
    public int MinSpeed { get; init; }
    /// <summary>Where a clip starts: anywhere its path fits (Random); at the edge it moves away from, centred on the
    /// other axis (Edge), so each class has one track per speed; or at that edge, anywhere along it (Lane).</summary>
    public SyntheticStart Start { get; init; } = SyntheticStart.Random;
    /// <summary>The frame is a torus: a shape leaving one edge re-enters at the opposite one, so a motion can go on
    /// for any number of frames (what a clip streamed past the training length needs). Speeds may then exceed what
    /// the frame leaves room for, up to just under half the frame (so the direction stays unambiguous).</summary>
    public bool Wrap { get; init; }
    /// <summary>With --start line on a torus: start positions snap to multiples of this many pixels (1 = any pixel).
    /// Set to the DiT's patch size, with a shape of that size and a speed of that many pixels per frame, every frame
    /// is whole tokens and the motion a shift by one token per frame.</summary>
    public int Grid { get; init; } = 1;
    /// <summary>Whether captions name the direction (Exact) or only its axis (Axis: one class per colour and axis,
    /// each clip moving one of the axis's two ways).</summary>
    public SyntheticCaptions Captions { get; init; } = SyntheticCaptions.Exact;
    /// <summary>The text_len the recipe should use; every caption (tokens + end token) must fit.</summary>
    public int TextLen { get; init; } = 16;
    public int EmbedDim { get; init; } = 32;
    /// <summary>How <c>text_embedding</c> holds a caption: Wan's tokens, or HunyuanVideo's packed rows (a pooled vector
    /// of <see cref="PooledDim"/> values zero-padded to <see cref="EmbedDim"/>, then the tokens; reference spec 2.1).</summary>
    public SyntheticTextLayout TextLayout { get; init; } = SyntheticTextLayout.Wan;
    /// <summary>Width of the pooled caption vector (the hunyuan layout's stand-in for CLIP's pooled output).</summary>
    public int PooledDim { get; init; } = 16;
    public long Seed { get; init; }
    public int RowsPerFile { get; init; } = 512;
    public double Fps { get; init; } = 8;

    public IReadOnlyList<SyntheticColor> PaletteColors => SyntheticPalette.Colors.Take(Colors).ToList();
    public IReadOnlyList<SyntheticDirection> PaletteDirections => SyntheticPalette.Directions.Take(Directions).ToList();

    /// <summary>Throws <see cref="UserError"/> naming the first bad option.</summary>
    public void Validate()
    {
        static void Check(bool ok, string message) { if (!ok) throw new UserError(message); }
        Check(Colors is >= 1 and <= 8, $"--colors must be 1..{SyntheticPalette.Colors.Count}, got {Colors}");
        Check(Directions is >= 1 and <= 8, $"--directions must be 1..{SyntheticPalette.Directions.Count}, got {Directions}");
        Check(ClipsPerClass >= 1, $"--clips-per-class must be at least 1, got {ClipsPerClass}");
        Check(Frames >= 2, $"--frames must be at least 2 (motion needs two frames), got {Frames}");
        Check(Height >= 2 && Width >= 2, $"--height and --width must be at least 2, got {Height}x{Width}");
        Check(Channels >= 1, $"--channels must be at least 1, got {Channels}");
        Check(EmbedDim >= 2, $"--embed-dim must be at least 2, got {EmbedDim}");
        Check(MaxSpeed >= 0, $"--max-speed must be 0 (no cap) or a positive number of pixels per frame, got {MaxSpeed}");
        Check(MinSpeed >= 0, $"--min-speed must be 0 (half the top speed) or a positive number of pixels per frame, got {MinSpeed}");
        Check(MinSpeed == 0 || MaxSpeed == 0 || MinSpeed <= MaxSpeed, $"--min-speed ({MinSpeed}) must not exceed --max-speed ({MaxSpeed})");
        Check(Grid >= 1, $"--grid must be at least 1 pixel, got {Grid}");
        Check(Grid == 1 || (Wrap && Start == SyntheticStart.Line), $"--grid {Grid} snaps the starts of --start line on a torus: it needs --wrap and --start line");
        Check(Height % Grid == 0 && Width % Grid == 0, $"--grid {Grid} must divide the frame ({Height}x{Width})");
        Check(RowsPerFile >= 1, $"rows per file must be at least 1, got {RowsPerFile}");
        Check(Fps > 0, $"fps must be positive, got {Fps}");
        Check(ShapeSize >= 1 && ShapeSize < Math.Min(Height, Width),
            $"--shape-size must be at least 1 and smaller than the frame ({Height}x{Width}), got {ShapeSize}");
        foreach (var d in Wrap ? Array.Empty<SyntheticDirection>() : PaletteDirections)
        {
            int room = Math.Min(d.Dx != 0 ? Width - ShapeSize : int.MaxValue, d.Dy != 0 ? Height - ShapeSize : int.MaxValue);
            Check(room >= Frames - 1,
                $"a {ShapeSize}-pixel square moving {d.Name} needs {Frames - 1} pixels of room for {Frames} frames at " +
                $"1 pixel per frame, but the {Height}x{Width} frame leaves {room}: use a smaller --shape-size or --frames, or a larger frame");
        }
        if (Wrap)
        {
            int limit = (Math.Min(Height, Width) - 1) / 2;
            Check(MaxSpeed <= limit, $"with --wrap a speed must stay under half the frame ({Height}x{Width}) so the direction is unambiguous: --max-speed at most {limit}, got {MaxSpeed}");
        }
        if (MinSpeed > 0)   // the checks above already hold: at least 2 frames, and room for the shape
            foreach (var d in PaletteDirections)
            {
                int top = SyntheticVideoDataset.TopSpeed(this, d);
                Check(MinSpeed <= top, $"--min-speed {MinSpeed}: a {ShapeSize}-pixel shape moving {d.Name} in the {Height}x{Width} frame can move at most {top} pixels per frame for {Frames} frames");
            }
        Check(Captions == SyntheticCaptions.Exact || Directions <= 4,
            $"--captions axis names horizontal and vertical motion only, so it takes --directions 1..4, got {Directions}");
        int longest = SyntheticVideoDataset.Classes(this).Max(c => SyntheticTextEncoder.Tokenize(c.Prompt).Count);
        if (TextLayout == SyntheticTextLayout.Hunyuan)
        {
            Check(PooledDim >= 1 && PooledDim <= EmbedDim, $"--pooled-dim must be 1..--embed-dim ({EmbedDim}), got {PooledDim}");
            Check(TextLen >= longest + 1, $"--text-len must hold the pooled row and the longest caption (1 + {longest} tokens with the end token), got {TextLen}");
        }
        else Check(TextLen >= longest, $"--text-len must hold the longest caption ({longest} tokens with the end token), got {TextLen}");
    }
}

/// <summary>How a caption's embedding is laid out in <c>text_embedding</c>.</summary>
public enum SyntheticTextLayout
{
    /// <summary>The tokens [L, D] (Wan's umT5 layout).</summary>
    Wan,
    /// <summary>[pooled vector zero-padded to D ; tokens] (FastVideo's HunyuanVideo layout: CLIP pooled + LLaMA tokens).</summary>
    Hunyuan,
}

/// <summary>Where the moving shape starts.</summary>
public enum SyntheticStart
{
    /// <summary>Anywhere its whole path fits in the frame.</summary>
    Random,
    /// <summary>At the edge it moves away from, centred on the other axis.</summary>
    Edge,
    /// <summary>At the edge it moves away from, anywhere along that edge: the track along the motion is fixed per
    /// speed, the lane across it is random, so a class has many equally likely clips.</summary>
    Lane,
    /// <summary>On the frame's centre line along its motion (centred across it), anywhere on that line: with --wrap
    /// at any position, else where its path fits. The line gives the axis; the place along it is random, so every
    /// window of a longer motion is itself a clip of the data.</summary>
    Line,
}

/// <summary>A class: a colour and a direction, or with axis captions a colour and the directions of one axis
/// (<see cref="Directions"/>; <see cref="Direction"/> is then the first of them).</summary>
public sealed record SyntheticClass(int Index, SyntheticColor Color, SyntheticDirection Direction,
    SyntheticShape Shape = SyntheticShape.Square, IReadOnlyList<SyntheticDirection>? AxisDirections = null)
{
    public IReadOnlyList<SyntheticDirection> Directions => AxisDirections ?? [Direction];

    public string Prompt => AxisDirections is null
        ? SyntheticPalette.Prompt(Color, Direction, Shape)
        : SyntheticPalette.Caption(Color, SyntheticPalette.AxisWord(Direction)!, Shape);
}

/// <summary>One rendered clip: pixels [C, T, H, W] in [-1, 1], and how it was drawn.</summary>
public sealed record SyntheticClip(SyntheticClass Class, int ClipIndex, string Id, float[] Pixels, long[] Shape,
    int StartX, int StartY, int Speed, SyntheticDirection Direction)
{
    public Tensor ToTensor() => tensor(Pixels, Shape);
}

/// <summary>What <see cref="SyntheticVideoDataset.Write"/> produced.</summary>
public sealed record SyntheticSummary(string OutDir, int Rows, IReadOnlyList<string> Files, IReadOnlyList<SyntheticClass> Classes,
    float[] LatentsMean, float[] LatentsStd);

/// <summary>
/// The moving-shapes dataset: clips of a coloured square moving over a plain background; classes = colour x
/// direction. Written in FastVideo's T2V parquet layout with an identity "VAE" (the latent is the clip itself, so any
/// sample can be shown as a GIF), a <c>vae/config.json</c> whose per-channel latents_mean/latents_std bring the
/// latents to unit scale, the empty caption's embedding in <c>negative_prompt_embeds.safetensors</c>, and
/// <c>classes.json</c>. Everything is a pure function of the options, so the same options give the same bytes.
/// </summary>
public static class SyntheticVideoDataset
{
    public const string DataFolder = "data";
    public const string ClassesFile = "classes.json";
    public const string VaeConfigFile = "vae/config.json";

    public static IReadOnlyList<SyntheticClass> Classes(SyntheticOptions options)
    {
        var result = new List<SyntheticClass>();
        if (options.Captions == SyntheticCaptions.Axis)
        {
            var axes = options.PaletteDirections.GroupBy(d => SyntheticPalette.AxisWord(d)).Select(g => g.ToList()).ToList();
            foreach (var c in options.PaletteColors)
                foreach (var axis in axes)
                    result.Add(new SyntheticClass(result.Count, c, axis[0], options.Shape, axis));
            return result;
        }
        foreach (var c in options.PaletteColors)
            foreach (var d in options.PaletteDirections)
                result.Add(new SyntheticClass(result.Count, c, d, options.Shape));
        return result;
    }

    /// <summary>Renders clip <paramref name="clipIndex"/> of a class. Its start, speed and position are drawn from
    /// SplitMix64 keyed by (seed, colour, direction, clip), so a clip does not change when other options add classes.</summary>
    public static SyntheticClip RenderClip(SyntheticOptions o, SyntheticClass cls, int clipIndex)
    {
        int colorId = IndexOf(SyntheticPalette.Colors, cls.Color);
        int dirId = IndexOf(SyntheticPalette.Directions, cls.Direction);
        var rng = SplitMix64.Keyed(o.Seed, colorId, dirId, clipIndex);
        var d = cls.AxisDirections is { } axis ? axis[rng.NextInt(0, axis.Count - 1)] : cls.Direction;
        int roomX = o.Width - o.ShapeSize, roomY = o.Height - o.ShapeSize, steps = o.Frames - 1;
        int maxSpeed = TopSpeed(o, d);
        // At least half the fastest by default, so motion is clear (Validate checks --min-speed against the top speed).
        int speed = rng.NextInt(o.MinSpeed > 0 ? o.MinSpeed : (maxSpeed + 1) / 2, maxSpeed);
        int x0 = StartOn(o.Start, ref rng, d.Dx, roomX, o.Wrap ? 0 : speed * steps, o.Wrap ? o.Width : 0, o.Grid);
        int y0 = StartOn(o.Start, ref rng, d.Dy, roomY, o.Wrap ? 0 : speed * steps, o.Wrap ? o.Height : 0, o.Grid);

        int c = o.Channels, t = o.Frames, h = o.Height, w = o.Width;
        var px = new float[(long)c * t * h * w];
        var bg = ChannelValues(SyntheticPalette.Background, c);
        var fg = ChannelValues(cls.Color, c);
        int size = o.ShapeSize;
        var covered = SyntheticPalette.Mask(o.Shape, d, size); // the same in every frame and channel
        for (int ch = 0; ch < c; ch++)
        {
            var plane = px.AsSpan(ch * t * h * w, t * h * w);
            plane.Fill(bg[ch]);
            for (int f = 0; f < t; f++)
            {
                int x = x0 + d.Dx * speed * f, y = y0 + d.Dy * speed * f;
                for (int yy = 0; yy < size; yy++)
                    for (int xx = 0; xx < size; xx++)
                        if (covered[yy * size + xx]) plane[f * h * w + Mod(y + yy, h) * w + Mod(x + xx, w)] = fg[ch];
            }
        }
        string id = $"{cls.Color.Name}_{(cls.AxisDirections is null ? d.Name : SyntheticPalette.AxisWord(d))}_{clipIndex:D4}";
        return new SyntheticClip(cls, clipIndex, id, px, [c, t, h, w], x0, y0, speed, d);
    }

    /// <summary>The fastest a shape moving <paramref name="d"/> may go: what the frame leaves room for in a clip, capped
    /// by --max-speed; on a torus --max-speed sets it (the frame's room no longer bounds it).</summary>
    internal static int TopSpeed(SyntheticOptions o, SyntheticDirection d)
    {
        int roomX = o.Width - o.ShapeSize, roomY = o.Height - o.ShapeSize, steps = o.Frames - 1;
        int top = Math.Max(1, Math.Min(d.Dx != 0 ? roomX / steps : int.MaxValue, d.Dy != 0 ? roomY / steps : int.MaxValue));
        return o.MaxSpeed <= 0 ? top : o.Wrap ? o.MaxSpeed : Math.Min(top, o.MaxSpeed);
    }

    /// <param name="torus">The frame's size along this axis on a torus (any position is then a start), else 0.</param>
    /// <param name="grid">Line starts snap to multiples of it (1 unless on a torus).</param>
    private static int StartOn(SyntheticStart mode, ref SplitMix64 rng, int step, int room, int travel, int torus, int grid) => mode switch
    {
        SyntheticStart.Edge => EdgeStart(step, room),
        SyntheticStart.Lane => step != 0 ? EdgeStart(step, room) : rng.NextInt(0, room),
        SyntheticStart.Line => step == 0 ? room / 2 / grid * grid
            : torus > 0 ? rng.NextInt(0, torus / grid - 1) * grid : StartOnAxis(ref rng, step, room, travel),
        _ => StartOnAxis(ref rng, step, room, travel),
    };

    /// <summary>Without wrap every pixel of the path is inside the frame, so this is the identity there.</summary>
    private static int Mod(int v, int n) => ((v % n) + n) % n;

    private static int EdgeStart(int step, int room) => step > 0 ? 0 : step < 0 ? room : room / 2;

    private static int StartOnAxis(ref SplitMix64 rng, int step, int room, int travel) => step switch
    {
        > 0 => rng.NextInt(0, room - travel),
        < 0 => rng.NextInt(travel, room),
        _ => rng.NextInt(0, room),
    };

    private static int IndexOf<T>(IReadOnlyList<T> list, T item)
    {
        for (int i = 0; i < list.Count; i++) if (Equals(list[i], item)) return i;
        throw new ArgumentException($"{item} is not in the palette");
    }

    /// <summary>A colour's value in each of <paramref name="channels"/> channels (RGB repeated; luminance below 3).</summary>
    public static float[] ChannelValues(SyntheticColor color, int channels)
    {
        var v = new float[channels];
        float luma = 0.299f * color.R + 0.587f * color.G + 0.114f * color.B;
        for (int i = 0; i < channels; i++) v[i] = channels >= 3 ? color.Rgb[i % 3] : luma;
        return v;
    }

    /// <summary>Writes the dataset into <paramref name="outDir"/> (which must be empty or absent) and reports
    /// progress after each parquet file.</summary>
    public static SyntheticSummary Write(SyntheticOptions options, string outDir, Action<string>? progress = null)
    {
        options.Validate();
        outDir = Path.GetFullPath(outDir);
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new UserError($"output folder {outDir} is not empty; choose a new folder (or delete this one)");
        Directory.CreateDirectory(Path.Combine(outDir, DataFolder));
        Directory.CreateDirectory(Path.Combine(outDir, "vae"));

        var classes = Classes(options);
        var encoder = new SyntheticTextEncoder(options.EmbedDim, options.Seed);
        var textByClass = classes.Select(c => Text(options, encoder, c.Prompt)).ToList();

        // Clip-major order (clip 0 of every class, then clip 1, ...) so each file holds every class.
        var all = Enumerable.Range(0, options.ClipsPerClass).SelectMany(k => classes.Select(c => (Class: c, Clip: k))).ToList();
        var sum = new double[options.Channels];
        var sumSq = new double[options.Channels];
        long perChannel = 0;
        var files = new List<string>();
        for (int start = 0, part = 0; start < all.Count; start += options.RowsPerFile, part++)
        {
            var chunk = all.Skip(start).Take(options.RowsPerFile);
            var rows = chunk.Select(item =>
            {
                var clip = RenderClip(options, item.Class, item.Clip);
                Accumulate(clip, sum, sumSq, ref perChannel);
                return new VideoRow
                {
                    Latent = TensorBytes.FromFloats(clip.Pixels, clip.Shape),
                    Text = textByClass[item.Class.Index],
                    Id = clip.Id,
                    Caption = item.Class.Prompt,
                    FileName = clip.Id + ".synthetic",
                    MediaType = "video",
                    Width = options.Width,
                    Height = options.Height,
                    NumFrames = options.Frames,
                    DurationSec = options.Frames / options.Fps,
                    Fps = options.Fps,
                };
            });
            var path = Path.Combine(outDir, DataFolder, $"part-{part:D5}.parquet");
            ParquetVideoWriter.Write(path, rows);
            files.Add(path);
            progress?.Invoke($"wrote {Path.GetRelativePath(outDir, path)} ({Math.Min(start + options.RowsPerFile, all.Count)}/{all.Count} clips)");
        }

        var mean = new float[options.Channels];
        var std = new float[options.Channels];
        for (int c = 0; c < options.Channels; c++)
        {
            double m = sum[c] / perChannel;
            double v = Math.Max(0, sumSq[c] / perChannel - m * m);
            mean[c] = (float)m;
            std[c] = v > 1e-12 ? (float)Math.Sqrt(v) : 1f; // a constant channel is left unscaled
        }
        WriteVaeConfig(Path.Combine(outDir, VaeConfigFile), options, mean, std, Overall(sum, sumSq, perChannel));

        // The empty caption in the data's own layout: the loader puts it in place of a caption dropped for CFG.
        var negative = Text(options, encoder, "");
        SafetensorsMini.WriteF32(Path.Combine(outDir, ParquetVideoDataset.NegativePromptEmbedsFile),
            new Dictionary<string, (long[], float[])> { ["negative_prompt_embeds"] = ([1, .. negative.Shape], negative.ToFloatArray()) },
            new Dictionary<string, string> { ["prompt"] = "", ["format"] = "pt" });
        WriteClasses(Path.Combine(outDir, ClassesFile), options, classes, all.Count);
        progress?.Invoke($"wrote {VaeConfigFile}, {ParquetVideoDataset.NegativePromptEmbedsFile}, {ClassesFile}");
        return new SyntheticSummary(outDir, all.Count, files, classes, mean, std);
    }

    /// <summary>A caption's text_embedding in the options' layout.</summary>
    private static TensorBytes Text(SyntheticOptions o, SyntheticTextEncoder encoder, string caption)
    {
        var (values, shape) = encoder.EncodeAs(caption, o.TextLayout, o.PooledDim);
        return TensorBytes.FromFloats(values, shape);
    }

    private static void Accumulate(SyntheticClip clip, double[] sum, double[] sumSq, ref long perChannel)
    {
        int c = (int)clip.Shape[0];
        int plane = clip.Pixels.Length / c;
        for (int ch = 0; ch < c; ch++)
        {
            double s = 0, s2 = 0;
            foreach (var v in clip.Pixels.AsSpan(ch * plane, plane)) { s += v; s2 += (double)v * v; }
            sum[ch] += s;
            sumSq[ch] += s2;
        }
        perChannel += plane;
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static void WriteJson(string path, object value)
    {
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(value, Indented) + "\n");
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>1 / the root mean square of every value: the hunyuan layout's scaling_factor.</summary>
    private static float Overall(double[] sum, double[] sumSq, long perChannel)
    {
        double rms = Math.Sqrt(sumSq.Sum() / (perChannel * (double)sumSq.Length));
        return rms > 1e-12 ? (float)(1 / rms) : 1f;
    }

    // The identity "VAE" has no compression, so pixel size = latent size. Wan layout: Wan-style normalisation,
    // (latent - latents_mean) / latents_std per channel. Hunyuan layout: HunyuanVideo's, latent · scaling_factor.
    private static void WriteVaeConfig(string path, SyntheticOptions o, float[] mean, float[] std, float scaling)
    {
        var config = new Dictionary<string, object>
        {
            ["_class_name"] = Models.Vae.VaeConfig.IdentityClassName,
            ["_comment"] = "FastVideoSharp synthetic moving-shapes dataset: the latent is the clip itself ([C,T,H,W] in [-1, 1]); " + (o.TextLayout == SyntheticTextLayout.Hunyuan
                ? "scaling_factor is 1 / the dataset's root mean square, so latent · scaling_factor has unit scale"
                : "latents_mean/latents_std are the dataset's per-channel statistics, so (latent - mean) / std has unit scale"),
            ["z_dim"] = o.Channels,
            ["latent_channels"] = o.Channels,
        };
        if (o.TextLayout == SyntheticTextLayout.Hunyuan) config["scaling_factor"] = scaling;
        else
        {
            config["latents_mean"] = mean;
            config["latents_std"] = std;
        }
        foreach (var k in new[] { "spatial_compression_ratio", "temporal_compression_ratio", "scale_factor_spatial", "scale_factor_temporal" }) config[k] = 1;
        WriteJson(path, config);
    }

    private static void WriteClasses(string path, SyntheticOptions o, IReadOnlyList<SyntheticClass> classes, int rows) => WriteJson(path, new Dictionary<string, object>
    {
        ["dataset"] = "fastvideo-synthetic-moving-shapes",
        ["shape"] = SyntheticPalette.Word(o.Shape),
        ["value_range"] = new[] { SyntheticPalette.MinValue, SyntheticPalette.MaxValue },
        ["background"] = SyntheticPalette.Background.Rgb,
        ["colors"] = o.PaletteColors.Select(c => new { name = c.Name, rgb = c.Rgb }).ToList(),
        ["directions"] = o.PaletteDirections.Select(d => new { name = d.Name, dx = d.Dx, dy = d.Dy }).ToList(),
        ["captions"] = SyntheticPalette.Word(o.Captions),
        ["classes"] = classes.Select(c => new { index = c.Index, color = c.Color.Name, directions = c.Directions.Select(d => d.Name).ToList(), prompt = c.Prompt }).ToList(),
        ["rows"] = rows,
        ["text_encoder"] = new { kind = "synthetic-word-vectors", embed_dim = o.EmbedDim, seed = o.Seed, text_len = o.TextLen, end_token = SyntheticTextEncoder.EndToken,
            layout = SyntheticPalette.Word(o.TextLayout), pooled_dim = o.TextLayout == SyntheticTextLayout.Hunyuan ? o.PooledDim : (int?)null },
        ["negative_prompt"] = "",
        ["options"] = new
        {
            colors = o.Colors, directions = o.Directions, clips_per_class = o.ClipsPerClass, frames = o.Frames,
            height = o.Height, width = o.Width, channels = o.Channels, shape = SyntheticPalette.Word(o.Shape), shape_size = o.ShapeSize, max_speed = o.MaxSpeed, min_speed = o.MinSpeed, wrap = o.Wrap, grid = o.Grid, start = SyntheticPalette.Word(o.Start), captions = SyntheticPalette.Word(o.Captions), text_len = o.TextLen,
            embed_dim = o.EmbedDim, seed = o.Seed, rows_per_file = o.RowsPerFile, fps = o.Fps, text_layout = SyntheticPalette.Word(o.TextLayout), pooled_dim = o.PooledDim,
        },
    });
}

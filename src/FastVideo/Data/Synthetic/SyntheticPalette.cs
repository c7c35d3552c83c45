namespace FastVideo.Data.Synthetic;

/// <summary>A named object colour, RGB in the synthetic value range [-1, 1].</summary>
public sealed record SyntheticColor(string Name, float R, float G, float B)
{
    public float[] Rgb => [R, G, B];
}

/// <summary>What the moving object looks like.</summary>
public enum SyntheticShape
{
    /// <summary>A filled square: direction is only in the motion across frames.</summary>
    Square,
    /// <summary>A triangle pointing where it moves.</summary>
    Arrow,
}

/// <summary>A named motion direction as a unit step in image coordinates (x right, y down).</summary>
public sealed record SyntheticDirection(string Name, int Dx, int Dy);

/// <summary>How much of the motion a caption names.</summary>
public enum SyntheticCaptions
{
    /// <summary>The direction: "a red square moving left".</summary>
    Exact,
    /// <summary>Only the axis: "a red square moving horizontally" is left or right, each clip drawing one. A model
    /// must pick one of two motions, and a sampler that averages them shows two faint squares that do not move.</summary>
    Axis,
}

/// <summary>What a caption says: its colour, its motion word, and the directions that word allows.</summary>
public sealed record SyntheticCaption(SyntheticColor? Color, string? MotionWord, IReadOnlyList<string> AcceptedDirections);

/// <summary>The fixed vocabulary of the moving-shapes dataset: colours, directions and the background.</summary>
public static class SyntheticPalette
{
    /// <summary>Pixel values live in [-1, 1], the range video VAEs take.</summary>
    public const float MinValue = -1f, MaxValue = 1f;

    /// <summary>Plain dark-grey background: every palette colour is far from it in RGB.</summary>
    public static readonly SyntheticColor Background = new("background", -0.5f, -0.5f, -0.5f);

    /// <summary>Colours in the order the <c>--colors N</c> option takes them.</summary>
    public static readonly IReadOnlyList<SyntheticColor> Colors =
    [
        new("red", 1f, -1f, -1f),
        new("green", -1f, 1f, -1f),
        new("blue", -1f, -1f, 1f),
        new("yellow", 1f, 1f, -1f),
        new("magenta", 1f, -1f, 1f),
        new("cyan", -1f, 1f, 1f),
        new("white", 1f, 1f, 1f),
        new("orange", 1f, 0f, -1f),
    ];

    /// <summary>Directions in the order the <c>--directions N</c> option takes them.</summary>
    public static readonly IReadOnlyList<SyntheticDirection> Directions =
    [
        new("left", -1, 0),
        new("right", 1, 0),
        new("up", 0, -1),
        new("down", 0, 1),
        new("up-left", -1, -1),
        new("up-right", 1, -1),
        new("down-left", -1, 1),
        new("down-right", 1, 1),
    ];

    /// <summary>The caption of a class: "a red square moving left" (or "a red arrow moving left").</summary>
    public static string Prompt(SyntheticColor color, SyntheticDirection direction, SyntheticShape shape = SyntheticShape.Square) =>
        Caption(color, direction.Name, shape);

    /// <summary>A caption with any motion word: a direction ("left") or an axis ("horizontally").</summary>
    public static string Caption(SyntheticColor color, string motion, SyntheticShape shape) =>
        $"a {color.Name} {Word(shape)} moving {motion}";

    /// <summary>A straight direction's axis word for axis captions: horizontally (left, right) or vertically (up,
    /// down); null for a diagonal.</summary>
    public static string? AxisWord(SyntheticDirection d) => d.Dy == 0 ? "horizontally" : d.Dx == 0 ? "vertically" : null;

    /// <summary>An option's word in captions, classes.json and on the command line: the value's name, lower-cased
    /// (square, arrow; random, edge, lane).</summary>
    public static string Word<T>(T value) where T : struct, Enum => value.ToString().ToLowerInvariant();

    /// <summary>The option value whose <see cref="Word{T}"/> is <paramref name="word"/>, or null.</summary>
    public static T? FromWord<T>(string? word) where T : struct, Enum
    {
        foreach (var e in Enum.GetValues<T>())
            if (Word(e) == word) return e;
        return null;
    }

    /// <summary>
    /// Whether pixel (x, y) of the size x size box is part of the shape. A square fills the box. An arrow is a
    /// triangle whose base is at the back and whose apex points along <paramref name="direction"/>: the object faces
    /// where it moves, so each frame shows the direction locally, not only the motion across frames.
    /// </summary>
    public static bool Covers(SyntheticShape shape, SyntheticDirection direction, int size, int x, int y)
    {
        if (shape == SyntheticShape.Square) return true;
        double c = (size - 1) / 2.0, u = x - c, v = y - c;
        double norm = Math.Sqrt(direction.Dx * direction.Dx + direction.Dy * direction.Dy);
        double along = (u * direction.Dx + v * direction.Dy) / norm;      // + towards the apex
        double across = (v * direction.Dx - u * direction.Dy) / norm;
        return Math.Abs(across) <= (c - along) / 2 + 1e-9;
    }

    /// <summary>The shape's mask in its size x size box, row-major (<see cref="Covers"/> at every pixel).</summary>
    public static bool[] Mask(SyntheticShape shape, SyntheticDirection direction, int size)
    {
        var mask = new bool[size * size];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
                mask[y * size + x] = Covers(shape, direction, size, x, y);
        return mask;
    }

    /// <summary>
    /// Reads a caption: its colour, and its motion word with the directions it allows (one for a direction word;
    /// both of the axis for "horizontally" or "vertically"; none when the caption names no motion).
    /// </summary>
    public static SyntheticCaption ParseCaption(string prompt)
    {
        var (color, direction) = ParsePrompt(prompt);
        if (direction is not null) return new SyntheticCaption(color, direction.Name, [direction.Name]);
        var words = Words(prompt);
        var axis = Directions.GroupBy(AxisWord).FirstOrDefault(g => g.Key is not null && words.Contains(g.Key));
        return axis is null
            ? new SyntheticCaption(color, null, [])
            : new SyntheticCaption(color, axis.Key, axis.Select(d => d.Name).ToList());
    }

    /// <summary>Finds the colour and direction words of a prompt (null when absent).</summary>
    public static (SyntheticColor? Color, SyntheticDirection? Direction) ParsePrompt(string prompt)
    {
        var words = Words(prompt);
        var color = Colors.FirstOrDefault(c => words.Contains(c.Name));
        // Longest match first so "up-left" is not read as "up".
        var direction = Directions.OrderByDescending(d => d.Name.Length).FirstOrDefault(d => words.Contains(d.Name));
        return (color, direction);
    }

    private static string[] Words(string prompt) =>
        prompt.ToLowerInvariant().Split([' ', ',', '.', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries);
}

namespace FastVideo.Data.Synthetic;

/// <summary>A named object colour, RGB in the synthetic value range [-1, 1].</summary>
public sealed record SyntheticColor(string Name, float R, float G, float B)
{
    public float[] Rgb => [R, G, B];
}

/// <summary>A named motion direction as a unit step in image coordinates (x right, y down).</summary>
public sealed record SyntheticDirection(string Name, int Dx, int Dy);

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

    public const string ShapeName = "square";

    /// <summary>The caption of a class: "a red square moving left".</summary>
    public static string Prompt(SyntheticColor color, SyntheticDirection direction) =>
        $"a {color.Name} {ShapeName} moving {direction.Name}";

    /// <summary>Finds the colour and direction words of a prompt (null when absent).</summary>
    public static (SyntheticColor? Color, SyntheticDirection? Direction) ParsePrompt(string prompt)
    {
        var words = prompt.ToLowerInvariant().Split([' ', ',', '.', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries);
        var color = Colors.FirstOrDefault(c => words.Contains(c.Name));
        // Longest match first so "up-left" is not read as "up".
        var direction = Directions.OrderByDescending(d => d.Name.Length).FirstOrDefault(d => words.Contains(d.Name));
        return (color, direction);
    }
}

using System.Globalization;
using FastVideo.Data;
using FastVideo.Data.Synthetic;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo dataset synth|inspect</c>.</summary>
public static class DatasetCommand
{
    public const string Usage =
        """
        usage:
          fastvideo dataset synth --out DIR [--colors N] [--directions N] [--clips-per-class N] [--frames F]
                                  [--height H] [--width W] [--channels C] [--shape square|arrow] [--shape-size S] [--max-speed V] [--start random|edge|lane] [--captions exact|axis] [--text-len L]
                                  [--embed-dim D] [--seed S] [--rows-per-file N] [--fps F]
              writes the synthetic moving-shapes dataset (coloured squares moving over a plain background;
              classes = colour x direction) in FastVideo's parquet layout, with vae/config.json,
              negative_prompt_embeds.safetensors and classes.json
          fastvideo dataset inspect DIR
              describes a FastVideo parquet dataset and checks every row (exit code 1 if any is bad)
        """;

    /// <summary>Runs the command; returns the exit code. Usage mistakes throw <see cref="UserError"/>.</summary>
    public static int Run(string[] args, TextWriter stdout)
    {
        if (args.Length == 0) throw new UserError($"dataset: missing command\n{Usage}");
        if (args[0] is "-h" or "--help" or "help")
        {
            stdout.WriteLine(Usage);
            return 0;
        }
        return args[0] switch
        {
            "synth" => Synth(args[1..], stdout),
            "inspect" => Inspect(args[1..], stdout),
            _ => throw new UserError($"unknown dataset command '{args[0]}' (expected synth or inspect)\n{Usage}"),
        };
    }

    private static int Synth(string[] args, TextWriter stdout)
    {
        var flags = ParseFlags(args, "synth");
        string? outDir = null;
        var o = new SyntheticOptions();
        foreach (var (flag, value) in flags)
        {
            switch (flag)
            {
                case "--out": outDir = value; break;
                case "--colors": o = o with { Colors = Int(flag, value) }; break;
                case "--directions": o = o with { Directions = Int(flag, value) }; break;
                case "--clips-per-class": o = o with { ClipsPerClass = Int(flag, value) }; break;
                case "--frames": o = o with { Frames = Int(flag, value) }; break;
                case "--height": o = o with { Height = Int(flag, value) }; break;
                case "--width": o = o with { Width = Int(flag, value) }; break;
                case "--channels": o = o with { Channels = Int(flag, value) }; break;
                case "--shape-size": o = o with { ShapeSize = Int(flag, value) }; break;
                case "--start": o = o with { Start = Choice<SyntheticStart>(flag, value) }; break;
                case "--captions": o = o with { Captions = Choice<SyntheticCaptions>(flag, value) }; break;
                case "--max-speed": o = o with { MaxSpeed = Int(flag, value) }; break;
                case "--shape": o = o with { Shape = Choice<SyntheticShape>(flag, value) }; break;
                case "--text-len": o = o with { TextLen = Int(flag, value) }; break;
                case "--embed-dim": o = o with { EmbedDim = Int(flag, value) }; break;
                case "--seed": o = o with { Seed = Long(flag, value) }; break;
                case "--rows-per-file": o = o with { RowsPerFile = Int(flag, value) }; break;
                case "--fps": o = o with { Fps = Double(flag, value) }; break;
                default: throw new UserError($"dataset synth: unknown option {flag}\n{Usage}");
            }
        }
        if (outDir is null) throw new UserError($"dataset synth: --out DIR is required\n{Usage}");

        var classes = SyntheticVideoDataset.Classes(o).Count;
        stdout.WriteLine($"writing {classes} classes x {o.ClipsPerClass} clips of [{o.Channels}, {o.Frames}, {o.Height}, {o.Width}] to {Path.GetFullPath(outDir)}");
        var summary = SyntheticVideoDataset.Write(o, outDir, line => stdout.WriteLine("  " + line));
        stdout.WriteLine($"done: {summary.Rows} clips in {summary.Files.Count} parquet files; text_len {o.TextLen}, embed_dim {o.EmbedDim}");
        stdout.WriteLine($"latents_mean [{string.Join(", ", summary.LatentsMean.Select(F))}], latents_std [{string.Join(", ", summary.LatentsStd.Select(F))}]");
        return 0;
    }

    private static int Inspect(string[] args, TextWriter stdout)
    {
        if (args.Length != 1 || args[0].StartsWith("--", StringComparison.Ordinal))
            throw new UserError($"dataset inspect takes one folder (or .parquet file)\n{Usage}");
        var result = DatasetInspector.Inspect(args[0], stdout);
        return result.Ok ? 0 : 1;
    }

    private static List<(string Flag, string Value)> ParseFlags(string[] args, string command)
    {
        var result = new List<(string, string)>();
        for (int i = 0; i < args.Length; i++)
        {
            var a = args[i];
            if (!a.StartsWith("--", StringComparison.Ordinal))
                throw new UserError($"dataset {command}: unexpected argument '{a}'\n{Usage}");
            int eq = a.IndexOf('=');
            if (eq > 0) { result.Add((a[..eq], a[(eq + 1)..])); continue; }
            if (i + 1 >= args.Length) throw new UserError($"dataset {command}: {a} needs a value");
            result.Add((a, args[++i]));
        }
        return result;
    }

    private static int Int(string flag, string v) =>
        int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n
            : throw new UserError($"{flag} expects an integer, got '{v}'");

    private static long Long(string flag, string v) =>
        long.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n
            : throw new UserError($"{flag} expects an integer, got '{v}'");

    private static double Double(string flag, string v) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var n) ? n
            : throw new UserError($"{flag} expects a number, got '{v}'");

    /// <summary>One of an enum's values by its lower-case name (the spelling classes.json uses).</summary>
    internal static T Choice<T>(string flag, string v) where T : struct, Enum =>
        SyntheticPalette.FromWord<T>(v) ??
        throw new UserError($"{flag} expects one of {string.Join(", ", Enum.GetValues<T>().Select(e => SyntheticPalette.Word(e)))}, got '{v}'");

    private static string F(float v) => v.ToString("0.####", CultureInfo.InvariantCulture);
}

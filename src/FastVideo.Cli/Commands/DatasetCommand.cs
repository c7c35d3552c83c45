using System.CommandLine;
using System.Globalization;
using FastVideo.Data;
using FastVideo.Data.Synthetic;

namespace FastVideo.Cli.Commands;

/// <summary><c>fastvideo dataset synth|inspect</c>.</summary>
public static class DatasetCommand
{
    internal static Command Create() =>
        new("dataset", "Write the synthetic moving-shapes dataset, or check a FastVideo parquet dataset.") { CreateSynth(), CreateInspect() };

    private static Command CreateSynth()
    {
        var d = new SyntheticOptions();
        var output = CliOptions.Text("--out", "DIR", "the dataset folder to write").AsRequired();
        var colors = CliOptions.Int("--colors", "palette colours (at most 8)").WithDefault(d.Colors);
        var directions = CliOptions.Int("--directions", "directions: left, right, up, down, then the diagonals (at most 8)").WithDefault(d.Directions);
        var clips = CliOptions.Int("--clips-per-class", "clips of each class").WithDefault(d.ClipsPerClass);
        var frames = CliOptions.Int("--frames", "frames per clip", "F").WithDefault(d.Frames);
        var height = CliOptions.Int("--height", "frame height in pixels", "H").WithDefault(d.Height);
        var width = CliOptions.Int("--width", "frame width in pixels", "W").WithDefault(d.Width);
        var channels = CliOptions.Int("--channels", "3 = RGB; more repeat R, G, B (16 mimics Wan's latents); 1 or 2 carry the luminance", "C").WithDefault(d.Channels);
        var shape = CliOptions.Choice<SyntheticShape>("--shape", $"the moving shape [default: {SyntheticPalette.Word(d.Shape)}]");
        var shapeSize = CliOptions.Int("--shape-size", "side of the shape's box in pixels", "S").WithDefault(d.ShapeSize);
        var maxSpeed = CliOptions.Int("--max-speed", "caps the speed in pixels per frame (0 = as fast as the frame allows)", "V").WithDefault(d.MaxSpeed);
        var minSpeed = CliOptions.Int("--min-speed", "the slowest speed in pixels per frame (0 = half the top speed; = --max-speed fixes it)", "V").WithDefault(d.MinSpeed);
        var wrap = CliOptions.Flag("--wrap", "the frame is a torus: a shape leaving one edge re-enters at the opposite one (motion can go on past the clip; --max-speed then sets the speed)");
        var grid = CliOptions.Int("--grid", "with --start line on a torus, starts snap to multiples of G pixels (the patch size makes every frame whole tokens)", "G").WithDefault(d.Grid);
        var start = CliOptions.Choice<SyntheticStart>("--start",
            $"where a clip starts: anywhere its path fits, at the edge it moves away from (centred), anywhere along that edge (lane), or anywhere on the centre line of its motion (line) [default: {SyntheticPalette.Word(d.Start)}]");
        var captions = CliOptions.Choice<SyntheticCaptions>("--captions",
            $"whether captions name the direction (exact) or only its axis [default: {SyntheticPalette.Word(d.Captions)}]");
        var textLen = CliOptions.Int("--text-len", "text_len of the caption embeddings (every caption must fit)", "L").WithDefault(d.TextLen);
        var embedDim = CliOptions.Int("--embed-dim", "width of the caption embeddings", "D").WithDefault(d.EmbedDim);
        var textLayout = CliOptions.Choice<SyntheticTextLayout>("--text-layout",
            $"how text_embedding holds a caption: wan (tokens) or hunyuan (a pooled vector zero-padded to D, then the tokens; the VAE config then scales by scaling_factor) [default: {SyntheticPalette.Word(d.TextLayout)}]");
        var pooledDim = CliOptions.OptionalInt("--pooled-dim", $"with --text-layout hunyuan: width of the pooled caption vector (at most --embed-dim; default {d.PooledDim})", "P");
        var seed = CliOptions.Long("--seed", "random seed", "S").WithDefault(d.Seed);
        var rowsPerFile = CliOptions.Int("--rows-per-file", "rows per parquet file").WithDefault(d.RowsPerFile);
        var fps = CliOptions.Double("--fps", "frames per second recorded with each clip", "F").WithDefault(d.Fps);
        var command = new Command("synth",
            "Write the synthetic moving-shapes dataset (shapes moving over a plain background; classes = colour x direction) "
            + "in FastVideo's parquet layout, with vae/config.json, negative_prompt_embeds.safetensors and classes.json.")
        {
            output, colors, directions, clips, frames, height, width, channels, shape, shapeSize, maxSpeed, minSpeed, wrap, grid, start, captions,
            textLen, embedDim, textLayout, pooledDim, seed, rowsPerFile, fps,
        };
        command.SetAction(r => Synth(r.GetRequiredValue(output), (r.GetValue(pooledDim), r.GetValue(textLayout)) is (not null, not SyntheticTextLayout.Hunyuan)
            ? throw new UserError("--pooled-dim needs --text-layout hunyuan (the wan layout has no pooled vector)")
            : new SyntheticOptions
        {
            Colors = r.GetValue(colors), Directions = r.GetValue(directions), ClipsPerClass = r.GetValue(clips),
            Frames = r.GetValue(frames), Height = r.GetValue(height), Width = r.GetValue(width), Channels = r.GetValue(channels),
            Shape = r.GetValue(shape) ?? d.Shape, ShapeSize = r.GetValue(shapeSize), MaxSpeed = r.GetValue(maxSpeed), MinSpeed = r.GetValue(minSpeed), Wrap = r.GetValue(wrap), Grid = r.GetValue(grid),
            Start = r.GetValue(start) ?? d.Start, Captions = r.GetValue(captions) ?? d.Captions,
            TextLen = r.GetValue(textLen), EmbedDim = r.GetValue(embedDim), Seed = r.GetValue(seed),
            TextLayout = r.GetValue(textLayout) ?? d.TextLayout, PooledDim = r.GetValue(pooledDim) ?? d.PooledDim,
            RowsPerFile = r.GetValue(rowsPerFile), Fps = r.GetValue(fps),
        }, r.InvocationConfiguration.Output));
        return command;
    }

    private static Command CreateInspect()
    {
        var path = CliOptions.Positional("DIR", "a dataset folder or one .parquet file");
        var command = new Command("inspect", "Describe a FastVideo parquet dataset and check every row (exit code 1 if any is bad).") { path };
        command.SetAction(r => Inspect(r.GetRequiredValue(path), r.InvocationConfiguration.Output));
        return command;
    }

    /// <summary>Writes the synthetic dataset <paramref name="o"/> to <paramref name="outDir"/>; returns the exit code.</summary>
    public static int Synth(string outDir, SyntheticOptions o, TextWriter stdout)
    {
        var classes = SyntheticVideoDataset.Classes(o).Count;
        stdout.WriteLine($"writing {classes} classes x {o.ClipsPerClass} clips of [{o.Channels}, {o.Frames}, {o.Height}, {o.Width}] to {Path.GetFullPath(outDir)}");
        var summary = SyntheticVideoDataset.Write(o, outDir, line => stdout.WriteLine("  " + line));
        stdout.WriteLine($"done: {summary.Rows} clips in {summary.Files.Count} parquet files; text_len {o.TextLen}, embed_dim {o.EmbedDim}");
        if (o.TextLayout == SyntheticTextLayout.Hunyuan)
            stdout.WriteLine($"text layout hunyuan: [pooled vector ({o.PooledDim}) zero-padded to {o.EmbedDim} ; tokens]; the VAE config scales latents by scaling_factor");
        else
            stdout.WriteLine($"latents_mean [{string.Join(", ", summary.LatentsMean.Select(F))}], latents_std [{string.Join(", ", summary.LatentsStd.Select(F))}]");
        return 0;
    }

    /// <summary>Describes and checks the dataset at <paramref name="path"/>; the exit code is 1 if any file or row is bad.</summary>
    public static int Inspect(string path, TextWriter stdout)
    {
        var result = DatasetInspector.Inspect(path, stdout);
        return result.Ok ? 0 : 1;
    }

    private static string F(float v) => v.ToString("0.####", CultureInfo.InvariantCulture);
}

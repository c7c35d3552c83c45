using FastVideo.Data;
using Xunit;

namespace FastVideo.Tests.Data;

public class DatasetCommandTests
{
    [Fact]
    public void Synth_ThenInspect_DescribesAValidDataset()
    {
        using var dir = new TempDir();
        var outDir = dir.Combine("shapes");
        var log = new StringWriter();
        int code = Cli.Cli.Run(["dataset", "synth", "--out", outDir, "--colors", "4", "--directions", "4", "--clips-per-class", "2",
            "--frames", "5", "--height", "12", "--width", "16", "--shape-size", "3", "--text-len", "8", "--embed-dim", "6",
            "--seed", "3", "--rows-per-file=20"], log, TextWriter.Null);
        Assert.Equal(0, code);
        Assert.Contains("done: 32 clips in 2 parquet files", log.ToString());
        Assert.Contains("wrote data/part-00001.parquet (32/32 clips)", log.ToString());

        var report = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["dataset", "inspect", outDir], report, TextWriter.Null));
        var text = report.ToString();
        Assert.Contains("files: 2", text);
        Assert.Contains("rows: 32", text);
        Assert.Contains("vae_latent_bytes: binary", text);
        Assert.Contains("vae_latent_shape: list<int64>", text);
        Assert.Contains("vae_latent shapes [C, T, H, W]: [3, 5, 12, 16] x32; dtypes: float32 x32", text);
        Assert.Contains("D 6", text);
        Assert.Contains("\"a red square moving left\"", text);
        Assert.Contains("negative_prompt_embeds.safetensors: present", text);
        Assert.Contains("checked 32 rows: all valid", text);
    }

    [Fact]
    public void Inspect_ReportsEveryBadRowAndUnreadableFile_WithExitCode1()
    {
        using var dir = new TempDir();
        // Two rows whose bytes disagree with their shapes, in a file that is otherwise fine.
        var rows = Enumerable.Range(0, 5).Select(i => DataTestUtil.MakeRow(i)).ToList();
        rows[1] = new VideoRow { Latent = rows[1].Latent with { Shape = [2, 2, 3, 4] }, Text = rows[1].Text, Id = "short1" };
        rows[3] = new VideoRow { Latent = rows[3].Latent, Text = rows[3].Text with { Shape = [9, 4] }, Id = "short3" };
        var path = dir.Combine("bad.parquet");
        WriteUnchecked(path, rows);
        File.WriteAllText(dir.Combine("junk.parquet"), "this is not parquet");

        var report = new StringWriter();
        Assert.Equal(1, Cli.Cli.Run(["dataset", "inspect", dir.Path], report, TextWriter.Null));
        var text = report.ToString();
        Assert.Contains("PROBLEMS: 1 unreadable files, 2 bad rows", text);
        Assert.Contains($"{path}: row 1 (id 'short1'): vae_latent_bytes holds 144 bytes but shape [2, 2, 3, 4]", text);
        Assert.Contains($"{path}: row 3 (id 'short3'): text_embedding_bytes holds 48 bytes but shape [9, 4]", text);
        Assert.Contains(dir.Combine("junk.parquet") + ": not a readable parquet file", text);
    }

    [Fact]
    public void Synth_TakesShapeStartAndMaxSpeed_AndRecordsThem()
    {
        using var dir = new TempDir();
        var outDir = dir.Combine("arrows");
        Assert.Equal(0, Cli.Cli.Run(["dataset", "synth", "--out", outDir, "--colors", "1", "--directions", "2", "--clips-per-class", "1",
            "--frames", "3", "--height", "8", "--width", "8", "--shape-size", "3", "--text-len", "8", "--embed-dim", "4",
            "--shape", "arrow", "--start", "edge", "--max-speed", "1"], new StringWriter(), TextWriter.Null));
        var classes = File.ReadAllText(Path.Combine(outDir, "classes.json"));
        Assert.Contains("\"prompt\": \"a red arrow moving left\"", classes);
        Assert.Contains("\"start\": \"edge\"", classes);
        Assert.Contains("\"max_speed\": 1", classes);
    }

    [Theory]
    [InlineData(new string[0], "error: Required command was not provided.")]
    [InlineData(new[] { "frobnicate" }, "error: Unrecognized command or argument 'frobnicate'.")]
    [InlineData(new[] { "synth" }, "error: Option '--out' is required.")]
    [InlineData(new[] { "synth", "--out" }, "error: Required argument missing for option: '--out'.")]
    [InlineData(new[] { "synth", "--out", "x", "--frames", "many" }, "error: --frames expects an integer, got 'many'")]
    [InlineData(new[] { "synth", "--out", "x", "--colour", "3" }, "error: Unrecognized command or argument '--colour'.")]
    [InlineData(new[] { "synth", "--out", "x", "--shape", "circle" }, "error: --shape expects one of square, arrow, got 'circle'")]
    [InlineData(new[] { "synth", "--out", "x", "--start", "1" }, "error: --start expects one of random, edge, lane, line, got '1'")]
    [InlineData(new[] { "inspect" }, "error: Required argument 'DIR' missing for command: 'inspect'.")]
    [InlineData(new[] { "inspect", "/nonexistent/dataset/folder" }, "error: data_path '/nonexistent/dataset/folder' does not exist")]
    public void UsageMistakes_AreBadInput(string[] args, string message)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["dataset", .. args], stdout, stderr));
        Assert.Contains(message + "\n", stderr.ToString());
        Assert.Equal("", stdout.ToString());
    }

    // Our writer refuses inconsistent rows, so bad rows are written with Parquet.Net directly via the write schema.
    private static void WriteUnchecked(string path, List<VideoRow> rows)
    {
        var schema = FastVideo.Data.ParquetSchema.CreateWriteSchema();
        Task.Run(async () =>
        {
            await using var fs = File.Create(path);
            await using var w = await Parquet.ParquetWriter.CreateAsync(schema, fs);
            using var rg = w.CreateRowGroup();
            foreach (var f in schema.Fields)
            {
                switch (f.Name)
                {
                    case "vae_latent_bytes": await rg.WriteAsync((Parquet.Schema.DataField)f, rows.Select(r => r.Latent.Bytes.ToArray()).ToList()); break;
                    case "text_embedding_bytes": await rg.WriteAsync((Parquet.Schema.DataField)f, rows.Select(r => r.Text.Bytes.ToArray()).ToList()); break;
                    case "vae_latent_shape": await Shapes(rg, f, rows.Select(r => r.Latent.Shape)); break;
                    case "text_embedding_shape": await Shapes(rg, f, rows.Select(r => r.Text.Shape)); break;
                    case "vae_latent_dtype" or "text_embedding_dtype": await rg.WriteAsync((Parquet.Schema.DataField)f, rows.Select(_ => "float32").ToList()); break;
                    case "id": await rg.WriteAsync((Parquet.Schema.DataField)f, rows.Select(r => r.Id).ToList()); break;
                    case "width" or "height" or "num_frames": await rg.WriteAsync<long>((Parquet.Schema.DataField)f, new long?[rows.Count].AsMemory()); break;
                    case "duration_sec" or "fps": await rg.WriteAsync<double>((Parquet.Schema.DataField)f, new double?[rows.Count].AsMemory()); break;
                    default: await rg.WriteAsync((Parquet.Schema.DataField)f, rows.Select(r => r.Caption).ToList()); break;
                }
            }
        }).GetAwaiter().GetResult();
    }

    private static Task Shapes(Parquet.ParquetRowGroupWriter rg, Parquet.Schema.Field f, IEnumerable<long[]> shapes)
    {
        var leaf = (Parquet.Schema.DataField)((Parquet.Schema.ListField)f).Item;
        var vals = shapes.SelectMany(s => s).ToArray();
        var reps = shapes.SelectMany(s => s.Select((_, i) => i == 0 ? 0 : 1)).ToArray();
        return rg.WriteAllPartsAsync<long>(leaf, vals, Enumerable.Repeat(leaf.MaxDefinitionLevel, vals.Length).ToArray(), reps, CancellationToken.None);
    }

    [Fact]
    public void Inspect_FailsOnADatasetWithNoRows()
    {
        using var dir = new TempDir();
        var data = dir.Combine("empty");
        Directory.CreateDirectory(data);
        ParquetVideoWriter.Write(Path.Combine(data, "part-00000.parquet"), []);
        var report = new StringWriter();
        var result = DatasetInspector.Inspect(data, report);
        Assert.Equal(0, result.Rows);
        Assert.False(result.Ok);
        Assert.Contains("PROBLEMS: no rows", report.ToString());
        Assert.Contains("the dataset has no rows: training needs at least one", report.ToString());
        Assert.NotEqual(0, Cli.Cli.Run(["dataset", "inspect", data], new StringWriter(), TextWriter.Null));
    }
}

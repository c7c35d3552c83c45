using FastVideo.Data;

namespace FastVideo.Tests.Data;

/// <summary>A temporary folder deleted after the test.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("fastvideo-data-test-").FullName;
    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

internal static class DataTestUtil
{
    /// <summary>tests/fixtures/parquet in the source tree (found by walking up from the test binaries).</summary>
    public static string FixtureDir
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null)
            {
                var candidate = System.IO.Path.Combine(dir.FullName, "tests", "fixtures", "parquet");
                if (Directory.Exists(candidate)) return candidate;
                dir = dir.Parent;
            }
            throw new DirectoryNotFoundException("tests/fixtures/parquet not found above " + AppContext.BaseDirectory);
        }
    }

    /// <summary>A small in-memory row: latent [C,T,H,W] and text [L,D] filled with values derived from
    /// <paramref name="salt"/>, so each row is distinguishable.</summary>
    public static VideoRow MakeRow(int salt, long[]? latentShape = null, long textRows = 3, long dim = 4,
        TensorDType dtype = TensorDType.Float32, string? caption = null)
    {
        latentShape ??= [2, 2, 3, 3];
        var lat = new float[TensorBytes.ShapeProduct(latentShape)];
        for (int i = 0; i < lat.Length; i++) lat[i] = salt * 1000 + i;
        var txt = new float[textRows * dim];
        for (int i = 0; i < txt.Length; i++) txt[i] = -(salt * 1000 + i) - 1;
        if (dtype != TensorDType.Float32)
        {
            // keep values exact in 16-bit types
            for (int i = 0; i < lat.Length; i++) lat[i] = (salt % 8) + i % 16 / 4f;
            for (int i = 0; i < txt.Length; i++) txt[i] = -(salt % 8) - i % 16 / 4f;
        }
        return new VideoRow
        {
            Latent = TensorBytes.FromFloats(lat, latentShape, dtype),
            Text = TensorBytes.FromFloats(txt, [textRows, dim], dtype),
            Id = $"row{salt}",
            Caption = caption ?? $"caption {salt}",
            FileName = $"row{salt}.mp4",
            Width = 64, Height = 48, NumFrames = latentShape[1], DurationSec = 1.0, Fps = 16,
        };
    }

    /// <summary>Writes <paramref name="count"/> rows (salts start..start+count-1) to one parquet file.</summary>
    public static string WriteRows(string path, int start, int count, int rowsPerGroup = 3, long[]? latentShape = null)
    {
        ParquetVideoWriter.Write(path, Enumerable.Range(start, count).Select(i => MakeRow(i, latentShape, textRows: 1 + i % 5)),
            new ParquetWriteOptions { RowsPerRowGroup = rowsPerGroup });
        return path;
    }
}

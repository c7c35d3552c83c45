namespace FastVideo.Data;

/// <summary>What <see cref="DatasetInspector.Inspect"/> found.</summary>
public sealed record InspectionResult(int Files, int UnreadableFiles, long Rows, long BadRows, IReadOnlyList<string> Problems)
{
    /// <summary>Every file readable, every row valid, and at least one row (training refuses an empty dataset).</summary>
    public bool Ok => UnreadableFiles == 0 && BadRows == 0 && Rows > 0;
}

/// <summary>
/// Checks a FastVideo parquet dataset row by row and describes it: files, rows, columns, tensor shapes and dtypes,
/// a few captions, and every bad row (file, row, reason). Unlike training, it does not stop at the first problem.
/// </summary>
public static class DatasetInspector
{
    public static InspectionResult Inspect(string path, TextWriter output, int captions = 3, int maxListed = 50)
    {
        var files = ParquetVideoDataset.FindParquetFiles(path);
        var root = Path.GetFullPath(path);
        string Rel(string p) => File.Exists(root) ? Path.GetFileName(p) : Path.GetRelativePath(root, p);

        output.WriteLine($"dataset {root}");
        output.WriteLine($"files: {files.Count}");
        var problems = new List<string>();
        int unreadable = 0;
        long rows = 0, bad = 0;
        var latentShapes = new SortedDictionary<string, long>(StringComparer.Ordinal);
        var latentDtypes = new SortedDictionary<string, long>(StringComparer.Ordinal);
        var textDtypes = new SortedDictionary<string, long>(StringComparer.Ordinal);
        var textDims = new SortedSet<long>();
        long minL = long.MaxValue, maxL = -1;
        var sampleCaptions = new List<string>();
        IReadOnlyList<(string Name, string Type)>? firstColumns = null;
        var missingOptional = new SortedSet<string>(StringComparer.Ordinal);

        for (int k = 0; k < files.Count; k++)
        {
            ParquetVideoFile file;
            try
            {
                file = ParquetVideoFile.Open(files[k]);
            }
            catch (UserError e)
            {
                unreadable++;
                problems.Add(e.Message);
                output.WriteLine($"  [{k + 1}/{files.Count}] {Rel(files[k])}: UNREADABLE");
                continue;
            }
            using (file)
            {
                if (firstColumns is null) firstColumns = file.Columns;
                else if (!file.Columns.SequenceEqual(firstColumns))
                    output.WriteLine($"  note: {Rel(file.Path)} has other columns than the first file: {Format(file.Columns)}");
                foreach (var m in file.MissingOptionalColumns) missingOptional.Add(m);

                long fileBad = 0;
                for (int g = 0; g < file.RowGroupRowCounts.Count; g++)
                {
                    RowGroupData data;
                    try
                    {
                        data = file.ReadRowGroupAsync(g).GetAwaiter().GetResult();
                    }
                    catch (UserError e)
                    {
                        fileBad += file.RowGroupRowCounts[g];
                        problems.Add(e.Message);
                        continue;
                    }
                    using (data)
                    {
                        for (int r = 0; r < data.RowCount; r++)
                        {
                            if (!data.TryGetRow(r, out var row, out var error))
                            {
                                fileBad++;
                                problems.Add(error);
                                continue;
                            }
                            Count(latentShapes, TensorBytes.Format(row.Latent.Shape));
                            Count(latentDtypes, row.Latent.DType.Name());
                            Count(textDtypes, row.Text.DType.Name());
                            textDims.Add(row.Text.Shape[1]);
                            minL = Math.Min(minL, row.Text.Shape[0]);
                            maxL = Math.Max(maxL, row.Text.Shape[0]);
                            if (sampleCaptions.Count < captions) sampleCaptions.Add(row.Caption);
                        }
                    }
                }
                rows += file.RowCount;
                bad += fileBad;
                output.WriteLine($"  [{k + 1}/{files.Count}] {Rel(file.Path)}: {file.RowCount} rows in {file.RowGroupRowCounts.Count} row groups" +
                                 (fileBad > 0 ? $", {fileBad} BAD" : ""));
            }
        }

        output.WriteLine($"rows: {rows}");
        if (firstColumns is not null) output.WriteLine($"columns: {Format(firstColumns)}");
        if (missingOptional.Count > 0) output.WriteLine($"missing optional columns: {string.Join(", ", missingOptional)}");
        if (latentShapes.Count > 0)
        {
            output.WriteLine($"vae_latent shapes [C, T, H, W]: {Format(latentShapes)}; dtypes: {Format(latentDtypes)}");
            if (latentShapes.Count > 1)
                output.WriteLine("  note: latent shapes differ between rows: batches of more than one row need equal shapes");
            output.WriteLine($"text_embedding [L, D]: L {minL}..{maxL}, D {string.Join("/", textDims)}; dtypes: {Format(textDtypes)}");
        }
        if (sampleCaptions.Count > 0)
        {
            output.WriteLine("captions:");
            foreach (var c in sampleCaptions) output.WriteLine($"  \"{c}\"");
        }
        var dir = File.Exists(root) ? Path.GetDirectoryName(root)! : root;
        if (File.Exists(Path.Combine(dir, ParquetVideoDataset.NegativePromptEmbedsFile)))
            output.WriteLine($"{ParquetVideoDataset.NegativePromptEmbedsFile}: present");

        if (rows == 0 && unreadable == 0)
            problems.Add("the dataset has no rows: training needs at least one");
        if (problems.Count == 0)
        {
            output.WriteLine($"checked {rows} rows: all valid");
        }
        else
        {
            output.WriteLine(rows == 0 && unreadable == 0 ? "PROBLEMS: no rows" : $"PROBLEMS: {unreadable} unreadable files, {bad} bad rows");
            foreach (var p in problems.Take(maxListed)) output.WriteLine($"  {p}");
            if (problems.Count > maxListed) output.WriteLine($"  ... and {problems.Count - maxListed} more");
        }
        return new InspectionResult(files.Count, unreadable, rows, bad, problems);
    }

    private static void Count(IDictionary<string, long> d, string key) => d[key] = d.TryGetValue(key, out var n) ? n + 1 : 1;
    private static string Format(IDictionary<string, long> d) => string.Join(", ", d.Select(kv => $"{kv.Key} x{kv.Value}"));
    private static string Format(IReadOnlyList<(string Name, string Type)> cols) => string.Join(", ", cols.Select(c => $"{c.Name}: {c.Type}"));
}

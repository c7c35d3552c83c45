using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Data;
using FastVideo.Train.Quickstart;

namespace FastVideo.Reports;

/// <summary>
/// report.html for the quickstart: loss curves drawn as inline SVG, a grid of GIFs (one row per prompt, one column
/// per generator, same seed) and the evaluator's table.
/// </summary>
public static class QuickstartReport
{
    /// <param name="curves">(run folder, metric) pairs: one chart each, from the run's metrics.jsonl (a zero
    /// generator_loss is a critic-only step and left out).</param>
    /// <param name="title">The page's heading.</param>
    /// <param name="extraHtml">A section appended after the sample grid (the causal scenario's long clip).</param>
    public static void Write(string root, JsonObject summary, IReadOnlyList<GeneratorResult> results,
        IReadOnlyList<(string Run, string Metric)> curves, string title = "DMD2 distillation on synthetic moving shapes", string? extraHtml = null)
    {
        var media = Path.Combine(root, "media");
        Directory.CreateDirectory(media);
        var html = new StringBuilder();
        html.Append("<!doctype html><html><head><meta charset='utf-8'><title>FastVideoSharp quickstart</title><style>")
            .Append("body{font-family:sans-serif;margin:2em;color:#222} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:4px 8px;text-align:center}")
            .Append("img{image-rendering:pixelated} .curves{display:flex;flex-wrap:wrap;gap:16px}</style></head><body>")
            .Append(CultureInfo.InvariantCulture, $"<h1>FastVideoSharp quickstart: {Esc(title)}</h1>");
        html.Append(CultureInfo.InvariantCulture, $"<p>Wall time {summary["wall_seconds"]} s. Every generator starts from the same noise for the same prompts and seeds; ")
            .Append("accuracy = the evaluator finds the prompt's colour and direction, and one object of the shape's size in every frame (not two ghosts or a smear); ")
            .Append("sharpness is high for crisp clips and low for blurry averages.</p>");

        html.Append("<h2>Evaluation</h2><table><tr><th>generator</th><th>steps</th><th>accuracy</th><th>colour</th><th>direction</th><th>one object</th><th>sharpness</th></tr>");
        foreach (var r in results)
            html.Append(CultureInfo.InvariantCulture,
                $"<tr><td>{Esc(r.Description)}</td><td>{r.Steps}</td><td>{r.Accuracy:P1}</td><td>{r.ColorAccuracy:P0}</td><td>{r.DirectionAccuracy:P0}</td><td>{(r.ObjectAccuracy is { } oa ? oa.ToString("P0", CultureInfo.InvariantCulture) : "-")}</td><td>{r.Sharpness:F3}</td></tr>");
        html.Append("</table>");

        html.Append("<h2>Loss curves</h2><div class='curves'>");
        foreach (var (run, key) in curves)
        {
            var series = ReadMetric(Path.Combine(run, "metrics.jsonl"), key, skipZeros: key == "generator_loss");
            if (series.Count > 0) html.Append(Svg($"{Path.GetFileName(run)}: {key}", series));
        }
        html.Append("</div>");

        html.Append("<h2>Samples</h2><table><tr><th>prompt</th>");
        foreach (var r in results) html.Append(CultureInfo.InvariantCulture, $"<th>{Esc(r.Description)}</th>");
        html.Append("</tr>");
        int seeds = results[0].Prompts.Count / results[0].Prompts.Distinct().Count();
        var prompts = results[0].Prompts.Distinct().ToList();
        for (int p = 0; p < prompts.Count; p++)
        {
            html.Append(CultureInfo.InvariantCulture, $"<tr><td>{Esc(prompts[p])}</td>");
            foreach (var r in results)
            {
                var name = $"{r.Name}_{p:D2}.gif";
                GifWriter.Write(Path.Combine(media, name), r.Clips[p * seeds], fps: 4, scale: 6);
                html.Append(CultureInfo.InvariantCulture, $"<td><img src='media/{name}' alt='{Esc(r.Name)}'></td>");
            }
            html.Append("</tr>");
        }
        html.Append("</table>").Append(extraHtml).Append("</body></html>\n");
        IO.Durable.WriteAllText(Path.Combine(root, "report.html"), html.ToString());
    }

    private static List<(int Step, double Value)> ReadMetric(string path, string key, bool skipZeros)
    {
        var list = new List<(int, double)>();
        if (!File.Exists(path)) return list;
        foreach (var line in File.ReadLines(path))
        {
            if (JsonNode.Parse(line) is not JsonObject o || o[key] is null) continue;
            double v = (double)o[key]!;
            if (skipZeros && v == 0) continue;
            list.Add(((int)o["step"]!, v));
        }
        return list;
    }

    /// <summary>A line chart of raw values (light) and a moving average (dark) as inline SVG.</summary>
    public static string Svg(string title, IReadOnlyList<(int Step, double Value)> series, int width = 420, int height = 240)
    {
        const int left = 50, right = 10, top = 24, bottom = 30;
        var vals = series.Select(s => s.Value).Where(double.IsFinite).ToList();
        double lo = vals.Count > 0 ? vals.Min() : 0, hi = vals.Count > 0 ? vals.Max() : 1;
        if (hi - lo < 1e-12) { hi += 1; lo -= 1; }
        int s0 = series[0].Step, s1 = Math.Max(series[^1].Step, s0 + 1);
        string X(int step) => (left + (width - left - right) * (step - s0) / (double)(s1 - s0)).ToString("F1", CultureInfo.InvariantCulture);
        string Y(double v) => (top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))).ToString("F1", CultureInfo.InvariantCulture);
        var raw = string.Join(" ", series.Where(s => double.IsFinite(s.Value)).Select(s => $"{X(s.Step)},{Y(s.Value)}"));
        int window = Math.Max(1, series.Count / 30);
        var smooth = string.Join(" ", series.Select((s, i) =>
        {
            var w = series.Skip(Math.Max(0, i - window + 1)).Take(Math.Min(window, i + 1)).Select(x => x.Value).Where(double.IsFinite).DefaultIfEmpty(0).Average();
            return $"{X(s.Step)},{Y(w)}";
        }));
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' style='background:#fff;border:1px solid #ddd'>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x='{width / 2}' y='16' text-anchor='middle' font-size='13'>{Esc(title)}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='#888'/><line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='#888'/>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x='{left - 4}' y='{top + 4}' text-anchor='end' font-size='10'>{hi:G3}</text><text x='{left - 4}' y='{height - bottom}' text-anchor='end' font-size='10'>{lo:G3}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x='{left}' y='{height - 10}' font-size='10'>step {s0}</text><text x='{width - right}' y='{height - 10}' text-anchor='end' font-size='10'>step {s1}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<polyline fill='none' stroke='#9cc3e6' stroke-width='1' points='{raw}'/><polyline fill='none' stroke='#1f4e79' stroke-width='2' points='{smooth}'/></svg>");
        return sb.ToString();
    }

    public static string Esc(string s) => WebUtility.HtmlEncode(s);
}

using FastVideo.Data.Synthetic;
using FastVideo.Train.Quickstart;
using Xunit;

namespace FastVideo.Tests.Train;

public class QuickstartDataTests
{
    [Fact]
    public void EvaluatorReadsTheQuickstartsGroundTruthClips()
    {
        var o = QuickstartRunner.Data;
        var ev = new ClipEvaluator(o.PaletteColors, o.PaletteDirections);
        var clips = SyntheticVideoDataset.Classes(o).SelectMany(c => Enumerable.Range(0, 8).Select(k => (SyntheticVideoDataset.RenderClip(o, c, k).ToTensor(), c.Prompt)));
        var report = ev.EvaluateMany(clips);
        Assert.True(report.Accuracy >= 0.99, $"accuracy {report.Accuracy}, direction {report.DirectionAccuracy}");
    }
}

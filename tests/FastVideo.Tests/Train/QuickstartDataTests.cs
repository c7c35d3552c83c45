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

    [Fact]
    public void EvaluatorRejectsTheQuickstartsClipsUnderAnotherClassesCaption()
    {
        // The test above passes for an evaluator that says yes to everything; here each ground-truth clip is scored
        // against the caption of the class with another colour (same axis), then with the other axis (same colour).
        var o = QuickstartRunner.Data;
        var ev = new ClipEvaluator(o.PaletteColors, o.PaletteDirections);
        var classes = SyntheticVideoDataset.Classes(o);
        EvaluationReport Score(Func<SyntheticClass, SyntheticClass> caption) => ev.EvaluateMany(classes.SelectMany(c =>
            Enumerable.Range(0, 4).Select(k => (SyntheticVideoDataset.RenderClip(o, c, k).ToTensor(), caption(c).Prompt))));
        var otherColour = Score(c => classes.First(x => x.Color != c.Color && x.Directions.SequenceEqual(c.Directions)));
        Assert.Equal(0, otherColour.Accuracy);
        Assert.Equal(0, otherColour.ColorAccuracy);
        Assert.True(otherColour.DirectionAccuracy >= 0.99, $"direction {otherColour.DirectionAccuracy}");
        var otherAxis = Score(c => classes.First(x => x.Color == c.Color && !x.Directions.SequenceEqual(c.Directions)));
        Assert.Equal(0, otherAxis.Accuracy);
        Assert.Equal(0, otherAxis.DirectionAccuracy);
        Assert.True(otherAxis.ColorAccuracy >= 0.99, $"colour {otherAxis.ColorAccuracy}");
    }
}

using Xunit;

namespace FastVideo.Tests.Train;

public class QuickstartCommandTests
{
    [Theory]
    [InlineData("--eval-seeds", "0", "--eval-seeds must be at least 1, got 0")]
    [InlineData("--start", "middle", "--start expects one of random, edge, lane, line, got 'middle'")]
    [InlineData("--colors", "9", "--colors must be 1..8, got 9")]
    [InlineData("--shape-size", "16", "--shape-size must be at least 1 and smaller than the frame (16x16), got 16")]
    public void BadOptions_AreBadInput_BeforeAnythingRuns(string flag, string value, string message)
    {
        var outDir = Path.Combine(Path.GetTempPath(), "fv-quickstart-cli-" + Guid.NewGuid().ToString("N"));
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        Assert.Equal(ExitCodes.BadInput, Cli.Cli.Run(["quickstart", "--out", outDir, flag, value], stdout, stderr));
        Assert.StartsWith($"error: {message}\n", stderr.ToString());
        Assert.Equal("", stdout.ToString());
        Assert.False(Directory.Exists(outDir));
    }
}

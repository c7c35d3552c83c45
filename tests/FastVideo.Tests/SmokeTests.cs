using TorchSharp;
using Xunit;

namespace FastVideo.Tests;

public class SmokeTests
{
    [Fact]
    public void TorchRunsMatmulAndBackward()
    {
        var a = torch.ones(3, 3, requires_grad: true);
        var y = a.matmul(a).sum();
        y.backward();
        Assert.Equal(27f, y.item<float>());
        Assert.Equal(6f, a.grad!.mean().item<float>());
    }

    [Fact]
    public void DemoBuildsARandomModelAndSamplesWithGuidance()
    {
        var dir = TestPaths.TempDir("demo");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = Cli.Cli.Run(["demo", "--out", dir, "--steps", "2"], stdout, stderr);
        Assert.True(rc == 0, stderr.ToString());
        var latents = FastVideo.Weights.SafeTensors.Load(Path.Combine(dir, "latents.safetensors"))["latents"];
        Assert.Equal(new long[] { 2, 16, 3, 8, 8 }, latents.shape);
        Assert.True(latents.isfinite().all().item<bool>());
    }
}

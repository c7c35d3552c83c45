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
}

using FastVideo.Configs;
using Xunit;

namespace FastVideo.Tests.Configs;

public class NamesTests
{
    [Theory]
    [InlineData("LearningRate", "learning_rate")]
    [InlineData("NumLatentT", "num_latent_t")]
    [InlineData("DitPrecision", "dit_precision")]
    [InlineData("TpSize", "tp_size")]
    [InlineData("HTTPServer", "http_server")]
    [InlineData("Seed", "seed")]
    public void SnakeCase(string name, string expected) => Assert.Equal(expected, Names.ToSnakeCase(name));

    [Theory]
    [InlineData("learning_rat", "learning_rate")]
    [InlineData("lerning_rate", "learning_rate")]
    [InlineData("learnign_rate", "learning_rate")] // transposition counts as one edit
    [InlineData("Learning-Rate", "learning_rate")]
    [InlineData("wann", "wan")]
    [InlineData("eps", "eps")]
    [InlineData("lr", null)]
    [InlineData("completely_different", null)]
    public void Suggest(string given, string? expected) =>
        Assert.Equal(expected, Names.Suggest(given, ["learning_rate", "eps", "wan", "weight_decay"]));
}

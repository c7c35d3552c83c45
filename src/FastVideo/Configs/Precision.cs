using static TorchSharp.torch;

namespace FastVideo.Configs;

/// <summary><c>training.dit_precision</c> (and <c>generate --dtype</c>): the transformer's parameter dtype.</summary>
public static class Precision
{
    public static IReadOnlyList<string> Names { get; } = ["fp32", "bf16", "fp16"];

    public static ScalarType Parse(string name, string key = "training.dit_precision") => name switch
    {
        "fp32" => ScalarType.Float32,
        "bf16" => ScalarType.BFloat16,
        "fp16" => ScalarType.Float16,
        _ => throw new UserError($"{key}: expected fp32, bf16 or fp16, got '{name}'"),
    };

    public static int BytesPerValue(string name) => Parse(name) == ScalarType.Float32 ? 4 : 2;
}

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

    /// <summary>
    /// One line saying what is stored and what is computed in which dtype, for <c>config show</c> and the dry run:
    /// "weights stored in fp32 (training.dit_precision), computed in bf16 (training.compute_precision: auto, ...)".
    /// </summary>
    public static string Describe(TrainingConfig t)
    {
        var master = Parse(t.DitPrecision);
        var compute = ResolveCompute(t.ComputePrecision, master, t.Device);
        string why = t.ComputePrecision != "auto" ? t.ComputePrecision
            : NativeBf16(t.Device) ? $"auto: {t.Device} computes bf16 natively" : $"auto: {t.Device} has no native bf16, so the master dtype";
        return $"weights stored in {Name(master)} (training.dit_precision), computed in {Name(compute)} (training.compute_precision {why}); " +
               "gradients and optimizer state in the stored dtype, LoRA adapters in fp32";
    }

    /// <summary>The recipe name of a dtype (fp32, bf16, fp16), or the dtype's own name.</summary>
    public static string Name(ScalarType t) => t switch
    {
        ScalarType.Float32 => "fp32",
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float16 => "fp16",
        _ => t.ToString(),
    };

    public static int BytesPerValue(string name) => Parse(name) == ScalarType.Float32 ? 4 : 2;

    /// <summary>
    /// The compute dtype for <c>training.compute_precision</c> (or <c>--compute-dtype</c>): "auto" is bf16 where
    /// <paramref name="device"/> computes it natively, else <paramref name="master"/>.
    /// </summary>
    public static ScalarType ResolveCompute(string name, ScalarType master, string device, string key = "training.compute_precision") =>
        name == "auto"
            ? (NativeBf16(device) ? ScalarType.BFloat16 : master)
            : Parse(name, key);

    /// <summary>
    /// bf16 matmuls at full speed: any CUDA device, or a CPU with AVX-512 BF16 or AMX (measured here: bf16 matmul
    /// 4x fp32, a Wan finetune step about 2x). Without them libtorch emulates bf16, slower than fp32.
    /// </summary>
    public static bool NativeBf16(string device)
    {
        if (device.StartsWith("cuda", StringComparison.OrdinalIgnoreCase)) return true;
        if (!device.StartsWith("cpu", StringComparison.OrdinalIgnoreCase)) return false;
        return CpuFlags.Value.Contains("avx512_bf16") || CpuFlags.Value.Contains("amx_bf16");
    }

    private static readonly Lazy<HashSet<string>> CpuFlags = new(() =>
    {
        try
        {
            var line = File.Exists("/proc/cpuinfo")
                ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal))
                : null;
            return line is null ? [] : line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
        }
        catch (IOException) { return []; }
    });
}

using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FastVideo.Models.Vae;

/// <summary>
/// The VAE facts the training layer needs: latent channels, compression ratios and the normalisation constants
/// applied before latents enter the DiT (upstream normalize_dit_input).
/// </summary>
public sealed record VaeConfig
{
    public int LatentChannels { get; init; } = 16;
    public int SpatialCompressionRatio { get; init; } = 8;
    public int TemporalCompressionRatio { get; init; } = 4;
    /// <summary>Wan: per-channel latents_mean; null for scale-only VAEs.</summary>
    public IReadOnlyList<double>? LatentsMean { get; init; }
    public IReadOnlyList<double>? LatentsStd { get; init; }
    /// <summary>Hunyuan: latents are multiplied by this; null for mean/std VAEs.</summary>
    public double? ScalingFactor { get; init; }
    public string? SourcePath { get; init; }
    /// <summary>The config's <c>_class_name</c> (e.g. AutoencoderKLWan), when it has one.</summary>
    public string? ClassName { get; init; }
    /// <summary>The synthetic dataset's identity "VAE": a latent is the clip itself, so decoding is denormalising.</summary>
    public bool IsIdentity => ClassName == IdentityClassName;
    public const string IdentityClassName = "IdentityVAE";

    /// <summary>Wan 2.1 VAE constants (FastVideo's defaults), used when a model folder ships no vae/config.json.</summary>
    public static VaeConfig WanDefault { get; } = new()
    {
        LatentChannels = 16,
        LatentsMean = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
        LatentsStd = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160],
    };

    public static VaeConfig HunyuanDefault { get; } = new() { LatentChannels = 16, ScalingFactor = 0.476986 };

    /// <summary>The model folder's vae/config.json when it ships one, else <paramref name="fallback"/>.</summary>
    public static VaeConfig FromModelFolder(Weights.DiffusersModelFolder folder, VaeConfig fallback)
    {
        var path = folder.Root is null ? null : Path.Combine(folder.Root, "vae", "config.json");
        return path is not null && File.Exists(path) ? Load(path) : fallback;
    }

    /// <summary>Reads a Diffusers VAE config.json (AutoencoderKLWan: z_dim, latents_mean/std; others: latent_channels, scaling_factor).</summary>
    public static VaeConfig Load(string path)
    {
        JsonObject obj;
        try { obj = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new UserError($"{path}: expected a JSON object"); }
        catch (System.Text.Json.JsonException e) { throw new UserError($"{path}: not valid JSON ({e.Message})"); }
        catch (IOException e) { throw new UserError($"{path}: cannot read the VAE config ({e.Message})"); }
        int channels = (int?)obj["z_dim"] ?? (int?)obj["latent_channels"] ?? 16;
        var mean = ReadList(obj, "latents_mean", path);
        var std = ReadList(obj, "latents_std", path);
        if ((mean is null) != (std is null)) throw new UserError($"{path}: latents_mean and latents_std must be given together");
        if (mean is not null && (mean.Count != channels || std!.Count != channels))
            throw new UserError($"{path}: latents_mean/latents_std have {mean.Count}/{std!.Count} values but the VAE has {channels} latent channels");
        if (std is not null && std.Any(s => !(s > 0))) throw new UserError($"{path}: latents_std values must be > 0");
        int temporal = (int?)obj["temporal_compression_ratio"] ?? (obj["temperal_downsample"] is JsonArray td ? 1 << td.Count(x => (bool?)x == true) : 4);
        int spatial = (int?)obj["spatial_compression_ratio"] ?? (obj["dim_mult"] is JsonArray dm ? 1 << (dm.Count - 1) : 8);
        return new VaeConfig
        {
            LatentChannels = channels,
            LatentsMean = mean,
            LatentsStd = std,
            ScalingFactor = mean is null ? (double?)obj["scaling_factor"] : null,
            SpatialCompressionRatio = spatial,
            TemporalCompressionRatio = temporal,
            SourcePath = path,
            ClassName = obj["_class_name"] is JsonValue cn && cn.TryGetValue<string>(out var name) ? name : null,
        };
    }

    private static List<double>? ReadList(JsonObject obj, string key, string path)
    {
        if (obj[key] is null) return null;
        if (obj[key] is not JsonArray arr) throw new UserError($"{path}: {key} must be a list of numbers");
        try { return arr.Select(x => (double)x!).ToList(); }
        catch (Exception) { throw new UserError($"{path}: {key} must be a list of numbers"); }
    }

    /// <summary>
    /// Latents [B,C,T,H,W] -> what the DiT sees: (z - mean_c) / std_c (Wan) or z * scaling_factor (Hunyuan),
    /// computed in float32 and cast back to the input dtype.
    /// </summary>
    public Tensor Normalize(Tensor latents)
    {
        using var scope = NewDisposeScope();
        var z = latents.to_type(ScalarType.Float32);
        Tensor result;
        if (LatentsMean is not null && LatentsStd is not null)
        {
            if (latents.shape[1] != LatentsMean.Count)
                throw new UserError($"latents have {latents.shape[1]} channels but the VAE config ({SourcePath ?? "default"}) has {LatentsMean.Count}");
            var (mean, std) = ChannelStats(latents.device);
            result = (z - mean) / std;
        }
        else if (ScalingFactor is double s) result = z * s;
        else throw new UserError($"VAE config {SourcePath ?? "(default)"} has neither latents_mean/latents_std nor scaling_factor");
        return result.to_type(latents.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>latents_mean and latents_std as [1,C,1,1,1] float32 tensors (inside the caller's dispose scope).</summary>
    private (Tensor Mean, Tensor Std) ChannelStats(Device device) =>
        (tensor(LatentsMean!.Select(x => (float)x).ToArray(), device: device).reshape(1, -1, 1, 1, 1),
         tensor(LatentsStd!.Select(x => (float)x).ToArray(), device: device).reshape(1, -1, 1, 1, 1));

    /// <summary>Inverse of <see cref="Normalize"/>: DiT space back to VAE latents.</summary>
    public Tensor Denormalize(Tensor latents)
    {
        using var scope = NewDisposeScope();
        var z = latents.to_type(ScalarType.Float32);
        Tensor result;
        if (LatentsMean is not null && LatentsStd is not null)
        {
            var (mean, std) = ChannelStats(latents.device);
            result = z * std + mean;
        }
        else if (ScalingFactor is double s) result = z / s;
        else throw new UserError($"VAE config {SourcePath ?? "(default)"} has neither latents_mean/latents_std nor scaling_factor");
        return result.to_type(latents.dtype).MoveToOuterDisposeScope();
    }
}

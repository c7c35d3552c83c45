using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastVideo.Weights;
using static TorchSharp.torch;

namespace FastVideo.Train.Methods.KnowledgeDistillation;

/// <summary>What a trajectory cache was built from: a cache built otherwise cannot be reused (metadata.json).</summary>
/// <param name="TotalSamples">Rows of the source data, one entry each.</param>
/// <param name="Teacher">The teacher's weights (init_from, plus its override file if any).</param>
/// <param name="TeacherInferenceSteps">Steps of the teacher's ODE.</param>
/// <param name="TeacherGuidanceScale">Classifier-free guidance of the teacher's velocity.</param>
/// <param name="FlowShift">Shift of the ODE grid and of the sigma lookups.</param>
/// <param name="SourceDataPath">Where the rows came from (informational).</param>
/// <param name="Seed">training.data.seed: entry i's noise is drawn from a generator seeded with (seed, i) (informational).</param>
public sealed record TrajectoryCacheInfo(long TotalSamples, string Teacher, int TeacherInferenceSteps, double TeacherGuidanceScale,
    double FlowShift, string SourceDataPath, long Seed);

/// <summary>One cached row: the teacher's ODE path and what the student trains against.</summary>
/// <param name="TrajectoryLatents">[S,T,C,H,W] float32: the state before each of the S teacher steps (DiT space).</param>
/// <param name="TrajectoryTimesteps">[S] int64: the teacher's timestep at each state.</param>
/// <param name="Real">[T,C,H,W] float32: the teacher's x0 prediction at its last step.</param>
/// <param name="TextEmbedding">[L,D] float32 as collated (padded to text_len).</param>
/// <param name="TextAttentionMask">[L] float32.</param>
public sealed record TrajectoryEntry(Tensor TrajectoryLatents, Tensor TrajectoryTimesteps, Tensor Real, Tensor TextEmbedding,
    Tensor TextAttentionMask) : IDisposable
{
    public void Dispose()
    {
        foreach (var t in new[] { TrajectoryLatents, TrajectoryTimesteps, Real, TextEmbedding, TextAttentionMask }) t.Dispose();
    }
}

/// <summary>
/// KD's on-disk teacher-trajectory cache (spec 6.6, upstream's <c>_KDPathCache</c>), in safetensors instead of pickles:
/// <code>
/// &lt;dir&gt;/metadata.json                 TrajectoryCacheInfo, written before the first entry
/// &lt;dir&gt;/samples/%08d.safetensors      one entry per source row (global index), with a SHA-256 of its tensors
/// &lt;dir&gt;/COMPLETE                      written when every entry is on disk
/// </code>
/// Each entry is written under a temporary name, fsynced and renamed into place, so a run killed while building leaves
/// only whole entries (and maybe a temporary file, removed on the next start); a resumed build makes only the missing
/// ones. An entry whose file cannot be read or whose tensors do not hash to the recorded digest is corrupt: it is
/// reported and rebuilt (or, when reading for training, refused with its path).
/// </summary>
public sealed class TrajectoryCache
{
    public const string MetadataFile = "metadata.json";
    public const string CompleteFile = "COMPLETE";
    private const string Format = "fastvideosharp-kd-trajectories/1";
    private const string DigestKey = "sha256";
    private static readonly string[] Keys = ["trajectory_latents", "trajectory_timesteps", "real", "text_embedding", "text_attention_mask"];

    public TrajectoryCache(string directory) => Directory = directory;

    public string Directory { get; }
    public string SamplesDirectory => Path.Combine(Directory, "samples");
    public bool IsComplete => File.Exists(Path.Combine(Directory, CompleteFile));

    public string EntryPath(long index) => Path.Combine(SamplesDirectory, $"{index:D8}.safetensors");

    /// <summary>The metadata on disk, or null when there is none yet.</summary>
    public TrajectoryCacheInfo? ReadInfo()
    {
        var path = Path.Combine(Directory, MetadataFile);
        if (!File.Exists(path)) return null;
        try
        {
            var o = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            if ((string?)o["format"] != Format)
                throw new UserError($"{path}: not a trajectory cache of this format (format {o["format"]?.ToJsonString() ?? "missing"}, expected \"{Format}\")");
            return new TrajectoryCacheInfo((long)o["total_samples"]!, (string)o["teacher"]!, (int)o["teacher_inference_steps"]!,
                (double)o["teacher_guidance_scale"]!, (double)o["flow_shift"]!, (string?)o["source_data_path"] ?? "", (long?)o["seed"] ?? 0);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new UserError($"{path}: unreadable trajectory-cache metadata ({e.Message}); delete the cache folder to rebuild it");
        }
    }

    /// <summary>
    /// Writes <paramref name="info"/> when the folder has no metadata yet; otherwise checks that the cache was built
    /// the same way (rows, teacher, steps, guidance, shift) and names the first difference.
    /// </summary>
    public void CreateOrCheck(TrajectoryCacheInfo info)
    {
        System.IO.Directory.CreateDirectory(SamplesDirectory);
        var stored = ReadInfo();
        if (stored is null)
        {
            var o = new JsonObject
            {
                ["format"] = Format, ["total_samples"] = info.TotalSamples, ["teacher"] = info.Teacher,
                ["teacher_inference_steps"] = info.TeacherInferenceSteps, ["teacher_guidance_scale"] = info.TeacherGuidanceScale,
                ["flow_shift"] = info.FlowShift, ["source_data_path"] = info.SourceDataPath, ["seed"] = info.Seed,
            };
            IO.Durable.WriteAllText(Path.Combine(Directory, MetadataFile), o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        Check(stored, info);
    }

    /// <summary>Refuses a cache built otherwise than <paramref name="expected"/> asks, naming the key.</summary>
    public void Check(TrajectoryCacheInfo stored, TrajectoryCacheInfo expected)
    {
        var path = Path.Combine(Directory, MetadataFile);
        void Differs(string key, object had, object want) => throw new UserError(
            $"{path}: {key} is {had} in the cache but {want} in this run; delete {Directory} to rebuild it, or point method.teacher_path_cache elsewhere");
        if (stored.TotalSamples != expected.TotalSamples) Differs("total_samples", stored.TotalSamples, $"{expected.TotalSamples} (rows of {expected.SourceDataPath})");
        if (stored.Teacher != expected.Teacher) Differs("teacher", $"'{stored.Teacher}'", $"'{expected.Teacher}'");
        if (stored.TeacherInferenceSteps != expected.TeacherInferenceSteps) Differs("teacher_inference_steps", stored.TeacherInferenceSteps, expected.TeacherInferenceSteps);
        if (stored.TeacherGuidanceScale != expected.TeacherGuidanceScale) Differs("teacher_guidance_scale", stored.TeacherGuidanceScale, expected.TeacherGuidanceScale);
        if (stored.FlowShift != expected.FlowShift) Differs("flow_shift", stored.FlowShift, expected.FlowShift);
    }

    /// <summary>Removes temporary files a killed build left behind.</summary>
    public void RemoveLeftovers()
    {
        if (!System.IO.Directory.Exists(SamplesDirectory)) return;
        foreach (var tmp in System.IO.Directory.EnumerateFiles(SamplesDirectory, ".*.tmp")) File.Delete(tmp);
    }

    /// <summary>The entries among [0, <paramref name="total"/>) that are missing or corrupt, ascending; corrupt ones are reported to <paramref name="warn"/>.</summary>
    public List<long> FindMissing(long total, Action<string> warn)
    {
        var missing = new List<long>();
        for (long i = 0; i < total; i++)
        {
            var path = EntryPath(i);
            if (!File.Exists(path)) { missing.Add(i); continue; }
            if (Problem(path) is { } problem)
            {
                warn($"trajectory cache: {path} is corrupt ({problem}); rebuilding it");
                missing.Add(i);
            }
        }
        return missing;
    }

    /// <summary>Why the entry at <paramref name="path"/> cannot be used, or null when it reads and hashes to its digest.</summary>
    public static string? Problem(string path)
    {
        try
        {
            using var scope = NewDisposeScope();
            var metadata = SafeTensors.ReadMetadata(path);
            var tensors = SafeTensors.Load(path);
            if (Keys.FirstOrDefault(k => !tensors.ContainsKey(k)) is { } absent) return $"no '{absent}' tensor";
            if (!metadata.TryGetValue(DigestKey, out var digest)) return "no digest";
            return Digest(tensors) == digest ? null : "its tensors do not match their digest";
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return e.Message;
        }
    }

    /// <summary>Writes entry <paramref name="index"/> (temporary name, fsync, rename) with the digest of its tensors.</summary>
    public void Write(long index, TrajectoryEntry entry)
    {
        var tensors = Named(entry);
        var metadata = new Dictionary<string, string> { [DigestKey] = Digest(tensors), ["index"] = index.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        SafeTensors.Save(EntryPath(index), tensors, metadata);
    }

    /// <summary>Reads entry <paramref name="index"/> (CPU), refusing one that does not match its digest.</summary>
    public TrajectoryEntry Read(long index)
    {
        var path = EntryPath(index);
        using var scope = NewDisposeScope();
        Dictionary<string, Tensor> tensors;
        try { tensors = SafeTensors.Load(path); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new UserError($"trajectory cache: {path} cannot be read ({e.Message}); run again with the teacher role to rebuild it");
        }
        var metadata = SafeTensors.ReadMetadata(path);
        if (Keys.FirstOrDefault(k => !tensors.ContainsKey(k)) is { } absent || !metadata.TryGetValue(DigestKey, out var digest) || Digest(tensors) != digest)
            throw new UserError($"trajectory cache: {path} is corrupt (its tensors do not match their digest); run again with the teacher role to rebuild it");
        var entry = new TrajectoryEntry(tensors["trajectory_latents"], tensors["trajectory_timesteps"], tensors["real"], tensors["text_embedding"], tensors["text_attention_mask"]);
        foreach (var t in Named(entry).Values) t.MoveToOuterDisposeScope();
        return entry;
    }

    public void MarkComplete() => IO.Durable.WriteAllText(Path.Combine(Directory, CompleteFile), "");

    public void MarkIncomplete()
    {
        var path = Path.Combine(Directory, CompleteFile);
        if (File.Exists(path)) File.Delete(path);
    }

    private static Dictionary<string, Tensor> Named(TrajectoryEntry e) => new(StringComparer.Ordinal)
    {
        ["trajectory_latents"] = e.TrajectoryLatents, ["trajectory_timesteps"] = e.TrajectoryTimesteps, ["real"] = e.Real,
        ["text_embedding"] = e.TextEmbedding, ["text_attention_mask"] = e.TextAttentionMask,
    };

    /// <summary>SHA-256 over each tensor's name, dtype, shape and bytes, in name order.</summary>
    private static string Digest(IReadOnlyDictionary<string, Tensor> tensors)
    {
        using var scope = NewDisposeScope();
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var key in Keys)
        {
            var t = tensors[key].detach().cpu().contiguous();
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes($"{key}|{t.dtype}|{string.Join(",", t.shape)}|"));
            sha.AppendData(t.bytes);
        }
        return Convert.ToHexString(sha.GetHashAndReset());
    }
}

using FastVideo.Data;
using static TorchSharp.torch;

namespace FastVideo.Weights;

/// <summary>
/// Precomputed negative-prompt (or empty-caption) text-encoder outputs, until text encoders exist:
/// <c>negative_prompt_embeds.safetensors</c> with <c>negative_prompt_embeds</c> [1, L, D] (or [L, D], or [N, L, D]: one per sample) and
/// optionally <c>negative_prompt_attention_mask</c> [N, L] (all ones when absent) and, for a family with pooled text
/// (HunyuanVideo's CLIP), <c>negative_pooled_prompt_embeds</c> [N, P]. A model folder may ship one (the role's
/// negative conditioning) and so may a data folder (the empty caption used for CFG dropout). One reader, one set of
/// checks, one wording for every place that loads it.
/// </summary>
public static class NegativePromptEmbeds
{
    public const string FileName = "negative_prompt_embeds.safetensors";
    public const string EmbedsKey = "negative_prompt_embeds";
    public const string MaskKey = "negative_prompt_attention_mask";
    public const string PooledKey = "negative_pooled_prompt_embeds";

    /// <summary>
    /// Embeddings [N, L, D] and mask [N, L] (N = 1 for one negative prompt), float32 on the CPU. <paramref name="what"/> names where the path came
    /// from (an option or a folder) in errors.
    /// </summary>
    public static (Tensor Embeds, Tensor Mask) Load(string path, string what)
    {
        if (!File.Exists(path)) throw new UserError($"{what}: '{path}' does not exist; expected a safetensors file with '{EmbedsKey}' [1, L, D]");
        var tensors = SafeTensors.Load(path);
        try
        {
            if (!tensors.TryGetValue(EmbedsKey, out var e))
                throw new UserError($"{what}: '{path}' has no tensor '{EmbedsKey}' [1, L, D] (it has: {string.Join(", ", tensors.Keys)})");
            if (!e.is_floating_point())
                throw new UserError($"{what}: '{path}': '{EmbedsKey}' is {e.dtype}; expected a floating-point tensor");
            var embeds = e.dim() == 2 ? e.unsqueeze(0) : e.alias();
            if (embeds.dim() != 3 || embeds.shape[0] < 1 || embeds.shape[1] < 1)
                throw new UserError($"{what}: '{path}': '{EmbedsKey}' is [{string.Join(", ", e.shape)}]; expected [1, L, D] with L >= 1");
            long n = embeds.shape[0], l = embeds.shape[1];
            Tensor mask;
            if (tensors.TryGetValue(MaskKey, out var m))
            {
                if (m.numel() != n * l)
                    throw new UserError($"{what}: '{path}': '{MaskKey}' is [{string.Join(", ", m.shape)}]; expected [{n}, {l}] to match '{EmbedsKey}'");
                mask = m.reshape(n, l).to(ScalarType.Float32);
            }
            else mask = ones(n, l);
            return (embeds.to(ScalarType.Float32).contiguous().DetachFromDisposeScope(), mask.contiguous().DetachFromDisposeScope());
        }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
    }

    /// <summary>
    /// The same as a <see cref="Conditioning"/>: its <see cref="Conditioning.Text"/> channel and, when the file has
    /// <c>negative_pooled_prompt_embeds</c> [N, P] (or [P]), the <see cref="Conditioning.PooledText"/> channel.
    /// </summary>
    public static Conditioning LoadConditioning(string path, string what)
    {
        var (embeds, mask) = Load(path, what);
        var pooled = LoadPooled(path, what, embeds.shape[0]);
        var text = KeyValuePair.Create(Conditioning.Text, new ConditioningChannel(embeds, mask));
        return pooled is null
            ? new Conditioning([text])
            : new Conditioning([text, KeyValuePair.Create(Conditioning.PooledText, new ConditioningChannel(pooled))]);
    }

    /// <summary><c>negative_pooled_prompt_embeds</c> as [N, P] float32, null when the file has none.</summary>
    private static Tensor? LoadPooled(string path, string what, long rows)
    {
        if (!SafeTensors.ReadHeader(path).ContainsKey(PooledKey)) return null;
        var tensors = SafeTensors.Load(path);
        try
        {
            var p = tensors[PooledKey];
            var pooled = p.dim() == 1 ? p.unsqueeze(0) : p.alias();
            if (pooled.dim() != 2 || pooled.shape[0] != rows || !p.is_floating_point())
                throw new UserError($"{what}: '{path}': '{PooledKey}' is [{string.Join(", ", p.shape)}] {p.dtype}; expected floats [{rows}, P] to match '{EmbedsKey}'");
            return pooled.to(ScalarType.Float32).contiguous().DetachFromDisposeScope();
        }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
    }

    /// <summary>The file beside a folder (or beside a file), when it exists.</summary>
    public static string? FindIn(string folderOrFile)
    {
        var dir = Path.GetFullPath(folderOrFile);
        if (File.Exists(dir)) dir = Path.GetDirectoryName(dir)!;
        var p = Path.Combine(dir, FileName);
        return File.Exists(p) ? p : null;
    }
}

using System.Text;

namespace FastVideo.Configs;

/// <summary>Naming helpers for recipes: snake_case YAML keys and "did you mean" suggestions.</summary>
internal static class Names
{
    /// <summary><c>LearningRate</c> -> <c>learning_rate</c>, <c>NumLatentT</c> -> <c>num_latent_t</c>.</summary>
    public static string ToSnakeCase(string name)
    {
        var sb = new StringBuilder(name.Length + 8);
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (char.IsUpper(c))
            {
                bool boundary = i > 0 && (char.IsLower(name[i - 1]) || char.IsDigit(name[i - 1])
                                          || (char.IsUpper(name[i - 1]) && i + 1 < name.Length && char.IsLower(name[i + 1])));
                if (boundary) sb.Append('_');
                sb.Append(char.ToLowerInvariant(c));
            }
            else
            {
                sb.Append(c);
            }
        }
        return sb.ToString();
    }

    /// <summary>
    /// The candidate closest to <paramref name="given"/>, or null when none is close enough to be a plausible typo.
    /// Compares case-insensitively with '-' read as '_' and camelCase read as snake_case, so <c>learningRate</c>
    /// suggests <c>learning_rate</c>.
    /// </summary>
    public static string? Suggest(string given, IEnumerable<string> candidates)
    {
        var g = Normalise(given);
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var candidate in candidates)
        {
            var c = Normalise(candidate);
            int d = Distance(g, c);
            // Allow about one edit per three characters (at least one): "wann"->"wan", "learning_rat"->"learning_rate",
            // but not "lr"->"eps".
            int allowed = Math.Max(1, Math.Min(g.Length, c.Length) / 3);
            if (d <= allowed && d < bestDistance)
            {
                best = candidate;
                bestDistance = d;
            }
        }
        return best;
    }

    private static string Normalise(string s) => ToSnakeCase(s).ToLowerInvariant().Replace('-', '_');

    /// <summary>Optimal-string-alignment (restricted Damerau-Levenshtein) distance: a swap of neighbours costs 1.</summary>
    public static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                    d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        }
        return d[a.Length, b.Length];
    }
}

namespace FastVideo.Data;

/// <summary>
/// A tiny deterministic PRNG (Steele, Lea &amp; Flood's SplitMix64). We use our own instead of System.Random so that
/// shuffles, dropout decisions and synthetic data are identical across .NET versions and platforms: a resumed run
/// or a regenerated dataset must reproduce bit for bit.
/// </summary>
public struct SplitMix64
{
    private ulong _state;

    public SplitMix64(ulong seed) => _state = seed;

    /// <summary>A generator keyed by several values (e.g. seed and epoch): each key is mixed in turn.</summary>
    public static SplitMix64 Keyed(params long[] keys)
    {
        ulong h = 0x243F6A8885A308D3UL; // arbitrary non-zero start (pi's fraction)
        foreach (var k in keys) h = Mix(h ^ Mix(unchecked((ulong)k) + 0x9E3779B97F4A7C15UL));
        return new SplitMix64(h);
    }

    /// <summary>SplitMix64's output function: a strong 64-bit bijective mixer.</summary>
    public static ulong Mix(ulong z)
    {
        unchecked
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }

    public ulong NextUInt64()
    {
        unchecked
        {
            _state += 0x9E3779B97F4A7C15UL;
            return Mix(_state);
        }
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, bound), unbiased (rejection of the short tail).</summary>
    public long NextLong(long bound)
    {
        if (bound <= 0) throw new ArgumentOutOfRangeException(nameof(bound));
        ulong b = (ulong)bound;
        // Accept r in [2^64 mod b, 2^64): that range holds a whole multiple of b values, so r % b is uniform.
        ulong threshold = unchecked(0UL - b) % b;
        while (true)
        {
            ulong r = NextUInt64();
            if (r >= threshold) return (long)(r % b);
        }
    }

    public int NextInt(int bound) => (int)NextLong(bound);

    /// <summary>Uniform integer in [min, max].</summary>
    public int NextInt(int min, int max) => min + (int)NextLong((long)max - min + 1);

    /// <summary>Standard normal (Box-Muller; one value per call, the twin is dropped to keep the stream simple).</summary>
    public double NextGaussian()
    {
        double u1 = 1.0 - NextDouble(); // (0, 1]
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    /// <summary>A uniformly random permutation of 0..n-1 (Fisher-Yates).</summary>
    public int[] Permutation(int n)
    {
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--)
        {
            int j = (int)NextLong(i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }
}

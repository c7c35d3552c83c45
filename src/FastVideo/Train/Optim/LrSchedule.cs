using System.Globalization;

namespace FastVideo.Train.Optim;

/// <summary>
/// The learning-rate multiplier λ(k) of a LambdaLR schedule (lr = base_lr · λ(k)), with k the number of scheduler
/// steps taken so far. Formulas follow diffusers' get_scheduler as FastVideo calls it (spec 7.2).
/// </summary>
public sealed class LrSchedule
{
    /// <summary>polynomial's end learning rate (diffusers' default; FastVideo does not pass one).</summary>
    public const double PolynomialLrEnd = 1e-7;

    public static IReadOnlyList<string> Names { get; } =
        ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "cosine_with_min_lr", "polynomial", "piecewise_constant"];

    private readonly Func<long, double> _lambda;

    public string Name { get; }

    private LrSchedule(string name, Func<long, double> lambda) { Name = name; _lambda = lambda; }

    public double Lambda(long k) => _lambda(k);

    /// <summary>
    /// Builds a schedule. <paramref name="keyPath"/> prefixes error messages (e.g. <c>training.optimizer</c>);
    /// <paramref name="stepRules"/> is piecewise_constant's "m1:s1,m2:s2,...,m_last".
    /// </summary>
    public static LrSchedule Create(string name, double baseLr, int warmupSteps, int trainingSteps, int numCycles = 1,
        double power = 1.0, double minLrRatio = 0.5, string? stepRules = null, string keyPath = "training.optimizer")
    {
        int w = warmupSteps, m = trainingSteps;
        // Linear warmup shared by every schedule except constant and piecewise_constant.
        double Warm(long k) => (double)k / Math.Max(1, w);
        double Progress(long k) => (double)(k - w) / Math.Max(1, m - w);
        switch (name)
        {
            case "constant":
                return new(name, _ => 1.0);
            case "constant_with_warmup":
                return new(name, k => k < w ? Warm(k) : 1.0);
            case "linear":
                return new(name, k => k < w ? Warm(k) : Math.Max(0.0, (double)(m - k) / Math.Max(1, m - w)));
            case "cosine":
                // num_cycles is fixed at 0.5 upstream (the config value is not passed): a half cosine to zero.
                return new(name, k => k < w ? Warm(k) : Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * 0.5 * 2.0 * Progress(k)))));
            case "cosine_with_restarts":
                return new(name, k =>
                {
                    if (k < w) return Warm(k);
                    double p = Progress(k);
                    if (p >= 1.0) return 0.0;
                    return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * ((numCycles * p) % 1.0))));
                });
            case "cosine_with_min_lr":
                return new(name, k => k < w ? Warm(k) : Math.Max(minLrRatio, 0.5 * (1.0 + Math.Cos(Math.PI * 0.5 * 2.0 * Progress(k)))));
            case "polynomial":
                if (!(baseLr > PolynomialLrEnd))
                    throw new UserError($"{keyPath}.learning_rate: the polynomial schedule needs a learning rate above its end rate {PolynomialLrEnd}, got {baseLr}");
                if (m <= w)
                    throw new UserError($"{keyPath}.lr_scheduler: polynomial needs training.loop.max_train_steps ({m}) > lr_warmup_steps ({w})");
                return new(name, k =>
                {
                    if (k < w) return Warm(k);
                    if (k > m) return PolynomialLrEnd / baseLr;
                    double remaining = 1.0 - (double)(k - w) / (m - w);
                    return ((baseLr - PolynomialLrEnd) * Math.Pow(remaining, power) + PolynomialLrEnd) / baseLr;
                });
            case "piecewise_constant":
                return PiecewiseConstant(stepRules, keyPath);
            default:
                throw new UserError($"{keyPath}.lr_scheduler: unknown schedule '{name}' (expected one of {string.Join(", ", Names)})");
        }
    }

    // "1:10,0.1:20,0.01": multiplier 1 before step 10, 0.1 before step 20, then 0.01 (diffusers' rule format).
    private static LrSchedule PiecewiseConstant(string? rules, string keyPath)
    {
        if (string.IsNullOrWhiteSpace(rules))
            throw new UserError($"{keyPath}.lr_scheduler: piecewise_constant needs step rules; set method.lr_step_rules to \"m1:s1,m2:s2,...,m_last\" (e.g. \"1:100,0.1:200,0.01\")");
        var parts = rules.Split(',', StringSplitOptions.TrimEntries);
        var steps = new List<(long Step, double Mult)>();
        string Bad(string what) => $"method.lr_step_rules: {what} in \"{rules}\" (expected \"m1:s1,m2:s2,...,m_last\", e.g. \"1:100,0.1:200,0.01\")";
        foreach (var rule in parts[..^1])
        {
            var kv = rule.Split(':');
            if (kv.Length != 2 || !double.TryParse(kv[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var mult)
                || !long.TryParse(kv[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var step))
                throw new UserError(Bad($"bad rule '{rule}'"));
            steps.Add((step, mult));
        }
        if (!double.TryParse(parts[^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var last))
            throw new UserError(Bad($"the last entry '{parts[^1]}' is not a number"));
        var sorted = steps.OrderBy(s => s.Step).ToArray();
        return new("piecewise_constant", k =>
        {
            foreach (var (step, mult) in sorted)
                if (k < step) return mult;
            return last;
        });
    }
}

/// <summary>LambdaLR: sets the optimizer's lr to base_lr · λ(k) at construction (k = 0) and after each step.</summary>
public sealed class LambdaLrScheduler
{
    public LambdaLrScheduler(AdamW optimizer, LrSchedule schedule)
    {
        Optimizer = optimizer;
        Schedule = schedule;
        BaseLr = optimizer.Lr;
        Apply();
    }

    public AdamW Optimizer { get; }
    public LrSchedule Schedule { get; }
    public double BaseLr { get; }
    /// <summary>Scheduler steps taken so far (torch's last_epoch).</summary>
    public long LastEpoch { get; private set; }

    public void Step() { LastEpoch++; Apply(); }

    private void Apply() => Optimizer.Lr = BaseLr * Schedule.Lambda(LastEpoch);

    public void SaveState(State.StateScope s)
    {
        s.PutValue("last_epoch", LastEpoch);
        s.PutValue("base_lr", BaseLr);
        s.PutValue("schedule", Schedule.Name);
    }

    public void LoadState(State.StateScope s)
    {
        LastEpoch = s.GetValue<long>("last_epoch");
        Apply();
    }
}

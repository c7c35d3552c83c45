namespace FastVideo.Train;

/// <summary>A run that cannot continue (e.g. a non-finite loss); printed like a user error, without a stack trace.</summary>
public sealed class TrainingError : UserError
{
    public TrainingError(int step, string role, string lossKey, double value, string? lastCheckpoint)
        : base($"step {step}: loss '{lossKey}' of role '{role}' is {Format(value)}; the run stopped. " +
               (lastCheckpoint is null ? "No checkpoint was written." : $"The last good checkpoint is '{lastCheckpoint}'."))
    {
        Step = step; Role = role; LossKey = lossKey; Value = value; LastCheckpoint = lastCheckpoint;
    }

    public int Step { get; }
    public string Role { get; }
    public string LossKey { get; }
    public double Value { get; }
    public string? LastCheckpoint { get; }
    public override int ExitCode => ExitCodes.TrainingStopped;

    private static string Format(double v) => double.IsNaN(v) ? "NaN" : double.IsPositiveInfinity(v) ? "+inf" : double.IsNegativeInfinity(v) ? "-inf" : v.ToString("R");
}

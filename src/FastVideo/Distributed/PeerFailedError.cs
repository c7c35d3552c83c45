namespace FastVideo.Distributed;

/// <summary>
/// Another process of the run failed (its own error is printed by that process): this one stops too, with the
/// same exit code, and prints nothing more. Every process knows of the failure, so each ends normally.
/// </summary>
public sealed class PeerFailedError : UserError
{
    public PeerFailedError(RankInfo failed, int exitCode)
        : base($"{failed} failed (its error is printed above); this process stops too")
    {
        Failed = failed;
        Code = exitCode;
        Agreement.MarkAgreed(this);
    }

    public RankInfo Failed { get; }
    private int Code { get; }
    public override int ExitCode => Code;
}

/// <summary>
/// Failures that every process of a run learnt of through a collective (<see cref="ProcessGroup.Agree"/>): the
/// processes then end together and normally. A failure not agreed on leaves the others waiting in a collective,
/// so the failing process must end the whole run (MPI_Abort).
/// </summary>
public static class Agreement
{
    private const string Key = "fastvideo.distributed.agreed";

    public static void MarkAgreed(Exception e) => e.Data[Key] = true;

    public static bool IsAgreed(Exception e) => e.Data.Contains(Key);
}

namespace FastVideo.Distributed;

/// <summary>
/// This process's place in a run, as torch.distributed's world group is upstream: one process (the default), or
/// rank <c>r</c> of the <c>N</c> processes that MPICH's <c>mpiexec -n N</c> started. MPI is process-wide state, so
/// this is too: <see cref="Join"/> once, before training, and <see cref="Leave"/> at the end.
/// <para>A process that dies (killed, crashed) ends the run: MPICH's mpiexec kills the others at once and prints which
/// process ended and how (the start line maps process ids to ranks); rank 0's checkpoints are atomic, so the last
/// one stays whole.</para>
/// </summary>
public static class World
{
    private static MpiProcessGroup? _mpi;

    /// <summary>The run's processes: <see cref="ProcessGroup.Single"/> unless <see cref="Join"/> joined an MPI run.</summary>
    public static ProcessGroup Current => (ProcessGroup?)_mpi ?? ProcessGroup.Single;

    /// <summary>Where the library came from and how many threads each rank computes with (for the start line).</summary>
    public static string Describe() =>
        _mpi is null ? "one process" : $"{_mpi.Size} processes (MPI: {Mpi.LoadedFrom}), {TorchSharp.torch.get_num_threads()} compute threads each";

    /// <summary>
    /// Joins the MPI run this process was started in when <c>mpiexec</c> started more than one; otherwise stays one
    /// process and loads no MPI library. Each rank then computes with its share of the host's cores (unless
    /// <c>OMP_NUM_THREADS</c> says otherwise).
    /// </summary>
    public static ProcessGroup Join(Launch? launch = null)
    {
        launch ??= Launch.FromEnvironment();
        if (!launch.IsMultiProcess || _mpi is not null) return Current;
        if (launch.Launcher == Launcher.OpenMpi)
            throw new UserError($"started by Open MPI's mpiexec ({launch.Size} processes): FastVideo runs on MPICH's ABI only. " +
                                "Install MPICH (apt-get install mpich) and start with its mpiexec (mpiexec.mpich -n N ...)");
        if (!Mpi.TryLoad(out var tried))
            throw new UserError($"started by mpiexec with {launch.Size} processes (PMI_SIZE={launch.Size}), but MPICH's library " +
                                $"is not installed (tried {tried}): apt-get install mpich, or set FASTVIDEO_MPI_LIBRARY to its path");
        if (!Mpi.Initialized) Mpi.Init();
        var group = new MpiProcessGroup();
        if (group.Size != launch.Size || group.Rank != launch.Rank)
            throw new UserError($"MPI says rank {group.Rank} of {group.Size}, the launcher said rank {launch.Rank} of {launch.Size}: " +
                                $"was '{Mpi.LoadedFrom}' the library of the mpiexec that started this process?");
        _mpi = group;
        ShareCores(group);
        return group;
    }

    /// <summary>Ends MPI after a run every process finished (or stopped on an agreed failure).</summary>
    public static void Leave()
    {
        if (_mpi is null || Mpi.Finalized) return;
        Mpi.Finish();
    }

    /// <summary>
    /// Ends a process that joined an MPI run with <paramref name="code"/> once its work is done (after
    /// <see cref="Leave"/>, or on a failure), without the exit-time destructors of the native libraries: after
    /// MPI_Finalize, libtorch's and MPICH's (UCX) teardown under .NET's shutdown was seen to crash (SIGSEGV) now and
    /// then, which mpiexec reports as a failed run. Files are closed and synced before this; the console is flushed
    /// here. Does nothing in a process that did not join one.
    /// </summary>
    public static void ExitIfJoined(int code)
    {
        if (_mpi is null) return;
        Console.Out.Flush();
        Console.Error.Flush();
        IO.Posix.Exit(code);
    }

    /// <summary>Ends every process of the run at once (mpiexec kills the others); for a failure not agreed on.</summary>
    public static void Abort(int code)
    {
        if (_mpi is null || Mpi.Finalized) return;
        Console.Out.Flush();
        Console.Error.Flush();
        Mpi.Abort(code);
    }

    private static void ShareCores(ProcessGroup group)
    {
        if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable("OMP_NUM_THREADS"))) return;
        var me = group.Ranks[group.Rank];
        int local = group.Ranks.Count(r => r.Host == me.Host);
        TorchSharp.torch.set_num_threads(Math.Max(1, Environment.ProcessorCount / local));
    }
}

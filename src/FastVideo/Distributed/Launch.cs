using System.Collections;
using System.Globalization;

namespace FastVideo.Distributed;

/// <summary>Which MPI launcher started this process, read from the variables it sets.</summary>
public enum Launcher { None, Mpich, OpenMpi }

/// <summary>
/// How this process was started: by MPICH's <c>mpiexec</c> (Hydra, or Slurm's PMI: <c>PMI_RANK</c>/<c>PMI_SIZE</c>),
/// by Open MPI's (<c>OMPI_COMM_WORLD_*</c>), or alone. Read without loading any MPI library, so a run outside
/// <c>mpiexec</c> never touches MPI.
/// </summary>
public sealed record Launch(Launcher Launcher, int Rank, int Size)
{
    public static Launch Alone { get; } = new(Launcher.None, 0, 1);

    public static Launch FromEnvironment() => From(Environment.GetEnvironmentVariables());

    public static Launch From(IDictionary env)
    {
        int? Int(string name) =>
            env[name] is string s && int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : null;
        if (Int("PMI_SIZE") is int size && Int("PMI_RANK") is int rank) return new(Launcher.Mpich, rank, size);
        if (Int("OMPI_COMM_WORLD_SIZE") is int osize && Int("OMPI_COMM_WORLD_RANK") is int orank) return new(Launcher.OpenMpi, orank, osize);
        return Alone;
    }

    /// <summary>More than one process: the run is data parallel over MPI.</summary>
    public bool IsMultiProcess => Size > 1;
}

using System.Runtime.InteropServices;
using System.Text;

namespace FastVideo.Distributed;

/// <summary>
/// The few MPI calls the trainer needs, bound at run time to MPICH's library (<c>libmpich.so.12</c>, Debian's
/// <c>mpich</c> package; MPICH's own builds and Intel MPI ship the same ABI as <c>libmpi.so.12</c>). MPICH's ABI
/// passes communicators, datatypes and operations as plain integers, so the handles are the constants of its
/// <c>mpi.h</c>; Open MPI (pointer handles) is a different ABI and is not supported.
/// </summary>
internal static unsafe class Mpi
{
    // mpich/mpi.h
    public const int CommWorld = 0x44000000;
    public const int Byte = 0x4c00010d, Float = 0x4c00040a, Double = 0x4c00080b, Int64 = 0x4c00083a;
    public const int Sum = 0x58000003;
    public const int ErrorsReturn = 0x54000001;
    public const int ThreadFunneled = 1;
    public static readonly void* InPlace = (void*)-1;

    /// <summary>The library names tried, in order, after <c>FASTVIDEO_MPI_LIBRARY</c>.</summary>
    public static readonly string[] LibraryNames = ["libmpich.so.12", "libmpi.so.12"];

    private static nint _lib;
    private static delegate* unmanaged<int*, int> _initialized, _finalized;
    private static delegate* unmanaged<int*, nint, int, int*, int> _initThread;
    private static delegate* unmanaged<int> _finalize;
    private static delegate* unmanaged<int, int*, int> _commRank, _commSize;
    private static delegate* unmanaged<int, int, int> _setErrhandler, _abort;
    private static delegate* unmanaged<void*, void*, int, int, int, int, int> _allreduce;
    private static delegate* unmanaged<void*, int, int, void*, int, int, int, int> _allgather;
    private static delegate* unmanaged<void*, int, int, int, int, int> _bcast;
    private static delegate* unmanaged<int, int> _barrier;
    private static delegate* unmanaged<int, byte*, int*, int> _errorString;

    /// <summary>The loaded library's path or name, or null before <see cref="TryLoad"/> succeeded.</summary>
    public static string? LoadedFrom { get; private set; }

    /// <summary>Loads MPICH's library and binds its functions; false (with what was tried) when none is found.</summary>
    public static bool TryLoad(out string tried)
    {
        var names = new List<string>();
        if (Environment.GetEnvironmentVariable("FASTVIDEO_MPI_LIBRARY") is { Length: > 0 } overridden) names.Add(overridden);
        names.AddRange(LibraryNames);
        tried = string.Join(", ", names);
        if (_lib != 0) return true;
        foreach (var name in names)
        {
            if (!NativeLibrary.TryLoad(name, out var lib)) continue;
            if (!NativeLibrary.TryGetExport(lib, "MPI_Allreduce", out _)) { NativeLibrary.Free(lib); continue; }
            _lib = lib;
            LoadedFrom = name;
            Bind();
            return true;
        }
        return false;
    }

    private static void Bind()
    {
        nint F(string name) => NativeLibrary.GetExport(_lib, name);
        _initialized = (delegate* unmanaged<int*, int>)F("MPI_Initialized");
        _finalized = (delegate* unmanaged<int*, int>)F("MPI_Finalized");
        _initThread = (delegate* unmanaged<int*, nint, int, int*, int>)F("MPI_Init_thread");
        _finalize = (delegate* unmanaged<int>)F("MPI_Finalize");
        _commRank = (delegate* unmanaged<int, int*, int>)F("MPI_Comm_rank");
        _commSize = (delegate* unmanaged<int, int*, int>)F("MPI_Comm_size");
        _setErrhandler = (delegate* unmanaged<int, int, int>)F("MPI_Comm_set_errhandler");
        _abort = (delegate* unmanaged<int, int, int>)F("MPI_Abort");
        _allreduce = (delegate* unmanaged<void*, void*, int, int, int, int, int>)F("MPI_Allreduce");
        _allgather = (delegate* unmanaged<void*, int, int, void*, int, int, int, int>)F("MPI_Allgather");
        _bcast = (delegate* unmanaged<void*, int, int, int, int, int>)F("MPI_Bcast");
        _barrier = (delegate* unmanaged<int, int>)F("MPI_Barrier");
        _errorString = (delegate* unmanaged<int, byte*, int*, int>)F("MPI_Error_string");
    }

    public static bool Initialized { get { int f; Check(_initialized(&f), "MPI_Initialized"); return f != 0; } }

    public static bool Finalized { get { int f; Check(_finalized(&f), "MPI_Finalized"); return f != 0; } }

    /// <summary>MPI_Init_thread (funneled: only the training thread calls MPI); errors are returned, not fatal.</summary>
    public static void Init()
    {
        int provided;
        Check(_initThread(null, 0, ThreadFunneled, &provided), "MPI_Init_thread");
        Check(_setErrhandler(CommWorld, ErrorsReturn), "MPI_Comm_set_errhandler");
    }

    public static void Finish() => Check(_finalize(), "MPI_Finalize");

    public static int Rank { get { int r; Check(_commRank(CommWorld, &r), "MPI_Comm_rank"); return r; } }

    public static int Size { get { int s; Check(_commSize(CommWorld, &s), "MPI_Comm_size"); return s; } }

    public static void AllReduceSumInPlace(void* data, int count, int datatype) =>
        Check(_allreduce(InPlace, data, count, datatype, Sum, CommWorld), "MPI_Allreduce");

    public static void AllGather(void* send, int count, int datatype, void* receive) =>
        Check(_allgather(send, count, datatype, receive, count, datatype, CommWorld), "MPI_Allgather");

    public static void Broadcast(void* data, int count, int datatype, int root) =>
        Check(_bcast(data, count, datatype, root, CommWorld), "MPI_Bcast");

    public static void Barrier() => Check(_barrier(CommWorld), "MPI_Barrier");

    /// <summary>Ends every process of the run (mpiexec kills the others) with <paramref name="code"/>.</summary>
    public static void Abort(int code) => _abort(CommWorld, code);

    private static void Check(int rc, string call)
    {
        if (rc == 0) return;
        throw new MpiError($"{call} failed: {ErrorString(rc)} (MPI error {rc}); another process of the run has probably died");
    }

    private static string ErrorString(int rc)
    {
        var buf = stackalloc byte[512];   // MPI_MAX_ERROR_STRING
        int len = 0;
        if (_errorString(rc, buf, &len) != 0 || len <= 0) return "unknown error";
        return Encoding.UTF8.GetString(buf, Math.Min(len, 512)).Trim();
    }
}

/// <summary>An MPI call failed (typically: another process of the run died).</summary>
public sealed class MpiError : UserError
{
    public MpiError(string message) : base(message) { }
    public override int ExitCode => ExitCodes.Distributed;
}

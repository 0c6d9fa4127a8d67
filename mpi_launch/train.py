"""mpirun -n N python mpi_launch/train.py <the flags of npdlrm train>

Thin on purpose: the flags, the distributed run and the failure handling live in
npdlrm.parallel (see npdlrm/parallel/launch.py). The one thing done here is what must
happen before NumPy and Numba load: unless the user set a thread count, each rank gets
its share of the machine's cores (ranks x threads oversubscribing the cores made a
4-rank run on 2 cores 25 times slower).
"""
import os

THREAD_VARS = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")
# ranks on this machine, as MPICH's hydra, Open MPI and Slurm announce them
LOCAL_RANKS_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


def share_cores(environ):
    """Set every unset thread variable to cores // local ranks (at least 1), when no
    thread variable is set at all."""
    if any(v in environ for v in THREAD_VARS):
        return
    local = next((environ[v] for v in LOCAL_RANKS_VARS if environ.get(v, "").isdigit()), "1")
    threads = max(1, (os.cpu_count() or 1) // max(1, int(local)))
    for v in THREAD_VARS:
        environ[v] = str(threads)


if __name__ == "__main__":
    share_cores(os.environ)
    from npdlrm.parallel.launch import main
    raise SystemExit(main())

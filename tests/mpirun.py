"""Run a script under mpiexec (the venv's MPICH from PyPI) from a test.

Each rank runs with one thread per pool: MPICH oversubscribes the 2 cores of CI."""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def mpiexec():
    """The mpiexec beside this Python (the mpich wheel), else the one on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = local if os.path.exists(local) else shutil.which("mpiexec")
    if found is None:
        raise RuntimeError("no mpiexec: `make test` installs mpi4py and the mpich wheel "
                           "(pip install mpi4py mpich)")
    return found


def run_mpi(nprocs, args, timeout=180, env=None, check=True):
    """mpiexec -n nprocs python ARGS...; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, **ONE_THREAD, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, full_env.get("PYTHONPATH", "")])
    cmd = [mpiexec(), "-n", str(nprocs), sys.executable, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n"
                             f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def worker_main(main, *args):
    """Run a worker's main(*args) under mpiexec; an exception on one rank aborts the
    whole job (a failing test ends at once instead of waiting for its timeout)."""
    try:
        main(*args)
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        from mpi4py import MPI
        MPI.COMM_WORLD.Abort(1)

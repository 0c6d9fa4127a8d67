"""The entry of `mpirun -n N python mpi_launch/train.py <npdlrm train flags>`.

Failures end the whole job: an exception on any rank is printed with its rank and the
job is aborted (MPI_Abort), so no rank is left waiting in a collective.
"""
import sys
import time
import traceback

from .comm import world

ABORT_GRACE_S = 0.5  # between a failing rank's report and MPI_Abort


def main(argv=None):
    """Parse the `npdlrm train` flags, train over MPI's world; returns the exit code."""
    from ..cli.train_flags import parse_train_args
    argv = sys.argv[1:] if argv is None else list(argv)
    comm = world()
    try:
        args = parse_train_args(argv)
        if args.mlperf_grad_accum_iter > 1:
            raise ValueError(f"--mlperf-grad-accum-iter {args.mlperf_grad_accum_iter}: "
                             f"gradient accumulation runs in one process only, not under MPI")
    except ValueError as e:  # the same flags on every rank: every rank refuses them
        if comm.rank == 0:
            print(f"npdlrm train: error: {e}", file=sys.stderr)
        return 2
    from .run import DistributedSetup, SetupError
    from ..cli.train import run
    try:
        return run(args, DistributedSetup(comm))
    except SetupError as e:  # raised on every rank alike: no abort needed
        if comm.rank == 0:
            print(f"npdlrm train: error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:  # noqa: B902 - every failure must end the whole job
        code = _report(e, comm)
        if comm.size > 1:
            sys.stdout.flush()
            sys.stderr.flush()
            time.sleep(ABORT_GRACE_S)  # mpiexec forwards the report before the abort
            comm.abort(code)
        return code


def _report(exc, comm):
    """Print the failure of this rank; returns the exit code it stands for."""
    where = f"rank {comm.rank} of {comm.size}"
    if isinstance(exc, KeyboardInterrupt):
        print(f"npdlrm train ({where}): interrupted", file=sys.stderr)
        return 130
    if isinstance(exc, FloatingPointError):
        print(f"npdlrm train ({where}): stopped: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError)):
        print(f"npdlrm train ({where}): error: {exc}", file=sys.stderr)
        return 2
    # one write: the abort that follows may cut off a report printed in pieces
    sys.stderr.write(f"npdlrm train ({where}): failed:\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return 1

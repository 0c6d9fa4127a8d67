"""Worker of tests/test_mpi_launch.py: the real launcher with a failure injected.

    mpiexec -n W python tests/mpi/fail_worker.py MODE RANK STEP STAMP -- <train flags>

MODE raise: rank RANK raises RuntimeError at its step STEP; kill: it kills itself with
SIGKILL there; hang-check: no failure. The failing rank writes the time of the failure
to STAMP first, so the test can measure how long the rest of the job took to end.
"""
import os
import signal
import sys
import time

from npdlrm.parallel import launch
from npdlrm.parallel.model import DistributedDLRM


def main():
    mode, rank, step, stamp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    flags = sys.argv[sys.argv.index("--") + 1:]
    step_fn = DistributedDLRM.train_step

    def failing_step(self, *args, **kwargs):
        if self.rank == rank and self.steps == step:
            with open(stamp, "w") as f:
                f.write(repr(time.time()))
            if mode == "raise":
                raise RuntimeError(f"injected failure at step {step}")
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        return step_fn(self, *args, **kwargs)

    DistributedDLRM.train_step = failing_step
    return launch.main(flags)


if __name__ == "__main__":
    raise SystemExit(main())

"""The one wrapper around an MPI communicator (the only file that imports mpi4py).

Arrays travel with buffer calls (Allreduce, Iallreduce, Ialltoallv, Allgatherv); pickled
calls (`*_obj`) carry small metadata only. `LocalComm` is a world of one process that
needs no MPI at all; `world()` gives MPI's world when mpi4py is there, else a LocalComm.
"""
import os

import numpy as np


def _mpi():
    from mpi4py import MPI
    return MPI


def world():
    """The world communicator: MPI.COMM_WORLD (a singleton world of 1 when not launched by
    mpiexec), or a LocalComm when mpi4py is not installed."""
    try:
        MPI = _mpi()
    except ImportError:
        return LocalComm()
    return Comm(MPI.COMM_WORLD)


def _raw(a):
    """Arrays of dtypes MPI lacks (float16) travel as their bytes' unsigned integers."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


class _Done:
    """A finished request (LocalComm's non-blocking calls complete at once)."""

    def Wait(self):
        return None


class Comm:
    """An mpi4py intracommunicator; every call is collective over it unless noted."""

    def __init__(self, mpi_comm):
        self.mpi = mpi_comm
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()

    # ---- arrays ----------------------------------------------------------------
    def allreduce(self, buf):
        """In-place sum of the contiguous array `buf` over every rank."""
        self.mpi.Allreduce(_mpi().IN_PLACE, _raw(buf))

    def iallreduce(self, buf):
        """Non-blocking in-place sum; returns a request with Wait()."""
        return self.mpi.Iallreduce(_mpi().IN_PLACE, _raw(buf))

    def ialltoallv(self, send, send_counts, send_displs, recv, recv_counts, recv_displs):
        """Non-blocking all-to-all of `send` blocks (counts/displacements in elements,
        one per rank) into `recv`; returns a request with Wait()."""
        return self.mpi.Ialltoallv([_raw(send), (send_counts, send_displs)],
                                   [_raw(recv), (recv_counts, recv_displs)])

    def allgatherv(self, send, recv, counts, displs):
        """Every rank's `send` into `recv` at displs[r] (counts in elements)."""
        self.mpi.Allgatherv(_raw(send), [_raw(recv), (counts, displs)])

    # ---- metadata (pickled, small) ----------------------------------------------
    def allgather_obj(self, obj):
        return self.mpi.allgather(obj)

    def any(self, flag):
        """True on every rank when `flag` is true on some rank."""
        buf = np.array([1 if flag else 0], np.int32)
        self.mpi.Allreduce(_mpi().IN_PLACE, buf, op=_mpi().MAX)
        return bool(buf[0])

    def barrier(self):
        self.mpi.Barrier()

    def split(self, ranks):
        """A communicator of `ranks` (in that order) for its members, None for the
        others; collective over this communicator."""
        ranks = list(ranks)
        MPI = _mpi()
        member = self.rank in ranks
        sub = self.mpi.Split(0 if member else MPI.UNDEFINED,
                             ranks.index(self.rank) if member else 0)
        return Comm(sub) if member else None

    def abort(self, code=1):
        """End every process of the job (not collective; used when a rank fails)."""
        self.mpi.Abort(code)


class LocalComm:
    """A world of one process with Comm's interface; no MPI needed."""

    rank, size = 0, 1

    def allreduce(self, buf):
        pass

    def iallreduce(self, buf):
        return _Done()

    def ialltoallv(self, send, send_counts, send_displs, recv, recv_counts, recv_displs):
        n = int(send_counts[0])
        recv.reshape(-1)[recv_displs[0]:recv_displs[0] + n] = \
            send.reshape(-1)[send_displs[0]:send_displs[0] + n]
        return _Done()

    def allgatherv(self, send, recv, counts, displs):
        recv.reshape(-1)[displs[0]:displs[0] + counts[0]] = send.reshape(-1)

    def allgather_obj(self, obj):
        return [obj]

    def any(self, flag):
        return bool(flag)

    def barrier(self):
        pass

    def split(self, ranks):
        return self if 0 in list(ranks) else None

    def abort(self, code=1):
        os._exit(code)

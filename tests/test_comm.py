"""LocalComm (a world of one, no MPI) offers Comm's interface with the same meaning."""
import inspect

import numpy as np

from npdlrm.parallel.comm import Comm, LocalComm


def public(cls):
    return {n: inspect.signature(f) for n, f in vars(cls).items()
            if callable(f) and not n.startswith("_")}


def test_same_methods_and_signatures():
    assert public(LocalComm) == public(Comm)


def test_local_calls_behave_like_a_world_of_one():
    c = LocalComm()
    send = np.arange(12, dtype=np.float16).reshape(3, 4)
    recv = np.zeros(12, np.float16)
    counts, displs = np.array([12]), np.array([0])
    c.ialltoallv(send, counts, displs, recv, counts, displs).Wait()
    assert np.array_equal(recv, send.ravel())
    out = np.zeros(5, np.float32)
    c.allgatherv(np.arange(5, dtype=np.float32), out, np.array([5]), np.array([0]))
    assert out.tolist() == [0, 1, 2, 3, 4]
    buf = np.ones(3)
    c.allreduce(buf)
    c.iallreduce(buf).Wait()
    assert buf.tolist() == [1, 1, 1]
    assert c.any(True) and not c.any(False)
    assert c.allgather_obj("x") == ["x"]
    assert c.split([0]) is c and c.split([1, 2]) is None

"""The devices the backend-parameterised tests run on, and moving test arrays between them.

    DEVICES                   the ids of the `device` fixture (tests/conftest.py)
    skip_unless_usable(dev)   skip a 'gpu' case with the reason when no GPU is usable here
                              (NPDLRM_REQUIRE_GPU=1: fail instead, e.g. on a GPU runner)
    on(dev, a)                a (or each of a list/tuple of them) on dev; None stays None;
                              on 'cpu' a NumPy array is returned itself (no copy)
    host(a)                   the same, onto the host as NumPy
    kernels_for(dev)          npdlrm.kernels.cpu or npdlrm.kernels.cuda

Inputs are made on the host with NumPy, moved with on(), the code under test runs on
the device, and results are compared on the host against tests/naive_kernels.py.
"""
import os

import pytest

from npdlrm import backend

DEVICES = ["cpu", "gpu"]


def skip_unless_usable(device):
    """Skip (or, with NPDLRM_REQUIRE_GPU=1, fail) a case on a device not usable here."""
    if device == "cpu":
        return
    reason = backend.gpu_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("NPDLRM_REQUIRE_GPU") == "1":
        pytest.fail(f"no GPU: {reason} (and NPDLRM_REQUIRE_GPU=1 is set)", pytrace=False)
    pytest.skip(f"no GPU: {reason}")


def _map(fn, a):
    if a is None:
        return None
    if isinstance(a, (list, tuple)):
        return type(a)(_map(fn, x) for x in a)
    return fn(a)


def on(device, a):
    """a on `device` (lists and tuples element by element; None stays None)."""
    return _map(lambda x: backend.to_device(x, device), a)


def host(a):
    """a as NumPy (lists and tuples element by element; None stays None)."""
    return _map(backend.to_host, a)


def kernels_for(device):
    """The kernel home of `device`: npdlrm.kernels.cpu (Numba) or npdlrm.kernels.cuda."""
    if backend.check_device(device) == "gpu":
        from npdlrm.kernels import cuda
        return cuda
    from npdlrm.kernels import cpu
    return cpu

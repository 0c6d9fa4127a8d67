"""The segment sums of the CUDA embedding backward (kernels/cuda/embedding_segments.py), run
on the CPU by tests/cuda_emulator.py: long segments (one very hot row, as Criteo's small
tables give at large batches) and segments of every length modulo the unroll by 8 are
bitwise the kernels.cpu results, for the gradient and each sparse optimizer."""
import os
import re

import numpy as np
import pytest

from cuda_emulator import emulated
from npdlrm.kernels import cpu
from npdlrm.kernels.cuda import _module, embedding_bag, embedding_segments, embedding_update

D = 6
OPTS = ["sgd", "adagrad", "rwsadagrad"]


@pytest.fixture
def emu(monkeypatch):
    emulated(monkeypatch)


def _hot_bags(rng, B, V, hot, share):
    """(indices, offsets (B + 1,)): bags of 2..6 positions, ``share`` of them row ``hot``
    (so in most bags, some twice), the rest spread over the other rows."""
    n = rng.integers(2, 7, size=B)
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    nnz = int(offsets[-1])
    indices = rng.integers(0, V, size=nnz).astype(np.int64)
    indices[rng.random(nnz) < share] = hot
    return indices, offsets


def _every_length(rng, B, lengths):
    """(indices, offsets (B + 1,)): row r appears exactly lengths[r] times, at shuffled
    positions spread over B bags (some empty)."""
    indices = rng.permutation(np.repeat(np.arange(len(lengths)), lengths)).astype(np.int64)
    cuts = np.sort(rng.integers(0, indices.shape[0] + 1, size=B - 1))
    offsets = np.concatenate([[0], cuts, [indices.shape[0]]]).astype(np.int64)
    return indices, offsets


def _state(rng, kind, V, dt):
    if kind == "sgd":
        return None
    return rng.random((V, D) if kind == "adagrad" else V).astype(dt)


def _step(mod, kind, w, s, dout, indices, offsets, psw, mean):
    if kind == "sgd":
        mod.embedding_sgd_update(w, dout, indices, offsets, psw, mean, 0.05)
    elif kind == "adagrad":
        mod.embedding_adagrad_update(w, s, dout, indices, offsets, psw, mean, 0.05, 1e-8)
    else:
        mod.embedding_rowwise_adagrad_update(w, s, dout, indices, offsets, psw, mean, 0.05,
                                             1e-8)


def _check_update(kind, dt, indices, offsets, psw, mean, V, seed):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(seed)
    B = offsets.shape[0] - 1
    w = rng.standard_normal((V, D)).astype(dt)
    s = _state(rng, kind, V, dt)
    dout = rng.standard_normal((B, D)).astype(dt)
    w_cpu, s_cpu = w.copy(), None if s is None else s.copy()
    w0 = w.copy()
    _step(cpu, kind, w_cpu, s_cpu, dout, indices, offsets, psw, mean)
    _step(cuda, kind, w, s, dout, indices, offsets, psw, mean)
    np.testing.assert_array_equal(w, w_cpu)
    if s is not None:
        np.testing.assert_array_equal(s, s_cpu)
    touched = np.unique(indices)
    assert not np.array_equal(w[touched], w0[touched])


def _check_grad(dt, indices, offsets, psw, mean, V, seed):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(seed)
    dout = rng.standard_normal((offsets.shape[0] - 1, D)).astype(dt)
    want_rows, want_vals = cpu.embedding_bag_grad(dout, indices, offsets, psw, mean, V)
    rows, vals = cuda.embedding_bag_grad(dout, indices, offsets, psw, mean, V)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(vals, want_vals)


@pytest.mark.parametrize("kind", OPTS + ["grad"])
@pytest.mark.parametrize("mean", [False, True], ids=["sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
def test_one_very_hot_row_float32(emu, kind, mean, weighted):
    rng = np.random.default_rng(11)
    V, hot = 4, 2
    indices, offsets = _hot_bags(rng, 1000, V, hot, 0.85)
    assert (indices == hot).sum() >= 3000  # one segment of thousands of occurrences
    psw = rng.standard_normal(indices.shape[0]).astype(np.float32) if weighted else None
    if kind == "grad":
        _check_grad(np.float32, indices, offsets, psw, mean, V, 12)
    else:
        _check_update(kind, np.float32, indices, offsets, psw, mean, V, 12)


@pytest.mark.parametrize("kind", OPTS + ["grad"])
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["float32", "float64"])
def test_segments_of_every_length(emu, kind, dt):
    """Rows with 1..26 occurrences: every remainder of the unroll by 8, 0..3 full steps."""
    rng = np.random.default_rng(13)
    lengths = np.arange(1, 27)
    indices, offsets = _every_length(rng, 40, lengths)
    psw = rng.standard_normal(indices.shape[0])
    V = len(lengths) + 3  # three rows never looked up
    if kind == "grad":
        _check_grad(dt, indices, offsets, psw, True, V, 14)
    else:
        _check_update(kind, dt, indices, offsets, psw, True, V, 14)


@pytest.mark.parametrize("kind", OPTS)
def test_bags_update_with_a_hot_row_per_table(emu, kind):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(15)
    B, sizes = 600, (3, 50, 4)
    idx, offs, start = [], [], 0
    for V in sizes:
        i, o = _hot_bags(rng, B, V, V - 1, 0.8)
        idx.append(i)
        offs.append(o + start)
        start += i.shape[0]
    indices, offsets = np.concatenate(idx), np.stack(offs)
    psw = rng.random(indices.shape[0]).astype(np.float32)
    weights = [rng.standard_normal((V, D)).astype(np.float32) for V in sizes]
    states = [_state(rng, kind, V, np.float32) for V in sizes]
    dout = rng.standard_normal((B, len(sizes), D)).astype(np.float32)
    w_cpu = [w.copy() for w in weights]
    s_cpu = [None if s is None else s.copy() for s in states]
    cpu.embedding_bags_update(kind, w_cpu, s_cpu, dout, indices, offsets, psw, True, 0.05,
                              1e-8)
    cuda.embedding_bags_update(kind, weights, states, dout, indices, offsets, psw, True, 0.05,
                               1e-8)
    for t in range(len(sizes)):
        np.testing.assert_array_equal(weights[t], w_cpu[t])
        if states[t] is not None:
            np.testing.assert_array_equal(states[t], s_cpu[t])


def test_segment_layout(emu):
    """sstart numbers the segments in row order (nnz past the last); the sorted arrays hold
    each occurrence's row, dout offset and coefficient in position order."""
    keys = np.array([0 * 5 + 3, 1 * 5 + 1, 1 * 5 + 4, 4 * 5 + 0, 4 * 5 + 2], np.int64)
    doff = np.array([10, 11, 12, 13, 14], np.int64)  # by position
    coef = np.array([0.0, 0.1, 0.2, 0.3, 0.4], np.float32)
    seg = embedding_segments.segments(np, keys, doff, coef, 9)
    assert seg.nb == 5
    assert seg.sstart.tolist() == [0, 1, 3, 5, 5, 5]
    assert seg.count[-1] == 3
    assert seg.srow.tolist() == [0, 1, 1, 4, 4]
    assert seg.sdoff.tolist() == [13, 11, 14, 10, 12]
    np.testing.assert_array_equal(seg.scoef, coef[[3, 1, 4, 0, 2]])


def test_sources_compile_with_nvrtc_without_fma():
    from npdlrm.backend import nvrtc_module
    if nvrtc_module() is None:
        if os.environ.get("NPDLRM_REQUIRE_NVRTC") == "1":
            pytest.fail("NVRTC is missing and NPDLRM_REQUIRE_NVRTC=1")
        pytest.skip("NVRTC is not installed (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)")
    for mod in (embedding_segments, embedding_bag, embedding_update):
        ptx = _module.compile_to_ptx(mod.SOURCE, "segments.cu")
        for k in re.findall(r'extern "C" __global__ void (npdlrm_\w+)\(', mod.SOURCE):
            assert f".entry {k}(" in ptx
        assert "fma." not in ptx  # the segment sums round each product and each add

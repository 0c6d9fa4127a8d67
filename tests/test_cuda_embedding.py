"""The CUDA embedding kernels (kernels/cuda/embedding_bag*.py, embedding_update.py), run on
the CPU by tests/cuda_emulator.py: each is bitwise equal to its kernels.cpu twin (float32
and float64, sum and mean, with and without per-sample weights, empty bags, rows repeated
within and across bags, strided out/dout views, several tables of different sizes), and
every CUDA source compiles with NVRTC (skipped without NVRTC unless
NPDLRM_REQUIRE_NVRTC=1)."""
import inspect
import os
import re

import numpy as np
import pytest

import naive_kernels as naive
from cuda_emulator import emulated
from npdlrm.kernels import cpu
from npdlrm.kernels.cuda import _module, embedding_bag, embedding_bags, embedding_update

D = 5
CASES = [(dt, mean, weighted) for dt in (np.float32, np.float64) for mean in (False, True)
         for weighted in (False, True)]
IDS = [f"{np.dtype(dt).name}-{'mean' if m else 'sum'}-{'w' if w else 'now'}"
       for dt, m, w in CASES]
FUNCS = ["embedding_bag_forward", "embedding_bag_grad", "embedding_sgd_update",
         "embedding_adagrad_update", "embedding_rowwise_adagrad_update",
         "embedding_bags_forward", "embedding_bags_update"]


def _lengths(rng, B):
    """Bag lengths 0..4: bag 1 empty, bag 2 of length 4, bag 3 of length 2."""
    n = rng.integers(0, 5, size=B)
    n[1] = 0
    n[2] = 4
    n[3] = 2
    return n


def _bags(rng, B, V, weighted):
    """(indices int64, offsets (B + 1,), psw float64 or None); few rows, so rows repeat
    within and across bags."""
    n = _lengths(rng, B)
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    indices = rng.integers(0, V, size=int(offsets[-1])).astype(np.int64)
    indices[offsets[2]:offsets[2] + 2] = 0  # a row twice in one bag ...
    indices[offsets[3]] = 0  # ... and in another
    psw = rng.standard_normal(indices.shape[0]) if weighted else None
    return indices, offsets, psw


def _packed(rng, B, sizes, weighted, gap=0):
    """Packed bags of len(sizes) tables: (indices, offsets (T, B + 1), psw); ``gap``
    positions in no bag before each table."""
    idx, offs, start = [], [], 0
    for V in sizes:
        i, o, _ = _bags(rng, B, V, False)
        idx.append(np.concatenate([rng.integers(0, V, size=gap), i]))
        offs.append(o + start + gap)
        start += gap + i.shape[0]
    indices = np.concatenate(idx)
    psw = rng.standard_normal(indices.shape[0]) if weighted else None
    return indices, np.stack(offs), psw


def _strided(rng, shape, dtype, reverse=False):
    """A random array of ``shape`` as a non-contiguous view: rows padded (the kernels take
    it as it is), and with ``reverse`` the last axis reversed (copied first)."""
    big = rng.standard_normal(shape[:-1] + (shape[-1] + 3,)).astype(dtype)
    return big[..., shape[-1] - 1::-1] if reverse else big[..., 1:shape[-1] + 1]


@pytest.fixture
def emu(monkeypatch):
    emulated(monkeypatch)


def test_signatures_match_cpu():
    from npdlrm.kernels import cuda
    for name in FUNCS:
        assert inspect.signature(getattr(cuda, name)) == inspect.signature(getattr(cpu, name))


@pytest.mark.parametrize("name", ["embedding_bag", "embedding_update", "embedding_bags"])
def test_source_compiles_with_nvrtc(name):
    from npdlrm.backend import nvrtc_module
    if nvrtc_module() is None:
        if os.environ.get("NPDLRM_REQUIRE_NVRTC") == "1":
            pytest.fail("NVRTC is missing and NPDLRM_REQUIRE_NVRTC=1")
        pytest.skip("NVRTC is not installed (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)")
    src = {"embedding_bag": embedding_bag, "embedding_update": embedding_update,
           "embedding_bags": embedding_bags}[name].SOURCE
    ptx = _module.compile_to_ptx(src, f"{name}.cu")
    text = ptx.decode() if isinstance(ptx, bytes) else ptx
    kernels = re.findall(r'extern "C" __global__ void (npdlrm_\w+)\(', src)
    assert len(kernels) >= 2 and {k[-4:] for k in kernels} == {"_f32", "_f64"}
    for k in kernels:
        assert f".entry {k}(" in text
    assert "fma." not in text  # --fmad=false: no contracted multiply-adds


@pytest.mark.parametrize("dt,mean,weighted", CASES, ids=IDS)
def test_forward_bitwise(emu, dt, mean, weighted):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(1)
    B, V = 9, 6
    indices, offsets, psw = _bags(rng, B, V, weighted)
    weight = rng.standard_normal((V, D)).astype(dt)
    want = np.empty((B, D), dt)
    cpu.embedding_bag_forward(want, weight, indices, offsets, psw, mean)
    out = _strided(rng, (B, D), dt, reverse=True)
    cuda.embedding_bag_forward(out, weight, indices.astype(np.int32), offsets, psw, mean)
    np.testing.assert_array_equal(out, want)
    assert not out[1].any()  # the empty bag
    np.testing.assert_allclose(out, naive.embedding_bag_forward(weight, indices, offsets,
                                                                psw, mean),
                               rtol=1e-5 if dt == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("dt,mean,weighted", CASES, ids=IDS)
def test_bags_forward_bitwise(emu, dt, mean, weighted):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(2)
    B, sizes = 7, (3, 11, 5)
    indices, offsets, psw = _packed(rng, B, sizes, weighted)
    weights = [rng.standard_normal((V, D)).astype(dt) for V in sizes]
    want = np.empty((B, len(sizes), D), dt)
    cpu.embedding_bags_forward(want, weights, indices, offsets, psw, mean)
    # (B, T, D) as a view of a (T, B, D + 3) buffer
    out = _strided(rng, (len(sizes), B, D), dt).transpose(1, 0, 2)
    cuda.embedding_bags_forward(out, weights, indices, offsets, psw, mean)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dt,mean,weighted", CASES, ids=IDS)
def test_grad_bitwise(emu, dt, mean, weighted):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(3)
    B, V = 9, 6
    indices, offsets, psw = _bags(rng, B, V, weighted)
    dout = _strided(rng, (B, D), dt)
    want_rows, want_vals = cpu.embedding_bag_grad(dout, indices, offsets, psw, mean, V)
    rows, vals = cuda.embedding_bag_grad(dout, indices, offsets, psw, mean, V)
    assert rows.dtype == np.int64 and vals.dtype == dt
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(vals, want_vals)
    nrows, nvals = naive.embedding_bag_grad(dout, indices, offsets, psw, mean, V)
    np.testing.assert_array_equal(rows, nrows)
    np.testing.assert_allclose(vals, nvals, rtol=1e-5 if dt == np.float32 else 1e-12,
                               atol=1e-6)


def test_grad_rejects_out_of_range_rows(emu):
    from npdlrm.kernels import cuda
    offsets = np.array([0, 2], np.int64)
    with pytest.raises(ValueError, match="indices"):
        cuda.embedding_bag_grad(np.ones((1, D)), np.array([0, 4]), offsets, None, False, 4)


def _tables(rng, sizes, dt, kind):
    weights = [rng.standard_normal((V, D)).astype(dt) for V in sizes]
    if kind == "sgd":
        states = [None] * len(sizes)
    elif kind == "adagrad":
        states = [rng.random((V, D)).astype(dt) for V in sizes]
    else:
        states = [rng.random(V).astype(dt) for V in sizes]
    return weights, states


def _copy(arrays):
    return [None if a is None else a.copy() for a in arrays]


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rwsadagrad"])
@pytest.mark.parametrize("dt,mean,weighted", CASES, ids=IDS)
def test_update_bitwise(emu, kind, dt, mean, weighted):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(4)
    B, V = 9, 6
    indices, offsets, psw = _bags(rng, B, V, weighted)
    (w,), (s,) = _tables(rng, (V,), dt, kind)
    dout = _strided(rng, (B, D), dt, reverse=True)
    w_cpu, s_cpu = w.copy(), None if s is None else s.copy()
    untouched = np.setdiff1d(np.arange(V), indices)
    w0 = w.copy()
    if kind == "sgd":
        cpu.embedding_sgd_update(w_cpu, dout, indices, offsets, psw, mean, 0.1)
        cuda.embedding_sgd_update(w, dout, indices, offsets, psw, mean, 0.1)
    elif kind == "adagrad":
        cpu.embedding_adagrad_update(w_cpu, s_cpu, dout, indices, offsets, psw, mean, 0.1, 1e-8)
        cuda.embedding_adagrad_update(w, s, dout, indices, offsets, psw, mean, 0.1, 1e-8)
    else:
        cpu.embedding_rowwise_adagrad_update(w_cpu, s_cpu, dout, indices, offsets, psw, mean,
                                             0.1, 1e-8)
        cuda.embedding_rowwise_adagrad_update(w, s, dout, indices, offsets, psw, mean, 0.1,
                                              1e-8)
    np.testing.assert_array_equal(w, w_cpu)
    if s is not None:
        np.testing.assert_array_equal(s, s_cpu)
    np.testing.assert_array_equal(w[untouched], w0[untouched])
    assert not np.array_equal(w, w0)


def test_update_matches_naive(emu):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(5)
    B, V = 9, 6
    indices, offsets, psw = _bags(rng, B, V, True)
    dout = rng.standard_normal((B, D))
    w = rng.standard_normal((V, D))
    s = rng.random((V, D))
    rows, g = naive.embedding_bag_grad(dout, indices, offsets, psw, True, V)
    w_ref, s_ref = w.copy(), s.copy()
    naive.adagrad_apply(w_ref, s_ref, rows, g, 0.1, 1e-8)
    cuda.embedding_adagrad_update(w, s, dout, indices, offsets, psw, True, 0.1, 1e-8)
    np.testing.assert_allclose(w, w_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s, s_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rwsadagrad"])
@pytest.mark.parametrize("dt,mean,weighted", CASES, ids=IDS)
def test_bags_update_bitwise(emu, kind, dt, mean, weighted):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(6)
    B, sizes = 7, (3, 11, 5)
    indices, offsets, psw = _packed(rng, B, sizes, weighted)
    weights, states = _tables(rng, sizes, dt, kind)
    dout = _strided(rng, (len(sizes), B, D), dt).transpose(1, 0, 2)
    w_cpu, s_cpu = _copy(weights), _copy(states)
    cpu.embedding_bags_update(kind, w_cpu, s_cpu, dout, indices, offsets, psw, mean, 0.05,
                              1e-6)
    cuda.embedding_bags_update(kind, weights, states, dout, indices, offsets, psw, mean, 0.05,
                               1e-6)
    for t in range(len(sizes)):
        np.testing.assert_array_equal(weights[t], w_cpu[t])
        if states[t] is not None:
            np.testing.assert_array_equal(states[t], s_cpu[t])


def test_bags_update_checks_before_changing_state(emu):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(7)
    B, sizes = 4, (3, 5)
    indices, offsets, _ = _packed(rng, B, sizes, False)
    weights, states = _tables(rng, sizes, np.float32, "adagrad")
    before = _copy(weights)
    dout = np.ones((B, 2, D), np.float32)
    with pytest.raises(ValueError, match="sgd, adagrad or rwsadagrad"):
        cuda.embedding_bags_update("adam", weights, states, dout, indices, offsets, None,
                                   False, 0.1, 1e-8)
    bad = [states[0], states[1][:, :2].copy()]
    with pytest.raises(ValueError, match=r"states\[1\]"):
        cuda.embedding_bags_update("adagrad", weights, bad, dout, indices, offsets, None,
                                   False, 0.1, 1e-8)
    for w, w0 in zip(weights, before):
        np.testing.assert_array_equal(w, w0)


def test_key_range_is_checked():
    with pytest.raises(ValueError, match="int64"):
        embedding_bag.check_key_range(1 << 40, 1 << 23)
    embedding_bag.check_key_range(1 << 30, 1 << 20)


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rwsadagrad"])
def test_bags_positions_in_no_bag_are_ignored(emu, kind):
    from npdlrm.kernels import cuda
    rng = np.random.default_rng(8)
    B, sizes = 5, (4, 7)
    indices, offsets, psw = _packed(rng, B, sizes, True, gap=2)
    weights, states = _tables(rng, sizes, np.float32, kind)
    want = np.empty((B, 2, D), np.float32)
    cpu.embedding_bags_forward(want, weights, indices, offsets, psw, True)
    out = np.empty((B, 2, D), np.float32)
    cuda.embedding_bags_forward(out, weights, indices, offsets, psw, True)
    np.testing.assert_array_equal(out, want)
    dout = rng.standard_normal((B, 2, D)).astype(np.float32)
    w_cpu, s_cpu = _copy(weights), _copy(states)
    cpu.embedding_bags_update(kind, w_cpu, s_cpu, dout, indices, offsets, psw, True, 0.1, 1e-8)
    cuda.embedding_bags_update(kind, weights, states, dout, indices, offsets, psw, True, 0.1,
                               1e-8)
    for t in range(2):
        np.testing.assert_array_equal(weights[t], w_cpu[t])


def test_all_bags_empty(emu):
    from npdlrm.kernels import cuda
    B, V = 3, 4
    indices, offsets = np.empty(0, np.int64), np.zeros(B + 1, np.int64)
    w = np.ones((V, D), np.float32)
    out = np.full((B, D), 7, np.float32)
    cuda.embedding_bag_forward(out, w, indices, offsets, None, True)
    assert not out.any()
    rows, vals = cuda.embedding_bag_grad(np.ones((B, D), np.float32), indices, offsets, None,
                                         False, V)
    assert rows.shape == (0,) and vals.shape == (0, D)
    cuda.embedding_sgd_update(w, np.ones((B, D), np.float32), indices, offsets, None, False,
                              0.1)
    np.testing.assert_array_equal(w, 1)

"""The CUDA dense kernels (kernels/cuda/interaction.py, bias_relu.py), run on the CPU by
tests/cuda_emulator.py: each is bitwise equal to its kernels.cpu twin (float32 and
float64; several (B, F, D) with D = 16 and odd D, with and without self interaction;
single and many columns, NaN/inf/-0 entries; strided views) and close to the naive NumPy
kernels, and every CUDA source compiles with NVRTC (skipped without NVRTC unless
NPDLRM_REQUIRE_NVRTC=1)."""
import inspect
import os
import re

import numpy as np
import pytest

import naive_kernels as naive
from cuda_emulator import emulated
from npdlrm.kernels import cpu
from npdlrm.kernels.cuda import _module, bias_relu, interaction
from npdlrm.kernels.pairs import num_pairs

DTYPES = [np.float32, np.float64]
FUNCS = {interaction: ["dot_interaction_forward", "dot_interaction_backward"],
         bias_relu: ["bias_relu_forward", "bias_forward", "relu_bias_backward",
                     "bias_backward"]}
# (B, F, D): D = 16 (the CPU's unrolled forward), odd D, D past the CPU's 8-term blocks,
# F past 8 partners (the CPU's blocked backward), batches past the CPU's 64-sample chunk
SHAPES = [(1, 2, 1), (3, 5, 16), (7, 27, 16), (67, 4, 7), (5, 11, 19), (2, 1, 3), (0, 3, 4)]
# (B, N): single columns of several pairwise-sum tree shapes (CPU: NumPy's sum), several
# columns around the CPU's 64-row chunk, and one above its parallel threshold
COLS = [(1, 1), (7, 1), (8, 1), (129, 1), (300, 1), (1000, 1), (2048, 1), (5000, 1),
        (1, 3), (5, 3), (64, 7), (65, 7), (129, 2), (260, 520), (0, 4)]


def _tol(dt):
    return dict(rtol=1e-5, atol=1e-5) if dt == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _strided(a):
    """A non-contiguous copy of a 2-D or 3-D array (last axis reversed in a padded
    buffer)."""
    big = np.full(a.shape[:-1] + (a.shape[-1] + 3,), np.nan, a.dtype)
    v = big[..., a.shape[-1] - 1::-1]
    v[...] = a
    return v


def _special(rng, shape, dt):
    """Normal values with a few NaN, +-inf, -0.0 and +0.0 entries."""
    a = rng.standard_normal(shape).astype(dt)
    flat = a.reshape(-1)
    for k, v in zip(rng.permutation(flat.size)[:5], [np.nan, np.inf, -np.inf, -0.0, 0.0]):
        flat[k] = v
    return a


def _same(got, want):
    """Equal values, NaN where NaN, and the same sign of every zero (assert_array_equal
    alone takes -0.0 == +0.0; NaN payloads are not compared: a GPU's NaN differs)."""
    np.testing.assert_array_equal(got, want)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.signbit(got)[~nan], np.signbit(want)[~nan])


@pytest.fixture
def emu(monkeypatch):
    emulated(monkeypatch)


def test_signatures_match_cpu():
    for mod, names in FUNCS.items():
        for name in names:
            assert inspect.signature(getattr(mod, name)) == inspect.signature(getattr(cpu, name))


@pytest.mark.parametrize("mod", [interaction, bias_relu], ids=["interaction", "bias_relu"])
def test_source_compiles_with_nvrtc(mod):
    from npdlrm.backend import nvrtc_module
    if nvrtc_module() is None:
        if os.environ.get("NPDLRM_REQUIRE_NVRTC") == "1":
            pytest.fail("NVRTC is missing and NPDLRM_REQUIRE_NVRTC=1")
        pytest.skip("NVRTC is not installed (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)")
    name = mod.__name__.rsplit(".", 1)[-1]
    ptx = _module.compile_to_ptx(mod.SOURCE, f"{name}.cu")
    text = ptx.decode() if isinstance(ptx, bytes) else ptx
    kernels = re.findall(r'extern "C" __global__ void (npdlrm_\w+)\(', mod.SOURCE)
    ops = {k[:-4] for k in kernels}
    assert kernels and {k[:-4] + s for k in kernels for s in ("_f32", "_f64")} == set(kernels)
    assert len(kernels) == 2 * len(ops)
    for k in kernels:
        assert f".entry {k}(" in text
    assert "fma." not in text  # --fmad=false: no contracted multiply-adds


@pytest.mark.parametrize("s", [False, True], ids=["noself", "self"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{b}x{f}x{d}" for b, f, d in SHAPES])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_interaction_bitwise(emu, dt, shape, s):
    B, F, D = shape
    W = D + num_pairs(F, s)
    rng = np.random.default_rng(B * 100 + F * 10 + D)
    T = rng.standard_normal(shape).astype(dt)
    dout = rng.standard_normal((B, W)).astype(dt)
    want = np.full((B, W), np.nan, dt)
    cpu.dot_interaction_forward(want, T, s)
    out = np.full((B, W), np.nan, dt)
    interaction.dot_interaction_forward(out, T, s)
    _same(out, want)
    np.testing.assert_allclose(out, naive.dot_interaction_forward(T, s), **_tol(dt))
    want = np.full(shape, np.nan, dt)
    cpu.dot_interaction_backward(want, dout, T, s)
    dT = np.full(shape, np.nan, dt)
    interaction.dot_interaction_backward(dT, dout, T, s)
    _same(dT, want)
    np.testing.assert_allclose(dT, naive.dot_interaction_backward(dout, T, s), **_tol(dt))


@pytest.mark.parametrize("s", [False, True], ids=["noself", "self"])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_interaction_strided_and_special_values(emu, dt, s):
    """Strided views give the CPU's results on contiguous copies; NaN/inf/-0 inputs give
    the same bits (the order of the terms decides inf - inf, -0 + 0, ...)."""
    B, F, D = 9, 6, 16
    W = D + num_pairs(F, s)
    rng = np.random.default_rng(11)
    T = _special(rng, (B, F, D), dt)
    dout = _special(rng, (B, W), dt)
    want = np.empty((B, W), dt)
    cpu.dot_interaction_forward(want, T, s)
    out = _strided(np.zeros((B, W), dt))
    interaction.dot_interaction_forward(out, _strided(T), s)
    _same(out, want)
    want = np.empty((B, F, D), dt)
    cpu.dot_interaction_backward(want, dout, T, s)
    dT = _strided(np.zeros((B, F, D), dt))
    interaction.dot_interaction_backward(dT, _strided(dout), _strided(T), s)
    _same(dT, want)


@pytest.mark.parametrize("shape", COLS, ids=[f"{b}x{n}" for b, n in COLS])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_bias_bitwise(emu, dt, shape):
    B, N = shape
    rng = np.random.default_rng(B * 1000 + N)
    y0 = _special(rng, shape, dt) if B * N >= 5 else rng.standard_normal(shape).astype(dt)
    bias = rng.standard_normal(N).astype(dt)
    for name in ("bias_relu_forward", "bias_forward"):
        want, y = y0.copy(), y0.copy()
        getattr(cpu, name)(want, bias)
        getattr(bias_relu, name)(y, bias)
        _same(y, want)
    y = y0.copy()
    cpu.bias_relu_forward(y, bias)
    np.testing.assert_array_equal(y, naive.bias_relu_forward(y0, bias))  # values
    dy0 = _special(rng, shape, dt) if B * N >= 5 else rng.standard_normal(shape).astype(dt)
    db0 = rng.standard_normal(N).astype(dt)
    want_db, want_dy = db0.copy(), dy0.copy()
    cpu.relu_bias_backward(want_db, want_dy, y)
    db, dy = db0.copy(), dy0.copy()
    bias_relu.relu_bias_backward(db, dy, y)
    _same(dy, want_dy)
    _same(db, want_db)
    want_db, want_dy = db0.copy(), dy0.copy()
    cpu.bias_backward(want_db, want_dy)
    db, dy = db0.copy(), dy0.copy()
    bias_relu.bias_backward(db, dy)
    _same(dy, dy0)
    _same(db, want_db)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_bias_matches_naive_and_strided(emu, dt):
    """Finite values: close to the naive kernels; strided views give the contiguous bits."""
    rng = np.random.default_rng(5)
    B, N = 70, 9
    y0 = rng.standard_normal((B, N)).astype(dt)
    bias = rng.standard_normal(N).astype(dt)
    want = y0.copy()
    bias_relu.bias_relu_forward(want, bias)
    np.testing.assert_array_equal(want, naive.bias_relu_forward(y0, bias))
    y = _strided(y0)
    bias_relu.bias_relu_forward(y, bias[::-1].copy()[::-1])
    _same(y, want)
    dy0 = rng.standard_normal((B, N)).astype(dt)
    db0 = rng.standard_normal(N).astype(dt)
    want_db, want_dy = naive.relu_bias_backward(db0, dy0, want)
    db, dy = db0.copy(), dy0.copy()
    bias_relu.relu_bias_backward(db, dy, want)
    _same(dy, want_dy)
    np.testing.assert_allclose(db, want_db, **_tol(dt))
    db2, dy2 = _strided(db0[None])[0], _strided(dy0)
    bias_relu.relu_bias_backward(db2, dy2, _strided(want))
    _same(dy2, dy)
    _same(db2, db)
    for n in (1, N):  # the pairwise single column and the chunked sums, strided
        db, dy = db0[:n].copy(), dy0[:, :n]
        bias_relu.bias_backward(db, dy)
        np.testing.assert_allclose(db, db0[:n] + dy.sum(axis=0, dtype=np.float64), **_tol(dt))
        want_db = db0[:n].copy()
        cpu.bias_backward(want_db, np.ascontiguousarray(dy))
        _same(db, want_db)


def test_mixed_dtypes_are_refused(emu):
    T = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="one dtype"):
        interaction.dot_interaction_forward(np.zeros((2, 7), np.float64), T, False)
    with pytest.raises(TypeError, match="float32 or float64"):
        bias_relu.bias_forward(np.zeros((2, 3), np.float16), np.zeros(3, np.float16))


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_signed_zeros(emu, dt):
    """Sums of zeros: dbias = -0.0 plus columns of -0.0 gives the CPU's sign (+0 through
    NumPy's 0 + sum, -0 through the chunked sum); the interaction of +-0.0 inputs too."""
    for B, N in [(3, 1), (200, 1), (3, 2), (200, 3)]:
        dy = np.full((B, N), -0.0, dt)
        for relu in (False, True):
            want_db, want_dy = np.full(N, -0.0, dt), dy.copy()
            db, d = want_db.copy(), dy.copy()
            if relu:
                cpu.relu_bias_backward(want_db, want_dy, np.ones((B, N), dt))
                bias_relu.relu_bias_backward(db, d, np.ones((B, N), dt))
            else:
                cpu.bias_backward(want_db, want_dy)
                bias_relu.bias_backward(db, d)
            _same(d, want_dy)
            _same(db, want_db)
    for s in (False, True):
        T = np.zeros((3, 4, 5), dt)
        T[:, 1::2] = -0.0  # products of -0.0 and +0.0: -0.0
        dout = np.zeros((3, 5 + num_pairs(4, s)), dt)
        dout[:, 1::2] = -0.0
        want, out = np.empty(dout.shape, dt), np.empty(dout.shape, dt)
        cpu.dot_interaction_forward(want, T, s)
        interaction.dot_interaction_forward(out, T, s)
        _same(out, want)
        want, dT = np.empty(T.shape, dt), np.empty(T.shape, dt)
        cpu.dot_interaction_backward(want, dout, T, s)
        interaction.dot_interaction_backward(dT, dout, T, s)
        _same(dT, want)

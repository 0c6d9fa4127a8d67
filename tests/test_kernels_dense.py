"""Tests of the dense kernels (dot interaction, bias + ReLU) against the naive references
in naive_kernels.py, on each kernel home (tests/devices.py), as in test_kernels.py."""
import os
import sys

import numpy as np
import pytest
from devices import host, kernels_for, on
from test_kernels import dtype_params, same_bits, tol

from npdlrm import kernels
from npdlrm.kernels.cpu import bias_relu as br_mod
from npdlrm.kernels.cpu import interaction as it_mod

sys.path.insert(0, os.path.dirname(__file__))
import naive_kernels as naive  # noqa: E402

# ----------------------------------------------------------------------------
# dot interaction
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("F", [2, 3, 27])
@pytest.mark.parametrize("self_interaction", [False, True])
def test_pair_indices(F, self_interaction):
    li, lj = kernels.pair_indices(F, self_interaction)
    ri, rj = naive.pair_indices(F, self_interaction)
    assert li.dtype == np.int64 and lj.dtype == np.int64
    assert np.array_equal(li, ri) and np.array_equal(lj, rj)
    if self_interaction:
        assert list(zip(li[:4], lj[:4])) == [(0, 0), (1, 0), (1, 1), (2, 0)][:len(li)]
    else:
        assert list(zip(li[:3], lj[:3])) == [(1, 0), (2, 0), (2, 1)][:len(li)]


INTER_SHAPES = [(1, 2, 4), (5, 2, 16), (7, 27, 16), (3, 5, 3), (200, 27, 16), (2100, 2, 8)]


def uses_parallel(B, F, D, self_interaction):
    work = B * it_mod.num_pairs(F, self_interaction) * D
    return B > it_mod.BATCH_CHUNK and work >= it_mod.PARALLEL_MIN_WORK


def test_interaction_shapes_cover_both_paths():
    paths = {uses_parallel(*shp, False) for shp in INTER_SHAPES}
    assert paths == {False, True}


@pytest.mark.parametrize("shape", INTER_SHAPES)
@pytest.mark.parametrize("self_interaction", [False, True])
@dtype_params
def test_dot_interaction(device, shape, self_interaction, fdtype):
    k = kernels_for(device)
    B, F, D = shape
    rng = np.random.default_rng(3)
    T = rng.standard_normal((B, F, D)).astype(fdtype)
    P = it_mod.num_pairs(F, self_interaction)
    out = on(device, np.full((B, D + P), np.nan, fdtype))
    k.dot_interaction_forward(out, on(device, T), self_interaction)
    out = host(out)
    np.testing.assert_allclose(out, naive.dot_interaction_forward(T, self_interaction),
                               **tol(fdtype))
    assert same_bits(out[:, :D], T[:, 0, :])
    dout = rng.standard_normal((B, D + P)).astype(fdtype)
    dT = on(device, np.full((B, F, D), np.nan, fdtype))
    k.dot_interaction_backward(dT, *on(device, (dout, T)), self_interaction)
    np.testing.assert_allclose(host(dT),
                               naive.dot_interaction_backward(dout, T, self_interaction),
                               **tol(fdtype))


@pytest.mark.parametrize("self_interaction", [False, True])
def test_dot_interaction_gradient_check(device, self_interaction):
    # f(T) = sum(dout * fwd(T)) is quadratic: central differences are exact
    k = kernels_for(device)
    rng = np.random.default_rng(4)
    B, F, D = 3, 4, 5
    T = rng.standard_normal((B, F, D))
    Vd = rng.standard_normal((B, F, D))
    P = it_mod.num_pairs(F, self_interaction)
    dout = rng.standard_normal((B, D + P))

    def f(X):
        out = on(device, np.empty((B, D + P)))
        k.dot_interaction_forward(out, on(device, np.ascontiguousarray(X)), self_interaction)
        return np.sum(host(out) * dout)

    h = 1e-3
    num = (f(T + h * Vd) - f(T - h * Vd)) / (2 * h)
    dT = on(device, np.empty_like(T))
    k.dot_interaction_backward(dT, *on(device, (dout, T)), self_interaction)
    dT = host(dT)
    assert abs(num - np.sum(dT * Vd)) < 1e-9 * max(1.0, abs(num))


# ----------------------------------------------------------------------------
# bias + relu
# ----------------------------------------------------------------------------
BIAS_SHAPES = [(3, 5), (128, 16), (130, 1), (2048, 64), (1000, 77)]


def test_bias_shapes_cover_both_paths():
    works = [b * n for b, n in BIAS_SHAPES]
    assert min(works) < br_mod.PARALLEL_MIN_WORK <= max(works)


@pytest.mark.parametrize("shape", BIAS_SHAPES)
@dtype_params
def test_bias_relu(device, shape, fdtype):
    k = kernels_for(device)
    rng = np.random.default_rng(5)
    y = rng.standard_normal(shape).astype(fdtype)
    bias = rng.standard_normal(shape[1]).astype(fdtype)
    ref = naive.bias_relu_forward(y, bias)
    yr = on(device, y.copy())
    k.bias_relu_forward(yr, on(device, bias))
    yr = host(yr)
    assert same_bits(yr, ref)  # elementwise: exact
    yb = on(device, y.copy())
    k.bias_forward(yb, on(device, bias))
    assert same_bits(host(yb), y + bias)

    dy = rng.standard_normal(shape).astype(fdtype)
    dbias = rng.standard_normal(shape[1]).astype(fdtype)
    dbias_ref, dy_ref = naive.relu_bias_backward(dbias, dy, yr)
    d1, g1 = on(device, (dbias.copy(), dy.copy()))
    k.relu_bias_backward(d1, g1, on(device, yr))
    d1, g1 = host((d1, g1))
    assert np.array_equal(g1, dy_ref)
    np.testing.assert_allclose(d1, dbias_ref, **tol(fdtype))
    d2 = on(device, dbias.copy())
    k.bias_backward(d2, on(device, dy))
    np.testing.assert_allclose(host(d2), dbias + dy.sum(axis=0, dtype=np.float64).astype(fdtype),
                               **tol(fdtype))


@pytest.mark.parametrize("N", [5, 1200])  # serial and parallel paths
@dtype_params
def test_bias_relu_non_finite(device, N, fdtype):
    # NaN propagates like np.maximum; inf - inf = NaN too; masked grads are +0
    k = kernels_for(device)
    y = np.tile(np.array([[np.inf, np.nan, -np.inf, 1.0, -1.0]], fdtype), (60, N // 5))
    bias = np.tile(np.array([-np.inf, 0.0, 1.0, np.inf, 0.5], fdtype), N // 5)
    with np.errstate(invalid="ignore"):
        ref = np.maximum(y + bias, 0)
    yr = on(device, y.copy())
    k.bias_relu_forward(yr, on(device, bias))
    np.testing.assert_array_equal(host(yr), ref)
    dy = on(device, np.full(y.shape, np.nan, fdtype))
    db = on(device, np.zeros(N, fdtype))
    k.relu_bias_backward(db, dy, yr)
    dy, yr = host((dy, yr))
    assert np.array_equal(dy == 0, ~(yr > 0)) and np.all(np.signbit(dy[dy == 0]) == 0)

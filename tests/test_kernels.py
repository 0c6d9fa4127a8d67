"""Tests of the Numba kernels against the naive references in naive_kernels.py."""
import os
import sys

import numba
import numpy as np
import pytest

from npdlrm import kernels
from npdlrm.kernels import bias_relu as br_mod
from npdlrm.kernels import embedding_bag as eb_mod
from npdlrm.kernels import embedding_update as eu_mod
from npdlrm.kernels import interaction as it_mod

sys.path.insert(0, os.path.dirname(__file__))
import naive_kernels as naive  # noqa: E402

FLOATS = [np.float32, np.float64]
INTS = [np.int32, np.int64]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def same_bits(a, b):
    """Bitwise equality (NaN-safe, -0 != +0)."""
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------
# bag fixtures
# ----------------------------------------------------------------------------
# name -> (bag lengths, V, D).  Small V forces duplicates within and across bags.
CASES = {
    "mixed": ([0, 3, 1, 0, 4, 2, 0, 5, 0], 5, 3),
    "all_empty": ([0, 0, 0, 0], 6, 4),
    "no_bags": ([], 6, 4),
    "ones": ([1, 1, 1, 1, 1, 1], 4, 8),
    "parallel": (None, 300, 32),  # B=700 random lengths 0..6: nnz * D above threshold
}


def make_bags(name, fdtype, idtype, weighted, seed=0):
    lens, V, D = CASES[name]
    rng = np.random.default_rng(seed)
    if lens is None:
        lens = rng.integers(0, 7, size=700)
        lens[:3] = 0
        lens[-2:] = 0
    lens = np.asarray(lens, np.int64)
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    nnz = int(offsets[-1])
    indices = rng.integers(0, V, size=nnz).astype(idtype)
    if name == "mixed":
        indices[offsets[1]:offsets[1] + 2] = 2  # duplicate inside one bag
    weight = rng.standard_normal((V, D)).astype(fdtype)
    psw = rng.uniform(0.5, 2.0, size=nnz).astype(fdtype) if weighted else None
    dout = rng.standard_normal((len(lens), D)).astype(fdtype)
    return weight, indices, offsets, psw, dout


def test_parallel_case_is_above_threshold():
    weight, indices, _, _, _ = make_bags("parallel", np.float32, np.int64, False)
    assert indices.shape[0] * weight.shape[1] >= eb_mod.PARALLEL_MIN_WORK
    _, indices, _, _, _ = make_bags("mixed", np.float32, np.int64, False)
    assert indices.shape[0] * 3 < eb_mod.PARALLEL_MIN_WORK


bag_params = pytest.mark.parametrize("case", list(CASES))
dtype_params = pytest.mark.parametrize("fdtype", FLOATS)
itype_params = pytest.mark.parametrize("idtype", INTS)
wm_params = pytest.mark.parametrize("weighted,mean", [(False, False), (True, False),
                                                      (False, True), (True, True)])


# ----------------------------------------------------------------------------
# embedding bag forward / grad
# ----------------------------------------------------------------------------
@bag_params
@dtype_params
@itype_params
@wm_params
def test_embedding_bag_forward(case, fdtype, idtype, weighted, mean):
    weight, indices, offsets, psw, _ = make_bags(case, fdtype, idtype, weighted)
    B, D = len(offsets) - 1, weight.shape[1]
    ref = naive.embedding_bag_forward(weight, indices, offsets, psw, mean)
    out = np.full((B, D), np.nan, fdtype)
    kernels.embedding_bag_forward(out, weight, indices, offsets, psw, mean)
    np.testing.assert_allclose(out, ref, **tol(fdtype))
    # strided output view: T[:, 1, :] of a (B, 3, D) array; neighbours untouched
    T = np.full((B, 3, D), 7.0, fdtype)
    kernels.embedding_bag_forward(T[:, 1, :], weight, indices, offsets, psw, mean)
    assert same_bits(T[:, 1, :], out)
    assert np.all(T[:, [0, 2], :] == 7.0)


@pytest.mark.parametrize("fdtype", FLOATS)
def test_embedding_bag_forward_bag_of_one_is_row(fdtype):
    weight, indices, offsets, _, _ = make_bags("ones", fdtype, np.int64, False)
    out = np.empty((len(offsets) - 1, weight.shape[1]), fdtype)
    for mean in (False, True):
        kernels.embedding_bag_forward(out, weight, indices, offsets, None, mean)
        assert same_bits(out, weight[indices])


@bag_params
@dtype_params
@itype_params
@wm_params
def test_embedding_bag_grad(case, fdtype, idtype, weighted, mean):
    weight, indices, offsets, psw, dout = make_bags(case, fdtype, idtype, weighted)
    V = weight.shape[0]
    rows_ref, vals_ref = naive.embedding_bag_grad(dout, indices, offsets, psw, mean, V)
    rows, vals = kernels.embedding_bag_grad(dout, indices, offsets, psw, mean, V)
    assert rows.dtype == np.int64 and vals.dtype == fdtype
    assert np.array_equal(rows, rows_ref)
    assert vals.shape == (len(rows), weight.shape[1])
    np.testing.assert_allclose(vals, vals_ref, **tol(fdtype))


def test_embedding_bag_grad_strided_dout():
    weight, indices, offsets, psw, dout = make_bags("mixed", np.float64, np.int64, True)
    big = np.zeros((dout.shape[0], 2, dout.shape[1]))
    big[:, 1, :] = dout
    r1, v1 = kernels.embedding_bag_grad(dout, indices, offsets, psw, True, weight.shape[0])
    r2, v2 = kernels.embedding_bag_grad(big[:, 1, :], indices, offsets, psw, True,
                                        weight.shape[0])
    assert same_bits(r1, r2) and same_bits(v1, v2)


def test_embedding_bag_grad_position_order():
    # one row repeated: its gradient is summed in increasing position order
    dout = np.array([[1.0], [1e-8], [-1.0], [1e-8]], np.float32)
    indices = np.array([3, 3, 3, 3], np.int64)
    offsets = np.arange(5, dtype=np.int64)
    rows, vals = kernels.embedding_bag_grad(dout, indices, offsets, None, False, 4)
    expect = np.float32(0)
    for x in dout[:, 0]:
        expect = np.float32(expect + x)
    assert rows.tolist() == [3] and vals[0, 0] == expect


@pytest.mark.parametrize("idtype", INTS)
@pytest.mark.parametrize("kind", ["small", "huge", "negative"])
def test_stable_argsort(idtype, kind):
    rng = np.random.default_rng(2)
    # n below / above RADIX_MIN_N: key sort / radix sort; negative: merge argsort
    for n in (0, 1, 7, 300, eb_mod.RADIX_MIN_N, 3000):
        x = rng.integers(0, 50 if n < 1000 else 5000, size=n).astype(idtype)
        if kind == "huge":
            x = x.astype(np.int64) * 2**56 if idtype == np.int64 else x * 2**18
        elif kind == "negative":
            x = x - 20
        perm, keys = eb_mod._stable_argsort(x)
        assert perm.dtype == np.int64 and keys.dtype == np.int64
        assert np.array_equal(perm, np.argsort(x, kind="stable"))
        assert np.array_equal(keys, np.sort(x))


# ----------------------------------------------------------------------------
# fused updates
# ----------------------------------------------------------------------------
OPTS = ["sgd", "adagrad", "rowwise"]
LR, EPS = 0.05, 1e-10


def make_state(opt, weight, seed=1):
    rng = np.random.default_rng(seed)
    if opt == "sgd":
        return None
    shape = weight.shape if opt == "adagrad" else weight.shape[:1]
    return rng.uniform(0.0, 0.5, size=shape).astype(weight.dtype)


def fused(opt, weight, state, dout, indices, offsets, psw, mean):
    if opt == "sgd":
        kernels.embedding_sgd_update(weight, dout, indices, offsets, psw, mean, LR)
    elif opt == "adagrad":
        kernels.embedding_adagrad_update(weight, state, dout, indices, offsets, psw,
                                         mean, LR, EPS)
    else:
        kernels.embedding_rowwise_adagrad_update(weight, state, dout, indices, offsets,
                                                 psw, mean, LR, EPS)


def apply(opt, weight, state, rows, g):
    if opt == "sgd":
        naive.sgd_apply(weight, rows, g, LR)
    elif opt == "adagrad":
        naive.adagrad_apply(weight, state, rows, g, LR, EPS)
    else:
        naive.rowwise_adagrad_apply(weight, state, rows, g, LR, EPS)


@pytest.mark.parametrize("opt", OPTS)
@bag_params
@dtype_params
@itype_params
@wm_params
def test_fused_update(opt, case, fdtype, idtype, weighted, mean):
    weight, indices, offsets, psw, dout = make_bags(case, fdtype, idtype, weighted)
    V = weight.shape[0]
    if case == "parallel":
        # add never-touched rows
        weight = np.concatenate([weight, weight[:50] + 1])
        V = weight.shape[0]
    state = make_state(opt, weight)
    w0 = weight.copy()
    s0 = None if state is None else state.copy()

    # reference: naive dense gradient, then the optimizer formula
    dense = naive.embedding_bag_dense_grad(dout, indices, offsets, psw, mean, V)
    rows_ref = np.unique(np.asarray(indices, np.int64))
    w_ref, s_ref = w0.copy(), None if s0 is None else s0.copy()
    apply(opt, w_ref, s_ref, rows_ref, dense[rows_ref])

    # bitwise reference: embedding_bag_grad, then the same formula
    rows, g = kernels.embedding_bag_grad(dout, indices, offsets, psw, mean, V)
    w_bit, s_bit = w0.copy(), None if s0 is None else s0.copy()
    apply(opt, w_bit, s_bit, rows, g)

    fused(opt, weight, state, dout, indices, offsets, psw, mean)

    np.testing.assert_allclose(weight, w_ref, **tol(fdtype))
    assert same_bits(weight, w_bit)
    untouched = np.setdiff1d(np.arange(V), rows_ref)
    assert same_bits(weight[untouched], w0[untouched])
    if state is not None:
        np.testing.assert_allclose(state, s_ref, **tol(fdtype))
        assert same_bits(state, s_bit)
        assert same_bits(state[untouched], s0[untouched])


@pytest.mark.parametrize("opt", OPTS)
def test_fused_update_mixed_dtypes(opt):
    # float32 table, float64 dout / per-sample weights: arithmetic in float32
    weight, indices, offsets, psw, dout = make_bags("mixed", np.float32, np.int32, True)
    dout64 = dout.astype(np.float64) * (1 + 1e-9)
    psw64 = psw.astype(np.float64)
    state = make_state(opt, weight)
    w_bit, s_bit = weight.copy(), None if state is None else state.copy()
    rows, g = kernels.embedding_bag_grad(dout64.astype(np.float32), indices, offsets, psw,
                                         True, weight.shape[0])
    apply(opt, w_bit, s_bit, rows, g)
    fused(opt, weight, state, dout64, indices, offsets, psw64, True)
    assert weight.dtype == np.float32
    assert same_bits(weight, w_bit)
    if state is not None:
        assert same_bits(state, s_bit)


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
def test_dot_interaction(shape, self_interaction, fdtype):
    B, F, D = shape
    rng = np.random.default_rng(3)
    T = rng.standard_normal((B, F, D)).astype(fdtype)
    P = it_mod.num_pairs(F, self_interaction)
    out = np.full((B, D + P), np.nan, fdtype)
    kernels.dot_interaction_forward(out, T, self_interaction)
    np.testing.assert_allclose(out, naive.dot_interaction_forward(T, self_interaction),
                               **tol(fdtype))
    assert same_bits(out[:, :D], T[:, 0, :])
    dout = rng.standard_normal((B, D + P)).astype(fdtype)
    dT = np.full((B, F, D), np.nan, fdtype)
    kernels.dot_interaction_backward(dT, dout, T, self_interaction)
    np.testing.assert_allclose(dT, naive.dot_interaction_backward(dout, T, self_interaction),
                               **tol(fdtype))


@pytest.mark.parametrize("self_interaction", [False, True])
def test_dot_interaction_gradient_check(self_interaction):
    # f(T) = sum(dout * fwd(T)) is quadratic: central differences are exact
    rng = np.random.default_rng(4)
    B, F, D = 3, 4, 5
    T = rng.standard_normal((B, F, D))
    Vd = rng.standard_normal((B, F, D))
    P = it_mod.num_pairs(F, self_interaction)
    dout = rng.standard_normal((B, D + P))

    def f(X):
        out = np.empty((B, D + P))
        kernels.dot_interaction_forward(out, np.ascontiguousarray(X), self_interaction)
        return np.sum(out * dout)

    h = 1e-3
    num = (f(T + h * Vd) - f(T - h * Vd)) / (2 * h)
    dT = np.empty_like(T)
    kernels.dot_interaction_backward(dT, dout, T, self_interaction)
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
def test_bias_relu(shape, fdtype):
    rng = np.random.default_rng(5)
    y = rng.standard_normal(shape).astype(fdtype)
    bias = rng.standard_normal(shape[1]).astype(fdtype)
    ref = naive.bias_relu_forward(y, bias)
    yr = y.copy()
    kernels.bias_relu_forward(yr, bias)
    assert same_bits(yr, ref)  # elementwise: exact
    yb = y.copy()
    kernels.bias_forward(yb, bias)
    assert same_bits(yb, y + bias)

    dy = rng.standard_normal(shape).astype(fdtype)
    dbias = rng.standard_normal(shape[1]).astype(fdtype)
    dbias_ref, dy_ref = naive.relu_bias_backward(dbias, dy, yr)
    d1, g1 = dbias.copy(), dy.copy()
    kernels.relu_bias_backward(d1, g1, yr)
    assert np.array_equal(g1, dy_ref)
    np.testing.assert_allclose(d1, dbias_ref, **tol(fdtype))
    d2 = dbias.copy()
    kernels.bias_backward(d2, dy)
    np.testing.assert_allclose(d2, dbias + dy.sum(axis=0, dtype=np.float64).astype(fdtype),
                               **tol(fdtype))


@pytest.mark.parametrize("N", [5, 1200])  # serial and parallel paths
@dtype_params
def test_bias_relu_non_finite(N, fdtype):
    # NaN propagates like np.maximum; inf - inf = NaN too; masked grads are +0
    y = np.tile(np.array([[np.inf, np.nan, -np.inf, 1.0, -1.0]], fdtype), (60, N // 5))
    bias = np.tile(np.array([-np.inf, 0.0, 1.0, np.inf, 0.5], fdtype), N // 5)
    with np.errstate(invalid="ignore"):
        ref = np.maximum(y + bias, 0)
    yr = y.copy()
    kernels.bias_relu_forward(yr, bias)
    np.testing.assert_array_equal(yr, ref)
    dy = np.full(y.shape, np.nan, fdtype)
    db = np.zeros(N, fdtype)
    kernels.relu_bias_backward(db, dy, yr)
    assert np.array_equal(dy == 0, ~(yr > 0)) and np.all(np.signbit(dy[dy == 0]) == 0)


# ----------------------------------------------------------------------------
# serial == parallel, and thread-count independence (bitwise)
# ----------------------------------------------------------------------------
def _run_all(fdtype):
    """Outputs of every kernel on inputs above the parallel thresholds."""
    res = []
    weight, indices, offsets, psw, dout = make_bags("parallel", fdtype, np.int64, True)
    V, D = weight.shape
    B = len(offsets) - 1
    for mean in (False, True):
        out = np.empty((B, D), fdtype)
        kernels.embedding_bag_forward(out, weight, indices, offsets, psw, mean)
        res.append(out)
        res.extend(kernels.embedding_bag_grad(dout, indices, offsets, psw, mean, V))
        for opt in OPTS:
            w = weight.copy()
            s = make_state(opt, w)
            fused(opt, w, s, dout, indices, offsets, psw, mean)
            res.append(w)
            if s is not None:
                res.append(s)
    rng = np.random.default_rng(6)
    for si in (False, True):
        T = rng.standard_normal((300, 27, 16)).astype(fdtype)
        P = it_mod.num_pairs(27, si)
        out = np.empty((300, 16 + P), fdtype)
        kernels.dot_interaction_forward(out, T, si)
        dT = np.empty_like(T)
        kernels.dot_interaction_backward(dT, rng.standard_normal(out.shape).astype(fdtype),
                                         T, si)
        res += [out, dT]
    for shape in [(2048, 64), (1000, 77)]:
        y = rng.standard_normal(shape).astype(fdtype)
        b = rng.standard_normal(shape[1]).astype(fdtype)
        kernels.bias_relu_forward(y, b)
        dy = rng.standard_normal(shape).astype(fdtype)
        db = np.zeros(shape[1], fdtype)
        kernels.relu_bias_backward(db, dy, y)
        db2 = np.zeros(shape[1], fdtype)
        kernels.bias_backward(db2, dy)
        res += [y, dy, db, db2]
    return res


@dtype_params
def test_thread_count_determinism(fdtype):
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        r1 = _run_all(fdtype)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        r2 = _run_all(fdtype)
    finally:
        numba.set_num_threads(old)
    assert len(r1) == len(r2)
    for a, b in zip(r1, r2):
        assert same_bits(a, b)


@pytest.mark.parametrize("case", ["mixed", "parallel"])
@dtype_params
def test_serial_equals_parallel(case, fdtype):
    weight, indices, offsets, psw, dout = make_bags(case, fdtype, np.int32, True)
    V, D = weight.shape
    B = len(offsets) - 1
    for has_w in (False, True):
        for mean in (False, True):
            o1 = np.empty((B, D), fdtype)
            o2 = np.empty((B, D), fdtype)
            eb_mod._forward_serial(o1, weight, indices, offsets, psw, has_w, mean)
            eb_mod._forward_parallel(o2, weight, indices, offsets, psw, has_w, mean)
            assert same_bits(o1, o2)
            dd, perm, seg, bag, coef = eb_mod.prepare(
                dout, indices, offsets, psw if has_w else None, mean, fdtype)
            U = seg.shape[0] - 1
            g = [(np.empty(U, np.int64), np.empty((U, D), fdtype)) for _ in range(2)]
            eb_mod._grad_serial(*g[0], indices, perm, seg, bag, coef, dd)
            eb_mod._grad_parallel(*g[1], indices, perm, seg, bag, coef, dd)
            assert same_bits(g[0][0], g[1][0]) and same_bits(g[0][1], g[1][1])
            for opt in (eu_mod.SGD, eu_mod.ADAGRAD, eu_mod.ROWWISE_ADAGRAD):
                ws = [weight.copy(), weight.copy()]
                st = [np.full((V, D), 0.25, fdtype) for _ in range(2)]
                rs = [np.full(V, 0.25, fdtype) for _ in range(2)]
                lr, eps = fdtype(0.1), fdtype(1e-10)
                eu_mod._update_serial(ws[0], st[0], rs[0], opt, indices, perm, seg, bag,
                                      coef, dd, lr, eps)
                eu_mod._update_parallel(ws[1], st[1], rs[1], opt, indices, perm, seg, bag,
                                        coef, dd, lr, eps)
                assert same_bits(ws[0], ws[1])
                assert same_bits(st[0], st[1]) and same_bits(rs[0], rs[1])

    rng = np.random.default_rng(7)
    for B, F, D in [(5, 27, 16), (70, 27, 16), (33, 2, 3)]:
        T = rng.standard_normal((B, F, D)).astype(fdtype)
        for s in (0, 1):
            P = it_mod.num_pairs(F, s)
            o = [np.empty((B, D + P), fdtype) for _ in range(2)]
            it_mod._fwd_serial(o[0], T, s)
            it_mod._fwd_parallel(o[1], T, s)
            assert same_bits(o[0], o[1])
            dout = rng.standard_normal((B, D + P)).astype(fdtype)
            d = [np.empty_like(T) for _ in range(2)]
            it_mod._bwd_serial(d[0], dout, T, s)
            it_mod._bwd_parallel(d[1], dout, T, s)
            assert same_bits(d[0], d[1])

    for shape in [(3, 5), (200, 64)]:
        y = rng.standard_normal(shape).astype(fdtype)
        b = rng.standard_normal(shape[1]).astype(fdtype)
        for relu in (False, True):
            ys = [y.copy(), y.copy()]
            br_mod._bias_serial(ys[0], b, relu)
            br_mod._bias_parallel(ys[1], b, relu)
            assert same_bits(ys[0], ys[1])
        dy = rng.standard_normal(shape).astype(fdtype)
        for relu in (True, False):
            dys = [dy.copy(), dy.copy()]
            dbs = [np.ones(shape[1], fdtype), np.ones(shape[1], fdtype)]
            br_mod._bwd_serial(dbs[0], dys[0], ys[0], relu)
            br_mod._bwd_parallel(dbs[1], dys[1], ys[0], relu)
            assert same_bits(dys[0], dys[1]) and same_bits(dbs[0], dbs[1])

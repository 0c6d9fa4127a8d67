"""Tests of the kernels against the naive references in naive_kernels.py.

Tests taking `device` run on each kernel home (tests/devices.py): inputs are made with
NumPy, moved with on(), the kernels of kernels_for(device) run, and results are compared
on the host. Tests of the Numba kernels' own machinery (stable argsort, serial ==
parallel, thread counts, the work thresholds) run on the CPU only.
"""
import os
import sys

import numba
import numpy as np
import pytest
from devices import host, kernels_for, on

from npdlrm import kernels
from npdlrm.kernels.cpu import bias_relu as br_mod
from npdlrm.kernels.cpu import embedding_bag as eb_mod
from npdlrm.kernels.cpu import embedding_update as eu_mod
from npdlrm.kernels.cpu import interaction as it_mod

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
    weights, _, _, _, _, per_table = make_packed("parallel", np.float32, False)
    assert all(idx.shape[0] * weights[0].shape[1] >= eb_mod.PARALLEL_MIN_WORK
               for idx, _, _ in per_table)


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
def test_embedding_bag_forward(device, case, fdtype, idtype, weighted, mean):
    k = kernels_for(device)
    weight, indices, offsets, psw, _ = make_bags(case, fdtype, idtype, weighted)
    B, D = len(offsets) - 1, weight.shape[1]
    ref = naive.embedding_bag_forward(weight, indices, offsets, psw, mean)
    args = on(device, (weight, indices, offsets, psw))
    out = on(device, np.full((B, D), np.nan, fdtype))
    k.embedding_bag_forward(out, *args, mean)
    np.testing.assert_allclose(host(out), ref, **tol(fdtype))
    # strided output view: T[:, 1, :] of a (B, 3, D) array; neighbours untouched
    T = on(device, np.full((B, 3, D), 7.0, fdtype))
    k.embedding_bag_forward(T[:, 1, :], *args, mean)
    T = host(T)
    assert same_bits(T[:, 1, :], host(out))
    assert np.all(T[:, [0, 2], :] == 7.0)


@pytest.mark.parametrize("fdtype", FLOATS)
def test_embedding_bag_forward_bag_of_one_is_row(device, fdtype):
    k = kernels_for(device)
    weight, indices, offsets, _, _ = make_bags("ones", fdtype, np.int64, False)
    out = on(device, np.empty((len(offsets) - 1, weight.shape[1]), fdtype))
    for mean in (False, True):
        k.embedding_bag_forward(out, *on(device, (weight, indices, offsets)), None, mean)
        assert same_bits(host(out), weight[indices])


@bag_params
@dtype_params
@itype_params
@wm_params
def test_embedding_bag_grad(device, case, fdtype, idtype, weighted, mean):
    weight, indices, offsets, psw, dout = make_bags(case, fdtype, idtype, weighted)
    V = weight.shape[0]
    rows_ref, vals_ref = naive.embedding_bag_grad(dout, indices, offsets, psw, mean, V)
    rows, vals = host(kernels_for(device).embedding_bag_grad(
        *on(device, (dout, indices, offsets, psw)), mean, V))
    assert rows.dtype == np.int64 and vals.dtype == fdtype
    assert np.array_equal(rows, rows_ref)
    assert vals.shape == (len(rows), weight.shape[1])
    np.testing.assert_allclose(vals, vals_ref, **tol(fdtype))


def test_embedding_bag_grad_strided_dout(device):
    k = kernels_for(device)
    weight, indices, offsets, psw, dout = make_bags("mixed", np.float64, np.int64, True)
    big = np.zeros((dout.shape[0], 2, dout.shape[1]))
    big[:, 1, :] = dout
    bags = on(device, (indices, offsets, psw))
    r1, v1 = host(k.embedding_bag_grad(on(device, dout), *bags, True, weight.shape[0]))
    r2, v2 = host(k.embedding_bag_grad(on(device, big)[:, 1, :], *bags, True,
                                       weight.shape[0]))
    assert same_bits(r1, r2) and same_bits(v1, v2)


def test_embedding_bag_grad_position_order(device):
    # one row repeated: its gradient is summed in increasing position order
    dout = np.array([[1.0], [1e-8], [-1.0], [1e-8]], np.float32)
    indices = np.array([3, 3, 3, 3], np.int64)
    offsets = np.arange(5, dtype=np.int64)
    rows, vals = host(kernels_for(device).embedding_bag_grad(
        *on(device, (dout, indices, offsets)), None, False, 4))
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


def fused(opt, weight, state, dout, indices, offsets, psw, mean, k=kernels):
    """The fused update of kernel home k (default: the CPU one) on k's arrays."""
    if opt == "sgd":
        k.embedding_sgd_update(weight, dout, indices, offsets, psw, mean, LR)
    elif opt == "adagrad":
        k.embedding_adagrad_update(weight, state, dout, indices, offsets, psw, mean, LR, EPS)
    else:
        k.embedding_rowwise_adagrad_update(weight, state, dout, indices, offsets, psw, mean,
                                           LR, EPS)


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
def test_fused_update(device, opt, case, fdtype, idtype, weighted, mean):
    k = kernels_for(device)
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
    bags = on(device, (dout, indices, offsets, psw))
    rows, g = host(k.embedding_bag_grad(*bags, mean, V))
    w_bit, s_bit = w0.copy(), None if s0 is None else s0.copy()
    apply(opt, w_bit, s_bit, rows, g)

    weight, state = on(device, (weight, state))
    fused(opt, weight, state, *bags, mean, k)
    weight, state = host((weight, state))

    np.testing.assert_allclose(weight, w_ref, **tol(fdtype))
    assert same_bits(weight, w_bit)
    untouched = np.setdiff1d(np.arange(V), rows_ref)
    assert same_bits(weight[untouched], w0[untouched])
    if state is not None:
        np.testing.assert_allclose(state, s_ref, **tol(fdtype))
        assert same_bits(state, s_bit)
        assert same_bits(state[untouched], s0[untouched])


@pytest.mark.parametrize("opt", OPTS)
def test_fused_update_mixed_dtypes(device, opt):
    # float32 table, float64 dout / per-sample weights: arithmetic in float32
    k = kernels_for(device)
    weight, indices, offsets, psw, dout = make_bags("mixed", np.float32, np.int32, True)
    dout64 = dout.astype(np.float64) * (1 + 1e-9)
    psw64 = psw.astype(np.float64)
    state = make_state(opt, weight)
    w_bit, s_bit = weight.copy(), None if state is None else state.copy()
    rows, g = host(k.embedding_bag_grad(*on(device, (dout64.astype(np.float32), indices,
                                                     offsets, psw)), True, weight.shape[0]))
    apply(opt, w_bit, s_bit, rows, g)
    weight, state = on(device, (weight, state))
    fused(opt, weight, state, *on(device, (dout64, indices, offsets, psw64)), True, k)
    weight, state = host((weight, state))
    assert weight.dtype == np.float32
    assert same_bits(weight, w_bit)
    if state is not None:
        assert same_bits(state, s_bit)


# ----------------------------------------------------------------------------
# all tables at once: embedding_bags_forward / embedding_bags_update
# ----------------------------------------------------------------------------
# name -> (B, table sizes, D); a 1-row table repeats its row everywhere; "parallel": as
# CASES["parallel"], every table's nnz * D is at least eb_mod.PARALLEL_MIN_WORK (checked
# in test_parallel_case_is_above_threshold)
PACKED = {"small": (9, (5, 1, 8), 3), "parallel": (700, (300, 40), 32)}
KIND = {"sgd": "sgd", "adagrad": "adagrad", "rowwise": "rwsadagrad"}


def make_packed(name, fdtype, weighted, seed=8):
    """T tables' packed bags: (weights [T x (V_t, D)], indices (nnz,), offsets (T, B + 1),
    psw (nnz,) or None, dbuf (B, T + 1, D): dout is the strided view dbuf[:, 1:, :]), and
    per table the (indices, local offsets, psw) the single-table kernels take."""
    B, sizes, D = PACKED[name]
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((V, D)).astype(fdtype) for V in sizes]
    lens = rng.integers(0, 7, size=(len(sizes), B))
    lens[:, :2] = 0  # empty bags
    starts = np.concatenate([[0], np.cumsum(lens.ravel())]).astype(np.int64)
    offsets = np.stack([starts[t * B:t * B + B + 1] for t in range(len(sizes))])
    indices = np.concatenate([rng.integers(0, V, size=lens[t].sum())
                              for t, V in enumerate(sizes)]).astype(np.int64)
    psw = rng.uniform(0.5, 2.0, size=indices.shape[0]).astype(fdtype) if weighted else None
    dbuf = rng.standard_normal((B, len(sizes) + 1, D)).astype(fdtype)
    per_table = [(indices[o[0]:o[-1]], o - o[0], None if psw is None else psw[o[0]:o[-1]])
                 for o in offsets]
    return weights, indices, offsets, psw, dbuf, per_table


packed_params = pytest.mark.parametrize("case", list(PACKED))


@packed_params
@dtype_params
@wm_params
def test_embedding_bags_forward(device, case, fdtype, weighted, mean):
    k = kernels_for(device)
    weights, indices, offsets, psw, dbuf, per_table = make_packed(case, fdtype, weighted)
    B, T, D = dbuf.shape[0], len(weights), dbuf.shape[2]
    buf = on(device, np.full((B, T + 1, D), 7.0, fdtype))
    k.embedding_bags_forward(buf[:, 1:, :], on(device, weights),
                             *on(device, (indices, offsets, psw)), mean)
    buf = host(buf)
    assert np.all(buf[:, 0, :] == 7.0)
    for t, (idx, off, w) in enumerate(per_table):
        np.testing.assert_allclose(buf[:, t + 1, :],
                                   naive.embedding_bag_forward(weights[t], idx, off, w, mean),
                                   **tol(fdtype))
        # all tables at once == table by table, bit for bit
        one = on(device, np.empty((B, D), fdtype))
        k.embedding_bag_forward(one, *on(device, (weights[t], idx, off, w)), mean)
        assert same_bits(buf[:, t + 1, :], host(one))


@pytest.mark.parametrize("opt", OPTS)
@packed_params
@dtype_params
@wm_params
def test_embedding_bags_update(device, opt, case, fdtype, weighted, mean):
    k = kernels_for(device)
    weights, indices, offsets, psw, dbuf, per_table = make_packed(case, fdtype, weighted)
    states = [make_state(opt, w, seed=t) for t, w in enumerate(weights)]
    W = on(device, [w.copy() for w in weights])
    S = on(device, [None if s is None else s.copy() for s in states])
    k.embedding_bags_update(KIND[opt], W, S, on(device, dbuf)[:, 1:, :],
                            *on(device, (indices, offsets, psw)), mean, LR, EPS)
    W, S = host(W), host(S)
    for t, (idx, off, w) in enumerate(per_table):
        V, dout = weights[t].shape[0], dbuf[:, t + 1, :]
        s0 = states[t]
        # reference: naive dense gradient, then the optimizer formula
        dense = naive.embedding_bag_dense_grad(dout, idx, off, w, mean, V)
        rows = np.unique(idx)
        w_ref, s_ref = weights[t].copy(), None if s0 is None else s0.copy()
        apply(opt, w_ref, s_ref, rows, dense[rows])
        # bitwise reference: the single-table fused kernel
        w_one, s_one = on(device, (weights[t].copy(), None if s0 is None else s0.copy()))
        fused(opt, w_one, s_one, *on(device, (dout, idx, off, w)), mean, k)
        w_one, s_one = host((w_one, s_one))
        untouched = np.setdiff1d(np.arange(V), rows)
        np.testing.assert_allclose(W[t], w_ref, **tol(fdtype))
        assert same_bits(W[t], w_one)
        assert same_bits(W[t][untouched], weights[t][untouched])
        if s0 is not None:
            np.testing.assert_allclose(S[t], s_ref, **tol(fdtype))
            assert same_bits(S[t], s_one)
            assert same_bits(S[t][untouched], s0[untouched])


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

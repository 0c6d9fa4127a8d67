"""ns per looked-up row of the embedding lookup and of the fused Adagrad update, old vs new.

Kaggle table sizes (26 tables, 33.8M rows, D=16 float32), B bags per table with one index
each (uniform or power-law rows), per-table kernel calls as EmbeddingBagCollection makes
them; the batches cycle over ~4x the last-level cache in rows so lookups miss the cache
(the method of bench/limits.py). The baseline kernels (before issue 12, item 2) are copied
below; old and new run in this one process on the same tables and batches, alternating,
and each is reported as the median of repeats. Before timing, both are checked bitwise
equal (pooled output; weight and state after an update, on a copy of a few tables).

    NUMBA_NUM_THREADS=2 .venv/bin/python bench/bench_embedding_rows.py [--batch 2048]
        [--dist uniform|powerlaw] [--repeats 7] [--per-table]
"""
import argparse
import math
import os
import statistics
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", os.environ["NUMBA_NUM_THREADS"])
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from numba import prange  # noqa: E402

from npdlrm import kernels  # noqa: E402
from npdlrm.kernels._numba import jit, pjit  # noqa: E402
from npdlrm.kernels.cpu.embedding_bag import (  # noqa: E402
    BAG_CHUNK, PARALLEL_MIN_WORK, SEGMENT_CHUNK, prepare)

KAGGLE_TABLE_SIZES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                      8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                      286181, 105, 142572)
LLC_BYTES = 32 * 2**20


# --------------------------------------------------------------------------
# baseline: the kernels as they were (copied)
# --------------------------------------------------------------------------
@jit
def _old_pool_bags(out, weight, indices, offsets, psw, has_w, mean, lo, hi):
    D = weight.shape[1]
    for b in range(lo, hi):
        s = offsets[b]
        e = offsets[b + 1]
        if e == s:
            for d in range(D):
                out[b, d] = 0
            continue
        r = indices[s]
        if has_w:
            w = psw[s]
            for d in range(D):
                out[b, d] = w * weight[r, d]
            for k in range(s + 1, e):
                r = indices[k]
                w = psw[k]
                for d in range(D):
                    out[b, d] += w * weight[r, d]
        else:
            for d in range(D):
                out[b, d] = weight[r, d]
            for k in range(s + 1, e):
                r = indices[k]
                for d in range(D):
                    out[b, d] += weight[r, d]
        if mean:
            n = out.dtype.type(e - s)
            for d in range(D):
                out[b, d] = out[b, d] / n


@jit
def _old_forward_serial(out, weight, indices, offsets, psw, has_w, mean):
    _old_pool_bags(out, weight, indices, offsets, psw, has_w, mean, 0, out.shape[0])


@pjit
def _old_forward_parallel(out, weight, indices, offsets, psw, has_w, mean):
    B = out.shape[0]
    nchunks = (B + BAG_CHUNK - 1) // BAG_CHUNK
    for c in prange(nchunks):
        lo = c * BAG_CHUNK
        _old_pool_bags(out, weight, indices, offsets, psw, has_w, mean, lo,
                       min(lo + BAG_CHUNK, B))


def old_forward(out, weight, indices, offsets):
    psw = np.empty(0, weight.dtype)
    if indices.shape[0] * weight.shape[1] < PARALLEL_MIN_WORK:
        _old_forward_serial(out, weight, indices, offsets, psw, False, False)
    else:
        _old_forward_parallel(out, weight, indices, offsets, psw, False, False)


@jit
def _old_segment_grad(G, lo, hi, perm, seg, bag, coef, dout):
    D = G.shape[1]
    for u in range(lo, hi):
        i = u - lo
        t = seg[u]
        k = perm[t]
        b = bag[k]
        c = coef[k]
        for d in range(D):
            G[i, d] = c * dout[b, d]
        for t in range(seg[u] + 1, seg[u + 1]):
            k = perm[t]
            b = bag[k]
            c = coef[k]
            for d in range(D):
                G[i, d] += c * dout[b, d]


@jit
def _old_update_rows(weight, state, indices, perm, seg, bag, coef, dout, lr, eps, G, lo, hi):
    # Adagrad only (the timed optimizer)
    D = weight.shape[1]
    _old_segment_grad(G, lo, hi, perm, seg, bag, coef, dout)
    for u in range(lo, hi):
        r = indices[perm[seg[u]]]
        i = u - lo
        for d in range(D):
            g = G[i, d]
            s = state[r, d] + g * g
            state[r, d] = s
            weight[r, d] -= lr * (g / (math.sqrt(s) + eps))


@jit
def _old_update_serial(weight, state, indices, perm, seg, bag, coef, dout, lr, eps):
    U = seg.shape[0] - 1
    G = np.empty((SEGMENT_CHUNK, weight.shape[1]), weight.dtype)
    for lo in range(0, U, SEGMENT_CHUNK):
        _old_update_rows(weight, state, indices, perm, seg, bag, coef, dout, lr, eps, G, lo,
                         min(lo + SEGMENT_CHUNK, U))


@pjit
def _old_update_parallel(weight, state, indices, perm, seg, bag, coef, dout, lr, eps):
    U = seg.shape[0] - 1
    nchunks = (U + SEGMENT_CHUNK - 1) // SEGMENT_CHUNK
    for c in prange(nchunks):
        G = np.empty((SEGMENT_CHUNK, weight.shape[1]), weight.dtype)
        lo = c * SEGMENT_CHUNK
        _old_update_rows(weight, state, indices, perm, seg, bag, coef, dout, lr, eps, G, lo,
                         min(lo + SEGMENT_CHUNK, U))


def old_adagrad(weight, state, dout, indices, offsets, lr, eps):
    dt = weight.dtype.type
    dout, perm, seg, bag, coef = prepare(dout, indices, offsets, None, False, weight.dtype)
    if seg.shape[0] == 1:
        return
    kernel = (_old_update_serial if indices.shape[0] * weight.shape[1] < PARALLEL_MIN_WORK
              else _old_update_parallel)
    kernel(weight, state, indices, perm, seg, bag, coef, dout, dt(lr), dt(eps))


def new_forward(out, weight, indices, offsets):
    kernels.embedding_bag_forward(out, weight, indices, offsets, None, False)


def new_adagrad(weight, state, dout, indices, offsets, lr, eps):
    kernels.embedding_adagrad_update(weight, state, dout, indices, offsets, None, False, lr, eps)


# --------------------------------------------------------------------------
def make_indices(rng, sizes, B, dist):
    out = []
    for v in sizes:
        if dist == "uniform" or v < 2:
            ix = rng.integers(0, v, B, dtype=np.int64)
        else:
            # power law over a random permutation of the rows (hot rows spread out)
            z = np.minimum(rng.zipf(1.2, B) - 1, v - 1)
            ix = (z * 2654435761 + 12345) % v
        out.append(ix.astype(np.int64))
    return out


def run(args):
    sizes, D, B = KAGGLE_TABLE_SIZES, 16, args.batch
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    weights = [(rng.standard_normal((v, D), dtype=np.float32) * 0.01) for v in sizes]
    # filled, not np.zeros: every page is touched before the clock starts (no first-touch
    # page faults in the timed updates)
    states = [np.full((v, D), 0.0, np.float32) for v in sizes]
    print(f"tables built in {time.perf_counter() - t0:.1f} s", flush=True)
    nbatch = max(8, math.ceil(4 * LLC_BYTES / (len(sizes) * B * D * 4)))
    batches = [make_indices(rng, sizes, B, args.dist) for _ in range(nbatch)]
    offsets = np.arange(B + 1, dtype=np.int64)
    F = len(sizes) + 1
    T = np.zeros((B, F, D), np.float32)
    T2 = np.zeros((B, F, D), np.float32)  # [:, 0] (the dense slot) is never written
    dT = (rng.standard_normal((B, F, D)) * (1e-2 / B)).astype(np.float32)
    lr, eps = 1e-6, 1e-8

    # ---- bitwise check: old vs new
    for i in range(2):
        for k, w in enumerate(weights):
            old_forward(T[:, k + 1, :], w, batches[i][k], offsets)
            new_forward(T2[:, k + 1, :], w, batches[i][k], offsets)
    assert np.array_equal(T.view(np.uint32), T2.view(np.uint32)), "forward differs"
    for k in range(len(sizes)):
        if sizes[k] > 3_000_000:
            continue
        wa, sa = weights[k].copy(), (rng.random((sizes[k], D), np.float32))
        wb, sb = wa.copy(), sa.copy()
        for i in range(3):
            old_adagrad(wa, sa, dT[:, k + 1, :], batches[i][k], offsets, 0.1, eps)
            new_adagrad(wb, sb, dT[:, k + 1, :], batches[i][k], offsets, 0.1, eps)
        assert np.array_equal(wa.view(np.uint32), wb.view(np.uint32)), f"weight differs {k}"
        assert np.array_equal(sa.view(np.uint32), sb.view(np.uint32)), f"state differs {k}"
    print("old == new bitwise (forward, adagrad weight and state)", flush=True)

    def fwd(fn):
        def step(i):
            bt = batches[i % nbatch]
            for k, w in enumerate(weights):
                fn(T[:, k + 1, :], w, bt[k], offsets)
        return step

    def upd(fn):
        def step(i):
            bt = batches[i % nbatch]
            for k, w in enumerate(weights):
                fn(w, states[k], dT[:, k + 1, :], bt[k], offsets, lr, eps)
        return step

    cases = {"lookup old": fwd(old_forward), "lookup new": fwd(new_forward),
             "update old": upd(old_adagrad), "update new": upd(new_adagrad)}
    for fn in cases.values():  # warm up / compile
        for i in range(3):
            fn(i)
    samples = {name: [] for name in cases}
    it = 0
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn(it)
                it += 1
            samples[name].append((time.perf_counter() - t0) / args.iters)
    rows = len(sizes) * B
    print(f"\nB={B}, {len(sizes)} tables, D={D} float32, {args.dist} indices, "
          f"{os.environ['NUMBA_NUM_THREADS']} threads, {nbatch} batches cycled, "
          f"median of {args.repeats} repeats x {args.iters} steps")
    print(f"{'':12s} {'ms/step':>9s} {'ns/row':>8s} {'best ns/row':>12s}")
    for name, s in samples.items():
        med = statistics.median(s)
        print(f"{name:12s} {med * 1e3:9.3f} {med / rows * 1e9:8.1f} {min(s) / rows * 1e9:12.1f}")

    if args.per_table:
        print("\nper table (us per call, new): size, lookup, update")
        for k, w in enumerate(weights):
            ts = []
            for fn in (lambda i: new_forward(T[:, k + 1, :], w, batches[i % nbatch][k], offsets),
                       lambda i: new_adagrad(w, states[k], dT[:, k + 1, :],
                                             batches[i % nbatch][k], offsets, lr, eps)):
                t0 = time.perf_counter()
                for i in range(200):
                    fn(i)
                ts.append((time.perf_counter() - t0) / 200 * 1e6)
            print(f"  {sizes[k]:9d} {ts[0]:8.1f} {ts[1]:8.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--dist", choices=("uniform", "powerlaw"), default="uniform")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--per-table", action="store_true")
    run(p.parse_args())


if __name__ == "__main__":
    main()

"""One benchmark run in a fresh process: one config at one thread count, all its batch sizes.

Usage: child.py SPEC_JSON. The parent (bench_train.py) puts the thread variables in
this process's environment, so they hold before NumPy and Numba load. Prints one
JSON line on stdout; progress goes to stderr.
"""
import functools
import json
import os
import resource
import sys
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
L3_FALLBACK_BYTES = 32 * 2**20
BATCH_DATA_CAP_BYTES = 64 * 2**20
MEMORY_BATCHES, MEMORY_CYCLES = 4, 3  # the short run that measures peak RSS


def rss_now():
    """Current resident set size in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss():
    """Peak resident set size of this process so far, in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def last_level_cache_bytes():
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            text = f.read().strip()
        return int(text.rstrip("K")) * 1024 if text.endswith("K") else int(text)
    except (OSError, ValueError):
        return L3_FALLBACK_BYTES


def batch_count(spec, case, B):
    """Enough distinct batches that the rows one cycle touches are ~4x the last-level
    cache (so lookups miss as in training), at least 8, and at most ~64 MiB of batch data."""
    if spec.get("batches"):
        return int(spec["batches"])
    T = len(case.table_sizes)
    rows_bytes = B * T * case.dim * 4
    data_bytes = B * (13 * 4 + T * 8 + 4)
    want = -(-4 * last_level_cache_bytes() // rows_bytes)
    return int(max(8, min(want, BATCH_DATA_CAP_BYTES // data_bytes)))


def state_bytes(model):
    """Bytes of optimizer state (dense and per table)."""
    dense = sum(a.nbytes for a in model.params.state.values())
    tables = sum(t.state.nbytes for t in model.embeddings.tables if t.state is not None)
    return dense + tables


def param_bytes(model):
    return model.params.data.nbytes + sum(t.weight.nbytes for t in model.embeddings.tables)


def guarded(fn, *args):
    """fn(*args), or {'error': ...} if the engine's internals moved under the benchmark."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        return {"error": f"{type(exc).__name__}: {exc}"}


def log(msg):
    print(f"    [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(spec):
    for var in THREAD_VARS:
        if os.environ.get(var) != str(spec["threads"]):
            raise SystemExit(f"{var} is {os.environ.get(var)!r}, expected {spec['threads']}")
    import npdlrm  # first: it sets its thread defaults before NumPy loads OpenBLAS
    import numba
    import numpy as np
    from cases import CASES, LR, STAGE_LR
    from data import make_batches
    from limits import (embedding_bytes, mlp_layer_shapes, time_gemms, time_numpy_embedding,
                        time_stream_copy)
    from parts import StageInputs, time_stages
    from timing import measure

    rss_import = rss_now()
    case = CASES[spec["config"]]
    quick, iters = spec["quick"], spec.get("iters")
    step_timer = functools.partial(measure, repeats=3 if quick else 5,
                                   budget_s=0.6 if quick else 5.0, iters=iters,
                                   warmup=3 if quick else 10)
    part_timer = functools.partial(measure, repeats=3, budget_s=0.15 if quick else 1.0,
                                   iters=iters, warmup=2 if quick else 3)

    log(f"building {case.name} (init={spec['init']})")
    t0 = time.perf_counter()
    model = npdlrm.DLRM.from_arch(**case.arch(), seed=123, init=spec["init"])
    init_s = time.perf_counter() - t0
    opt = npdlrm.Optimizer("sgd", lr=LR)
    num_dense = model.config.num_dense

    rss_build = rss_now()

    # 1. Peak RSS of training, with only a few batches held: a short run per batch size.
    for B in case.batch_sizes:
        batches = make_batches(case.table_sizes, num_dense, B, MEMORY_BATCHES, seed=B)
        for batch in batches * MEMORY_CYCLES:
            model.train_step(*batch, opt)
    peak_train = peak_rss()
    del batches

    # 2. Training steps at every batch size.
    data, runs = {}, []
    for B in case.batch_sizes:
        batches = make_batches(case.table_sizes, num_dense, B,
                               batch_count(spec, case, B), seed=B)
        data[B] = batches
        n = len(batches)
        log(f"timing train_step, batch {B} ({n} batches cycled)")
        step = step_timer(lambda i: model.train_step(*batches[i % n], opt))
        runs.append({"batch": B, "batches_cycled": n, "step": step})
    peak_timed = peak_rss()
    batch_data_bytes = sum(sum(a.nbytes for a in (d, *ix, l)) + off[0].nbytes
                           for bs in data.values() for d, ix, off, l in bs)
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "none used"

    # 3. Where the time goes, and the yardsticks at the same shapes, same process.
    for r in runs:
        B = r["batch"]
        log(f"stages and limits, batch {B}")
        inputs = guarded(StageInputs, model, data[B])
        if isinstance(inputs, dict):
            r["stages"] = r["numpy_embedding"] = inputs
        else:
            # The stages replay one fixed random gradient hundreds of times: a tiny lr
            # (same cost) keeps the MLP weights from drifting to overflow, and the dense
            # parameters are restored afterwards.
            saved = model.params.data.copy()
            r["stages"] = guarded(time_stages, model, opt, STAGE_LR, inputs, part_timer)
            model.params.data[...] = saved
            r["numpy_embedding"] = guarded(time_numpy_embedding, model, inputs, LR, part_timer)
        r["gemm"] = time_gemms(mlp_layer_shapes(model.config), B, part_timer)
        r["embedding_bytes"] = embedding_bytes(data[B], model.params.dtype.itemsize,
                                               case.dim)
    del data
    log("STREAM-like copy")
    stream = time_stream_copy(part_timer)

    return {
        "config": case.name, "threads": spec["threads"], "init": spec["init"],
        "init_s": init_s, "numba_threading_layer": layer,
        "numba_threads": numba.get_num_threads(), "numpy": np.__version__,
        "numba": numba.__version__, "param_bytes": param_bytes(model),
        "state_bytes": state_bytes(model), "rss_after_import": rss_import,
        "rss_after_build": rss_build, "peak_rss_train": peak_train,
        "peak_rss_timed": peak_timed, "peak_rss_end": peak_rss(),
        "batch_data_bytes": batch_data_bytes, "runs": runs, "stream": stream,
        "shapes": mlp_layer_shapes(model.config),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)

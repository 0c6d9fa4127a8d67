"""Timing loops: warm up, size the loop to a time budget, take the median of repeats."""
import resource
import statistics
import time

PROBE_MIN_S = 0.02  # a calibration probe runs at least this long
MAX_ITERS = 2000


def _per_call(fn, start):
    """Seconds per call of fn, from a probe of doubling length (like timeit.autorange)."""
    n, i = 1, start
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(i)
            i += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= PROBE_MIN_S or n >= MAX_ITERS:
            return elapsed / n, i
        n *= 2


def measure(fn, repeats=5, budget_s=1.0, iters=None, warmup=3):
    """Time fn(i) (i counts calls, e.g. to cycle batches).

    Runs `warmup` calls, then `repeats` loops of `iters` calls each (when None,
    sized so that all repeats take about budget_s). Returns a dict: ms (median of
    the per-repeat means), min_ms, max_ms, iters, repeats, and per call over the
    timed loops: cpu_ms (user + system, all threads), sys_ms, minflt (page faults).
    """
    for i in range(warmup):
        fn(i)
    i = warmup
    if iters is None:
        per_call, i = _per_call(fn, i)
        iters = int(min(MAX_ITERS, max(1, budget_s / repeats / max(per_call, 1e-9))))
    samples = []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(i)
            i += 1
        samples.append((time.perf_counter() - t0) / iters)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    calls = repeats * iters
    return {"ms": statistics.median(samples) * 1e3, "min_ms": min(samples) * 1e3,
            "max_ms": max(samples) * 1e3, "iters": iters, "repeats": repeats,
            "cpu_ms": (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / calls * 1e3,
            "sys_ms": (ru1.ru_stime - ru0.ru_stime) / calls * 1e3,
            "minflt": (ru1.ru_minflt - ru0.ru_minflt) / calls}

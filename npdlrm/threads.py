"""Thread counts of the engine's two pools: OpenBLAS (the MLPs' GEMMs) and Numba (kernels).

OpenBLAS and Numba's parallel loops split their work evenly over their threads. When
another process takes one of the cores, every GEMM waits for the thread that shares it:
on 2 cores with one busy, a kaggle step at batch 2048 took 142 ms on 2 threads and 74 ms
on 1 (bench/bench_threads.py). `ThreadGovernor` measures the CPU time other processes
take on this process's cores and runs on the cores they leave free. The thread count
never changes a result: each output element is summed by one thread in a fixed order.
"""
import ctypes
import functools
import math
import os
import time

# OpenBLAS's thread-count calls, by the names its builds export (NumPy's wheels ship
# scipy-openblas with a prefix and a 64-bit-integer suffix)
_BLAS_NAMES = [(p + "openblas_set_num_threads" + s, p + "openblas_get_num_threads" + s)
               for p in ("scipy_", "") for s in ("64_", "")]
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # /proc/stat: user nice system irq softirq steal


@functools.lru_cache(maxsize=1)
def _blas():
    """(set, get) of the OpenBLAS this process loaded, or None (another BLAS, or none)."""
    import numpy  # noqa: F401  (loads NumPy's BLAS)
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _BLAS_NAMES:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


def blas_threads():
    """OpenBLAS's thread count now, or None when NumPy does not use OpenBLAS."""
    calls = _blas()
    return None if calls is None else int(calls[1]())


def set_threads(n):
    """Use n threads in both pools (Numba: at most its NUMBA_NUM_THREADS)."""
    import numba
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    calls = _blas()
    if calls is not None:
        calls[0](int(n))
    numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))


def max_threads():
    """The most threads the pools were started with (the user's *_NUM_THREADS)."""
    import numba
    return max(numba.config.NUMBA_NUM_THREADS, blas_threads() or 1)


def usable_cores():
    """Cores this process may run on (its CPU affinity, e.g. a cgroup's or taskset's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class CpuSampler:
    """CPU seconds spent on this process's cores: by everyone, and by this process."""

    def __init__(self, stat_path="/proc/stat"):
        self.stat_path = stat_path
        try:
            self.cpus = {f"cpu{c}" for c in os.sched_getaffinity(0)}
        except AttributeError:
            self.cpus = None
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def read(self):
        """(busy seconds of our cores since boot, this process's CPU seconds), or None."""
        try:
            with open(self.stat_path) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name != "cpu" and (
                    self.cpus is None or name in self.cpus):
                values = rest.split()
                busy += sum(int(values[i]) for i in _BUSY_FIELDS if i < len(values))
        own = os.times()
        return busy / self.tick, own.user + own.system


class ThreadGovernor:
    """Adapts both pools to the cores other processes leave free; call `tick()` often
    (once a step: it reads /proc only every `interval` seconds).

    A change needs two readings in a row that agree, so one burst of load elsewhere does
    not make it flap.
    """

    def __init__(self, limit=None, interval=1.0, sampler=None, apply=set_threads,
                 clock=time.monotonic):
        self.limit = limit or max_threads()
        self.cores = min(self.limit, usable_cores())
        self.interval, self.sampler, self.apply, self.clock = (
            interval, sampler or CpuSampler(), apply, clock)
        self.threads = self.cores
        self.changes = 0
        self.others = 0.0  # cores' worth of CPU time other processes took, last reading
        self._pending = None
        self._last = (self.clock(), self.sampler.read())

    def wanted(self, others):
        """Threads for `others` cores' worth of foreign load (at least 1)."""
        return max(1, min(self.cores, math.floor(self.cores - others + 0.5)))

    def tick(self):
        """Re-read the load if `interval` has passed; returns the thread count in use."""
        now = self.clock()
        then, before = self._last
        if now - then < self.interval:
            return self.threads
        after = self.sampler.read()
        self._last = (now, after)
        if before is None or after is None:
            return self.threads
        self.others = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / (now - then))
        want = self.wanted(self.others)
        if want == self.threads:
            self._pending = None
        elif want == self._pending:
            self.apply(want)
            self.threads, self._pending = want, None
            self.changes += 1
        else:
            self._pending = want
        return self.threads

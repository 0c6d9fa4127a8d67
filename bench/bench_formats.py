"""Timings behind the format choices (issue 10, section 1): the MLP product with weights
stored in float32 / float16 / int8, and the embedding-bag forward per table format.
Run with OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 for one-core numbers."""
import time

import numpy as np

from npdlrm.quantize import QuantizedTable, dequantize_mlp_weight, quantize_mlp_weight


def best(f, n=7):
    f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


rng = np.random.default_rng(0)
B = 2048
print("MLP layer products, batch 2048 (ms, best of 7)")
print("| layer (in -> out) | float32 sgemm | float16 NumPy matmul | int8: dequantize per "
      "call + sgemm | int8 x int8 -> int32 NumPy matmul |")
print("|---|---|---|---|---|")
for n, m in ((479, 512), (512, 256), (367, 128)):
    x = rng.standard_normal((B, n)).astype(np.float32)
    w = rng.standard_normal((m, n)).astype(np.float32)
    st8 = quantize_mlp_weight(w, 8)
    w16, x16 = w.astype(np.float16), x.astype(np.float16)
    xq = np.clip(np.rint(x / (np.abs(x).max() / 127)), -127, 127).astype(np.int8)
    t32 = best(lambda: x @ w.T)
    t16 = best(lambda: x16 @ w16.T, 3)
    t8d = best(lambda: x @ dequantize_mlp_weight(st8, 8).T)
    t8i = best(lambda: xq.astype(np.int32) @ st8["weight"].T.astype(np.int32), 3)
    print(f"| {n} -> {m} | {1e3 * t32:.2f} | {1e3 * t16:.1f} | {1e3 * t8d:.2f} | "
          f"{1e3 * t8i:.1f} |")

print("\nEmbedding-bag forward, one table of 500,000 x 32, random rows, batch 2048 "
      "(ms, best of 7; M lookups/s)")
print("| format | bytes/row | 1 row per bag | 20 rows per bag |")
print("|---|---|---|---|")
V, D = 500_000, 32
w = rng.standard_normal((V, D)).astype(np.float32)
for name in ("float32", "float16", "int8", "int4"):
    t = QuantizedTable.from_weight(w, name)
    cells = []
    for L in (1, 20):
        idx = rng.integers(0, V, B * L)
        off = np.arange(0, B * L + 1, L, dtype=np.int64)
        out = np.empty((B, D), np.float32)
        s = best(lambda: t.lookup(out, idx, off))
        cells.append(f"{1e3 * s:.2f} ({B * L / s / 1e6:.0f})")
    print(f"| {name} | {t.fmt.row_bytes(D)} | {cells[0]} | {cells[1]} |")

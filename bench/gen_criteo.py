"""Generate raw Criteo-like TSV with a chosen vocabulary per column, fast (Numba).

Each categorical column j has a target number of distinct keys V_j over a reference
number of rows N (the shape). Row i brings a new key with probability
beta * V_j / N * (i / N) ** (beta - 1) (Heaps' law: V_j * (i / N) ** beta keys after
i rows), else repeats a seen key, drawn skewed toward the early (frequent) ones. Keys
are written as 8 hex digits through a bijective mix, so they look random; integers
are small and skewed, some fields are empty, as in the real files.

  kaggle    N = 45,840,617 rows; V = the published Kaggle table sizes (33.8M keys)
  terabyte  N = 4,373,472,329 rows (24 days); V = the published 1TB table sizes
            (882.8M keys); beta = 0.8 is an assumption, not a measured growth rate.

Usage: python bench/gen_criteo.py --shape kaggle --rows 45840617 --out train.txt
       python bench/gen_criteo.py --shape terabyte --rows 10000000 --day 0 --out day_0
(--day d writes rows [d * rows, (d + 1) * rows) of the shape: day 0 is the first day.)
"""
import argparse
import sys
import time

import numba
import numpy as np

SHAPES = {
    "kaggle": (45_840_617, [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                            8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18,
                            15, 286181, 105, 142572], 0.9),
    "terabyte": (4_373_472_329, [227605432, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63,
                                 130229467, 3067956, 405282, 10, 2209, 11938, 155, 4, 976, 14,
                                 292775614, 40790948, 187188510, 590152, 12973, 108, 36], 0.8),
}
BLOCK = 1 << 18


@numba.njit(cache=True)
def _mix32(x):
    x = (x ^ (x >> np.uint64(16))) * np.uint64(0x45D9F3B)
    x = x & np.uint64(0xFFFFFFFF)
    x = (x ^ (x >> np.uint64(16))) * np.uint64(0x45D9F3B)
    x = x & np.uint64(0xFFFFFFFF)
    return x ^ (x >> np.uint64(16))


@numba.njit(cache=True)
def _fill(buf, row0, n, total, vocab, beta, seen, col_salt, seed):
    """Write n rows (from global row row0) into buf; returns bytes written.
    seen: (26,) int64 keys issued so far per column (updated)."""
    np.random.seed(seed)
    hexd = b"0123456789abcdef"
    p = 0
    for r in range(n):
        i = row0 + r + 1.0
        buf[p] = 48 + (1 if np.random.random() < 0.25 else 0)
        p += 1
        for k in range(13):
            buf[p] = 9
            p += 1
            if np.random.random() < 0.2:
                continue
            v = int(np.random.exponential(1.0) ** 3 * 20)
            if v == 0:
                buf[p] = 48
                p += 1
                continue
            digits = 0
            t = v
            while t > 0:
                digits += 1
                t //= 10
            for d in range(digits - 1, -1, -1):
                buf[p + d] = 48 + v % 10
                v //= 10
            p += digits
        for j in range(26):
            buf[p] = 9
            p += 1
            if np.random.random() < 0.04:
                continue
            pnew = beta * vocab[j] / total * (i / total) ** (beta - 1.0)
            if seen[j] == 0 or np.random.random() < pnew:
                key = seen[j]
                seen[j] += 1
            else:
                key = int(seen[j] * np.random.random() ** 4)
            h = _mix32(np.uint64(key)) ^ col_salt[j]  # bijective on 32-bit keys
            for d in range(7, -1, -1):
                buf[p + d] = hexd[int(h & np.uint64(15))]
                h = h >> np.uint64(4)
            p += 8
        buf[p] = 10
        p += 1
    return p


def generate(out, shape, rows, day=0, seed=0):
    """Write `rows` rows of day `day` of `shape` to `out`; returns the distinct keys issued."""
    total, vocab, beta = SHAPES[shape]
    vocab = np.asarray(vocab, dtype=np.float64)
    seen = np.zeros(26, np.int64)
    salt = (np.arange(26, dtype=np.uint64) * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    # keys seen before this day (Heaps' law), so a later day repeats old keys too
    before = day * rows
    if before:
        seen[:] = np.floor(vocab * (before / total) ** beta).astype(np.int64)
    buf = np.empty(BLOCK * 400, np.uint8)
    with open(out, "wb") as f:
        for b, lo in enumerate(range(0, rows, BLOCK)):
            n = min(BLOCK, rows - lo)
            k = _fill(buf, before + lo, n, total, vocab, beta, seen, salt, seed * 100003 + b)
            f.write(buf[:k].tobytes())
    return seen


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="kaggle")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--day", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    t = time.perf_counter()
    seen = generate(a.out, a.shape, a.rows, a.day, a.seed)
    print(f"{a.out}: {a.rows:,} rows in {time.perf_counter() - t:.0f} s; keys issued up to "
          f"{int(seen.sum()):,} (largest column {int(seen.max()):,})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

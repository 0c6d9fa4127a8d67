"""Dot interaction kernel timing: the current kernels/interaction.py against a frozen
copy of the kernel before issue 12 item 3 (bench/interaction_baseline.py), in one
process, plus a bitwise comparison of their outputs.

    NUMBA_NUM_THREADS=2 .venv/bin/python bench/bench_interaction.py [--repeats N]

Prints, per batch size (F=27, D=16, no self interaction unless --self), the median
forward and backward time of each and the ratio baseline / new.
"""
import argparse, os, sys, time
import numpy as np
import numba

sys.path.insert(0, os.path.dirname(__file__))
import interaction_baseline as old  # noqa: E402
from npdlrm.kernels.cpu import interaction as new  # noqa: E402


def median_ms(fns, repeats):
    """Median ms of each callable; the calls are interleaved round-robin so that load
    from other processes hits old and new alike."""
    for fn in fns.values():
        fn()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in ts.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--batches", type=int, nargs="+", default=[2048, 128])
    ap.add_argument("--F", type=int, default=27)
    ap.add_argument("--D", type=int, default=16)
    ap.add_argument("--self", dest="self_interaction", action="store_true")
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args()
    si, F, D = a.self_interaction, a.F, a.D
    dt = np.dtype(a.dtype)
    print(f"threads={numba.get_num_threads()} F={F} D={D} self={si} dtype={dt} "
          f"repeats={a.repeats} (median ms)")
    rng = np.random.default_rng(0)
    for B in a.batches:
        P = new.num_pairs(F, si)
        T = rng.standard_normal((B, F, D)).astype(dt)
        dout = rng.standard_normal((B, D + P)).astype(dt)
        o1, o2 = np.empty((B, D + P), dt), np.empty((B, D + P), dt)
        g1, g2 = np.empty((B, F, D), dt), np.empty((B, F, D), dt)
        old.dot_interaction_forward(o1, T, si)
        new.dot_interaction_forward(o2, T, si)
        old.dot_interaction_backward(g1, dout, T, si)
        new.dot_interaction_backward(g2, dout, T, si)
        same = o1.tobytes() == o2.tobytes() and g1.tobytes() == g2.tobytes()
        fns = {}
        for name, mod in (("old", old), ("new", new)):
            fns[name, "fwd"] = (lambda m: lambda: m.dot_interaction_forward(o1, T, si))(mod)
            fns[name, "bwd"] = (lambda m: lambda: m.dot_interaction_backward(g1, dout, T, si))(mod)
        r = median_ms(fns, a.repeats)
        for name in ("old", "new"):
            r[name, "sum"] = r[name, "fwd"] + r[name, "bwd"]
        print(f"B={B:5d}  bitwise {'same' if same else 'DIFFERENT'}")
        for k in ("fwd", "bwd", "sum"):
            print(f"  {k}: old {r['old', k]:7.3f}  new {r['new', k]:7.3f}  "
                  f"ratio old/new {r['old', k] / r['new', k]:5.2f}")


if __name__ == "__main__":
    main()

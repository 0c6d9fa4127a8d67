"""Training-step benchmark of npdlrm: ms/it, samples/s and peak RSS, with the limits.

Each (config, thread count) runs in a fresh child process (bench/child.py) whose
thread variables are set before NumPy/Numba load; the child prints one JSON line and
this script prints the tables. See bench/README.md.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

# Variables that change threading behaviour; shown in the header when inherited.
INHERITED_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER",
                  "OPENBLAS_CORETYPE", "OPENBLAS_THREAD_TIMEOUT", "KMP_BLOCKTIME")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cases import CASES, LR  # noqa: E402
from child import THREAD_VARS  # noqa: E402
from report import render  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time npdlrm training steps (forward + loss + backward + optimizer "
                    "step, SGD lr 0.1, batches pre-generated) for the 'small' and 'kaggle' "
                    "configs at each thread count, each in a fresh process, and print "
                    "ms/it, samples/s, peak RSS, a per-stage breakdown and the limits "
                    "(bare NumPy GEMMs of the MLP shapes, STREAM-like copy bandwidth vs the "
                    "embedding kernels).")
    p.add_argument("--configs", default="small,kaggle",
                   help="comma-separated, from: %s (default: all)" % ",".join(CASES))
    p.add_argument("--threads", default="1,2",
                   help="comma-separated thread counts (default: 1,2)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed iterations per repeat, for every measurement (default: sized "
                        "to a time budget: ~5 s per train_step measurement, ~1 s per stage)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: short budgets and fewer warm-up iterations")
    p.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    p.add_argument("--init", choices=("fast", "reference"), default="reference",
                   help="table initialisation (default: reference, the engine default, ~4 s for "
                        "kaggle here; fast: float32 PCG64, ~2.5 s)")
    p.add_argument("--batches", type=int, default=None,
                   help="distinct batches cycled (default: enough that one cycle touches "
                        "~4x the last-level cache in rows, at least 8)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment variable for the children, repeatable, e.g. "
                        "--env OMP_WAIT_POLICY=passive or --env NUMBA_THREADING_LAYER="
                        "workqueue (the thread-count variables are set by --threads)")
    p.add_argument("--timeout", type=float, default=1200,
                   help="seconds allowed per child process (default: 1200)")
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CASES]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {list(CASES)}")
    try:
        args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        p.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if not args.threads or min(args.threads) < 1:
        p.error("--threads needs positive integers")
    if args.iters is not None and args.iters < 1:
        p.error("--iters must be at least 1")
    extra = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            p.error(f"--env expects NAME=VALUE, got {item!r}")
        if name in THREAD_VARS:
            p.error(f"{name} is set from --threads")
        extra[name] = value
    args.env = extra
    return args


def child_env(threads, extra):
    env = dict(os.environ)
    env.update(extra)
    env.update({var: str(threads) for var in THREAD_VARS})
    return env


def run_child(spec, env, timeout):
    """Run child.py on spec; returns its JSON result, or {'error': ...}."""
    cmd = [sys.executable, os.path.join(HERE, "child.py"), json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=None, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**spec, "error": f"child exited with {proc.returncode} (see stderr above)"}
    return json.loads(lines[-1])


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(args, results):
    layers = sorted({r["numba_threading_layer"] for r in results if "runs" in r})
    inherited = " ".join(f"{k}={os.environ[k]}" for k in INHERITED_VARS
                         if k in os.environ and k not in args.env)
    versions = next(((r["numpy"], r["numba"]) for r in results if "runs" in r), ("?", "?"))
    return (f"npdlrm training benchmark: SGD lr {LR}, one index per bag, D=16, fresh "
            f"process per (config, threads), init={args.init}{', QUICK' if args.quick else ''}\n"
            f"machine: {os.cpu_count()} CPUs, {cpu_model()}; "
            f"python {platform.python_version()}, numpy {versions[0]}, numba {versions[1]}, "
            f"numba threading layer: {', '.join(layers) or '?'}\n"
            f"extra environment: {' '.join(f'{k}={v}' for k, v in args.env.items()) or 'none'}"
            f" (inherited: {inherited or 'none'})")


def main(argv=None):
    args = parse_args(argv)
    results = []
    t0 = time.perf_counter()
    for config in args.configs:
        for threads in args.threads:
            spec = {"config": config, "threads": threads, "iters": args.iters,
                    "quick": args.quick, "init": args.init, "batches": args.batches}
            print(f"[{time.perf_counter() - t0:6.0f} s] {config}, {threads} thread(s)",
                  file=sys.stderr, flush=True)
            results.append(run_child(spec, child_env(threads, args.env),
                                     args.timeout))
    print(render(results, header(args, results)))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0 if all("runs" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

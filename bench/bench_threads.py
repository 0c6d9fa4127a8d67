"""Threads under load: the kaggle step with another busy process on the same cores.

    .venv/bin/python bench/bench_threads.py [--batch 2048] [--steps 40] [--rounds 2]

Each run is a fresh process (the thread variables hold before NumPy loads), started with
the machine's cores as its thread limit. Modes: fixed at all cores, fixed at one fewer,
and `auto` (npdlrm.threads.ThreadGovernor ticking every step, as `npdlrm train
--threads auto` does). Each mode runs alone and beside busy-loop processes (one per
`--competitors`), interleaved over `--rounds`. Prints ms/it after the governor settled
(the last half of the steps) and the ratio to the fixed all-cores run of the same load.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, sys, time
import npdlrm  # first: its thread defaults hold only if it loads before NumPy
import numpy as np
sys.path.insert(0, HERE)
from cases import CASES
from npdlrm.threads import ThreadGovernor, set_threads
mode, B, steps, cap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
case = CASES["kaggle"]
sizes = "-".join(str(min(v, cap)) for v in case.table_sizes)
arch = dict(case.arch(), arch_embedding_size=sizes)
model = npdlrm.DLRM.from_arch(**arch, init="fast")
opt = npdlrm.Optimizer("sgd", lr=1e-6)
rng = np.random.default_rng(0)
tables = [min(v, cap) for v in case.table_sizes]
batches = [(rng.random((B, 13), dtype=np.float32), [rng.integers(0, v, B) for v in tables],
            [np.arange(B + 1) for _ in tables], (rng.random(B) < 0.3).astype(np.float32))
           for _ in range(4)]
gov = ThreadGovernor(interval=0.5) if mode == "auto" else None
if mode != "auto":
    set_threads(int(mode))
model.train_step(*batches[0], opt)
times = []
for i in range(steps):
    t = time.perf_counter()
    model.train_step(*batches[i % 4], opt)
    if gov is not None:
        gov.tick()
    times.append(time.perf_counter() - t)
half = times[len(times) // 2:]
print(json.dumps({"ms": 1000 * sum(half) / len(half),
                  "threads": gov.threads if gov else int(mode)}))
"""


def busy_loops(n):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_child(mode, args, cores):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(cores)
    code = CHILD.replace("HERE", repr(HERE))
    out = subprocess.run([sys.executable, "-c", code, mode, str(args.batch), str(args.steps),
                          str(args.rows_cap)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the {mode} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--competitors", type=int, default=1,
                   help="busy-loop processes beside the loaded runs")
    p.add_argument("--rows-cap", type=int, default=1_000_000,
                   help="cap on each table's rows (the MLPs are what threads change)")
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    modes = [str(cores), str(max(cores - 1, 1)), "auto"]
    results = {}
    for r in range(args.rounds):
        for loaded in (False, True):
            procs = busy_loops(args.competitors) if loaded else []
            try:
                time.sleep(0.2)
                for mode in modes:
                    res = run_child(mode, args, cores)
                    results.setdefault((loaded, mode), []).append(res)
                    print(f"  round {r + 1} {'loaded' if loaded else 'alone '} {mode:>4}: "
                          f"{res['ms']:.1f} ms/it, {res['threads']} threads at the end",
                          file=sys.stderr, flush=True)
            finally:
                for proc in procs:
                    proc.kill()
                    proc.wait()
    print(f"kaggle MLPs, tables capped at {args.rows_cap:,} rows, batch {args.batch}, "
          f"{cores} cores, {args.competitors} busy process(es) in the loaded runs; "
          f"ms/it over the last {args.steps - args.steps // 2} of {args.steps} steps, "
          f"best of {args.rounds} rounds")
    print(f"| threads | alone ms/it | x vs {cores} | loaded ms/it | x vs {cores} |")
    print("|---|---|---|---|---|")
    best = {k: min(v["ms"] for v in vs) for k, vs in results.items()}
    for mode in modes:
        cells = []
        for loaded in (False, True):
            ms, base = best[(loaded, mode)], best[(loaded, str(cores))]
            cells += [f"{ms:.1f}", f"{base / ms:.2f}"]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

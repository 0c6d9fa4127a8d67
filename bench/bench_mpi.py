"""`make bench-mpi`: the distributed step on the kaggle-shaped model at 1, 2 and 4 ranks.

Each world size runs bench/mpi_worker.py under mpiexec, one thread per rank, and this
script prints one table: ms per step and rank 0's split (compute, all-to-all wait,
allreduce wait), the bytes each rank's all-to-alls sent per step (measured) beside the
planner's prediction, and the forward all-to-all timed alone beside the cost model's
time for it at the bandwidth of a uniform 4 MiB-per-peer all-to-all (the link's
calibration, measured in the same run). On 2 cores the ranks share the
CPU: the split, the bytes and the planner's accuracy mean more than the speed-ups.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ONE_THREAD = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def mpiexec():
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else "mpiexec"


def run(world_size, args):
    cmd = [mpiexec(), "-n", str(world_size), sys.executable, os.path.join(HERE, "mpi_worker.py"),
           "--batch", str(args.batch), "--steps", str(args.steps), "--sharding", args.sharding,
           "--alltoall-dtype", args.alltoall_dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD},
                          timeout=args.timeout)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kib(n):
    return f"{n / 1024:,.0f}"


def render(results):
    lines = ["| ranks | plan | ms/step | compute | all-to-all wait | allreduce wait | "
             "a2a KiB sent/step, measured (fwd+bwd, per rank) | planner's prediction | "
             "allreduce values | fwd a2a alone | link (4 MiB/peer) | model at that link |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        split = r["ranks"][0]["split_ms"]
        measured = [x["sent"]["forward"] + x["sent"]["backward"] for x in r["ranks"]]
        predicted = [x["forward"] + x["backward"] for x in r["predicted_sent"]]
        exact = "equal" if measured == predicted else "DIFFERENT"
        alone = max(x["alltoall_alone_ms"] for x in r["ranks"])
        plan = ", ".join(f"{n} {k}" for k, n in r["plan"].items())
        lines.append(
            f"| {r['world_size']} | {plan} | {r['ms_per_step']:.1f} | {split['compute']:.1f} | "
            f"{split['alltoall']:.1f} | {split['allreduce']:.1f} | "
            f"{' / '.join(kib(m) for m in measured)} | {exact} | "
            f"{r['allreduce_values']:,} | {alone:.2f} ms | {r['link_gbps']:.0f} Gbit/s | "
            f"{r['modelled_forward_ms']:.2f} ms |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-sizes", default="1,2,4")
    p.add_argument("--batch", type=int, default=2048, help="global batch (default 2048)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--sharding", default="auto")
    p.add_argument("--alltoall-dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--timeout", type=float, default=1200)
    p.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    args = p.parse_args(argv)
    results = []
    for w in (int(x) for x in args.world_sizes.split(",")):
        print(f"world size {w} ...", file=sys.stderr, flush=True)
        results.append(run(w, args))
    print(f"kaggle shapes (26 tables, 33.8M rows, D=16; MLPs 13-512-256-64-16, 512-256-1), "
          f"global batch {args.batch}, sgd, {args.alltoall_dtype} all-to-all, one thread per "
          f"rank, {args.steps} timed steps; split: rank 0's ms per step")
    print(render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

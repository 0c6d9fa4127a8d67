"""Held-out AUC with the float16 all-to-all vs float32, on the Criteo sample.

    .venv/bin/python bench/bench_fp16_auc.py [--seeds 5] [--ranks 2]

Preprocesses ../shared/data/criteo_sample (10,000 rows: 8,572 train, 714 test rows),
then for each seed trains the README walkthrough's model (table-wise sharding, so every
pooled vector crosses the wire) under mpiexec with --alltoall-dtype float32 and float16,
and prints the test AUC after epochs 1 and 2 of each, and the mean difference.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "..", "shared", "data", "criteo_sample", "train_10k.txt.gz")


def train(h5, log, seed, dtype, ranks):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    flags = ["--data-generation", "dataset", "--data-set", "kaggle", "--processed-data-file",
             h5, "--arch-sparse-feature-size", "16", "--arch-mlp-bot", "13-64-16",
             "--arch-mlp-top", "64-1", "--loss-function", "bce", "--round-targets", "True",
             "--optimizer", "adagrad", "--learning-rate", "0.02", "--mini-batch-size", "128",
             "--print-freq", "1000", "--test-freq", "67", "--test-mini-batch-size", "1000",
             "--nepochs", "2", "--progress", "False", "--numpy-rand-seed", str(seed),
             "--sharding", "table", "--alltoall-dtype", dtype, "--log-file", log]
    subprocess.run([mpiexec, "-n", str(ranks), sys.executable,
                    os.path.join(ROOT, "mpi_launch", "train.py"), *flags],
                   check=True, capture_output=True, cwd=ROOT)
    with open(log) as f:
        return [r["auc"] for r in map(json.loads, f) if r["event"] == "eval"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--ranks", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        h5 = os.path.join(d, "sample.h5")
        subprocess.run([sys.executable, "-m", "npdlrm", "preprocess", "--raw-data-file", SAMPLE,
                        "--processed-data-file", h5], check=True, capture_output=True)
        diffs = {0: [], 1: []}
        print("| seed | epoch 1 float32 | epoch 1 float16 | epoch 2 float32 | epoch 2 float16 |")
        print("|---|---|---|---|---|")
        for seed in range(1, args.seeds + 1):
            a = train(h5, os.path.join(d, f"{seed}-32.jsonl"), seed, "float32", args.ranks)
            b = train(h5, os.path.join(d, f"{seed}-16.jsonl"), seed, "float16", args.ranks)
            for e in (0, 1):
                diffs[e].append(b[e] - a[e])
            print(f"| {seed} | {a[0]:.5f} | {b[0]:.5f} | {a[1]:.5f} | {b[1]:.5f} |")
    for e in (0, 1):
        d = diffs[e]
        sd = statistics.stdev(d) if len(d) > 1 else 0.0
        print(f"epoch {e + 1}: AUC(float16) - AUC(float32) = {statistics.mean(d):+.5f} "
              f"(sd {sd:.5f} over {len(d)} seeds)")


if __name__ == "__main__":
    main()

"""Cost of making a batch (synthetic generation, the in-memory BatchLoader) beside the cost
of the training step that consumes it, in one process.

    .venv/bin/python bench/bench_data.py                    # kaggle tables (~2 GiB), b2048
    .venv/bin/python bench/bench_data.py --config small --batch-size 128
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from cases import CASES, LR  # noqa: E402
from timing import measure  # noqa: E402

import numpy as np  # noqa: E402

import npdlrm  # noqa: E402
from npdlrm.data.arrays import ArrayData  # noqa: E402
from npdlrm.data.loader import BatchLoader  # noqa: E402
from npdlrm.data.synthetic import SyntheticData  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Time SyntheticData.batch (random and power-law "
                                "indices) and BatchLoader over in-memory data against "
                                "DLRM.train_step (SGD) of the same shapes; print the ratios.")
    p.add_argument("--config", default="kaggle", choices=sorted(CASES),
                   help="model and table sizes from bench/cases.py (default: kaggle, ~2 GiB "
                        "of tables; small: 8 x 1M rows)")
    p.add_argument("--batch-size", type=int, default=2048, help="default 2048")
    p.add_argument("--bag-size", type=int, default=1, help="indices per bag (default 1)")
    p.add_argument("--budget", type=float, default=2.0,
                   help="seconds per measurement (default 2)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    case, B = CASES[a.config], a.batch_size
    sizes = case.table_sizes
    print(f"config {case.name}: {len(sizes)} tables, {sum(sizes):,} rows, D={case.dim}, "
          f"batch {B}, bag size {a.bag_size}", flush=True)
    model = npdlrm.DLRM.from_arch(init="fast", **case.arch())
    opt = npdlrm.Optimizer("sgd", lr=LR)
    num_dense = model.config.num_dense
    gens = {dist: SyntheticData(num_dense, sizes, 10 ** 9, distribution=dist,
                                bag_size=a.bag_size) for dist in ("random", "power-law")}
    batches = [gens["random"].batch(i, B) for i in range(8)]

    def step(i):
        mb = batches[i % len(batches)]
        model.train_step(mb.dense, mb.indices, mb.offsets, mb.labels, opt)

    rows = {"train_step": measure(step, budget_s=a.budget)["ms"]}
    for dist, gen in gens.items():
        rows[f"batch() {dist}"] = measure(lambda i, g=gen: g.batch(i, B),
                                          budget_s=a.budget)["ms"]
    n = 64 * B  # in-memory rows: read, shuffled by chunk, cut into batches
    mb = gens["random"].batch(0, n)
    data = ArrayData(mb.dense, mb.indices, mb.labels, day_rows=(n, 0), table_sizes=sizes)
    loader = BatchLoader(data, B, "train", prefetch=0)
    stream = iter(())

    def next_batch(i):
        nonlocal stream
        if next(stream, None) is None:
            stream = iter(loader.epoch(i))
            next(stream)

    rows["BatchLoader (ArrayData, no thread)"] = measure(next_batch, budget_s=a.budget)["ms"]
    ms_step = rows["train_step"]
    print(f"{'':38s} {'ms/batch':>9s} {'vs step':>8s}")
    for name, ms in rows.items():
        print(f"{name:38s} {ms:9.2f} {ms / ms_step:8.1%}")
    print(f"(numpy {np.__version__}; medians of 5 repeats; noisy on a shared machine)")


if __name__ == "__main__":
    main()

"""Count the CUDA kernel launches of one training step without a GPU: the step runs
through the CUDA launchers under tests/cuda_emulator.py (the sources compiled by g++,
NumPy arrays), and every launch is tallied by kernel. cuBLAS GEMMs and CuPy's own
element-wise operations are not kernels of npdlrm and are not counted.

    python bench/gpu_launches.py [--optimizer adagrad] [--batch 64]
"""
import argparse
import collections
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import cuda_emulator  # noqa: E402

from npdlrm import DLRM, Optimizer, backend  # noqa: E402
from npdlrm.inputs import Batch  # noqa: E402
from npdlrm.kernels import cuda  # noqa: E402
from npdlrm.kernels.cuda import _module  # noqa: E402

# the kaggle shapes of the Makefile's `make train`, tables 10x smaller (launch counts do
# not depend on table sizes)
SIZES = ("146-58-10000-5000-31-24-1252-63-3-9315-568-8000-319-27-1499-5000-10-565-217-4-"
         "7000-18-15-2800-105-1420")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--optimizer", default="adagrad", choices=["sgd", "adagrad", "rwsadagrad"])
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)
    why = cuda_emulator.emulator_skip_reason()
    if why:
        raise SystemExit(why)
    counts = collections.Counter()

    def launch(source, kernel, grid, block, kargs):
        counts[kernel.rsplit("_", 1)[0]] += 1
        cuda_emulator.launch(source, kernel, grid, block, kargs)
    _module.launch = launch
    _module.device_ptr = lambda a: a.ctypes.data
    backend.kernels = lambda *arrays: cuda
    Batch.to_device = lambda self, device: self.packed_on(np)
    model = DLRM.from_arch("13-512-256-64-16", "512-256-1", SIZES, 16, init="fast")
    opt, rng, B = Optimizer(args.optimizer, lr=0.05), np.random.default_rng(0), args.batch
    V = [int(v) for v in SIZES.split("-")]
    for step in range(2):  # the first step allocates optimizer state; count the second
        counts.clear()
        model.train_step(rng.random((B, 13), np.float32), [rng.integers(0, v, B) for v in V],
                         [np.arange(B + 1)] * len(V), rng.integers(0, 2, B), opt)
    print(f"{args.optimizer}, batch {B}, 26 tables: {sum(counts.values())} launches of "
          f"npdlrm's CUDA kernels in one training step")
    for kernel, n in sorted(counts.items()):
        print(f"  {n:3d}  {kernel}")


if __name__ == "__main__":
    main()

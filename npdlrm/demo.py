"""`make train`: train a small DLRM on planted synthetic data and report held-out AUC."""
import argparse
import time

import numpy as np

from .metrics import roc_auc
from .model import DLRM
from .optimizers import Optimizer
from .data.synthetic import SyntheticData


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m npdlrm.demo",
        description="Train a DLRM on synthetic batches drawn from a planted model; print the "
                    "loss as it falls and the held-out AUC beside the planted model's own AUC.")
    p.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per step (default 256)")
    p.add_argument("--tables", default="2000-5000-1000-300-8000-50-700-4000",
                   help="rows of each embedding table, dash-separated")
    p.add_argument("--dim", type=int, default=16, help="embedding dimension D (default 16)")
    p.add_argument("--optimizer", default="adagrad", choices=["sgd", "adagrad", "rwsadagrad"])
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--eval-size", type=int, default=20000, help="held-out samples (default 20000)")
    p.add_argument("--print-every", type=int, default=250, help="steps between loss lines")
    p.add_argument("--seed", type=int, default=123, help="model and data seed (default 123)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    D = a.dim
    model = DLRM.from_arch(arch_mlp_bot=f"13-64-{D}", arch_mlp_top="64-32-1",
                           arch_embedding_size=a.tables, arch_sparse_feature_size=D,
                           seed=a.seed)
    data = SyntheticData(13, model.config.table_sizes, a.steps * a.batch_size, seed=a.seed)
    held_out = SyntheticData(13, model.config.table_sizes, a.eval_size,
                             seed=a.seed).batch(0, a.eval_size, "test")
    opt = Optimizer(a.optimizer, lr=a.lr)
    print(f"npdlrm demo: {model.config.num_tables} tables, {model.num_parameters():,} parameters, "
          f"{a.steps} steps of {a.batch_size}, {a.optimizer} lr={a.lr}")
    print("(the first steps compile the Numba kernels on a fresh install)", flush=True)
    t0, window = time.perf_counter(), []
    for step in range(1, a.steps + 1):
        dense, idx, off, y, _ = data.batch(step - 1, a.batch_size)
        window.append(model.train_step(dense, idx, off, y, opt))
        if step % a.print_every == 0 or step == a.steps:
            now = time.perf_counter()
            rate = len(window) * a.batch_size / (now - t0)
            print(f"step {step:5d}  loss {np.mean(window):.4f}  ({rate:,.0f} samples/s)",
                  flush=True)
            t0, window = now, []
    dense, idx, off, y, p_true = held_out
    p = model.predict(dense, idx, off)
    print(f"held-out AUC {roc_auc(y, p):.4f}  (planted model's own AUC {roc_auc(y, p_true):.4f}, "
          f"{a.eval_size} samples)")


if __name__ == "__main__":
    main()

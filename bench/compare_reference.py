"""Compare npdlrm with the reference dlrm_s_pytorch.py, side by side in one process.

Needs torch, tqdm and a checkout of facebookresearch/dlrm (not shipped, never imported by
npdlrm itself):

    python bench/compare_reference.py --reference-dir /path/to/dlrm

Prints: initial weights bitwise equal (same seed), forward differences (dot, dot with
self-interaction, cat), and 20 training steps per optimizer with the reference's LR
policy (warm-up 3, decay from 6 over 10): LR sequences, loss and parameter differences.
"""
import argparse
import importlib.machinery
import sys
import types

import numpy as np

D = 16
BOTTOM, TOP = "13-512-256-64-16", "512-256-1"
TABLES = [1460, 583, 10131, 2202, 305, 24, 12517, 633, 3, 93145, 5683, 8351, 3194, 27,
          14992, 5461, 10, 5652, 2173, 4, 7046, 18, 15, 2861, 105, 1425]


def import_reference(path):
    """Import dlrm_s_pytorch with stubs for the modules only its data/report code uses."""
    for name, attrs in (("sklearn", {}), ("sklearn.metrics", {}),
                        ("torch.utils.tensorboard", {"SummaryWriter": object})):
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.__spec__ = importlib.machinery.ModuleSpec(name, None)
            m.__dict__.update(attrs)
            sys.modules[name] = m
    sys.path.insert(0, path)
    import dlrm_s_pytorch
    return dlrm_s_pytorch


def reference_model(ref, op="dot", itself=False):
    F = len(TABLES) + 1
    pairs = F * (F + 1) // 2 if itself else F * (F - 1) // 2
    ln_top = np.array([pairs + D if op == "dot" else F * D, 512, 256, 1])
    np.random.seed(123)
    return ref.DLRM_Net(D, np.array(TABLES), np.array([13, 512, 256, 64, 16]), ln_top,
                        arch_interaction_op=op, arch_interaction_itself=itself,
                        sigmoid_bot=-1, sigmoid_top=ln_top.size - 2, loss_function="bce")


def reference_state(R):
    out = {f"embeddings.{k}.weight": R.emb_l[k].weight.detach().numpy().copy()
           for k in range(len(TABLES))}
    for name, seq, n in (("bottom_mlp", R.bot_l, 4), ("top_mlp", R.top_l, 3)):
        for i in range(n):
            out[f"{name}.{i}.weight"] = seq[2 * i].weight.detach().numpy().copy()
            out[f"{name}.{i}.bias"] = seq[2 * i].bias.detach().numpy().copy()
    return out


def make_batch(rng, B=64):
    """Multi-hot bags of 0..3 rows (empty bags included), log-transformed dense counts."""
    dense = np.log1p(rng.integers(0, 100, (B, 13))).astype(np.float32)
    idx, off = [], []
    for V in TABLES:
        sizes = rng.integers(0, 4, B)
        off.append(np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64))
        idx.append(rng.integers(0, V, sizes.sum()).astype(np.int64))
    return dense, idx, off, (rng.random(B) < 0.3).astype(np.float32)


def as_torch(torch, batch):
    dense, idx, off, y = batch
    return (torch.tensor(dense), [torch.tensor(o) for o in off],
            [torch.tensor(i) for i in idx], torch.tensor(y).view(-1, 1))


def max_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference-dir", required=True, help="checkout of facebookresearch/dlrm")
    p.add_argument("--steps", type=int, default=20, help="training steps per optimizer")
    a = p.parse_args(argv)
    import torch

    import npdlrm
    ref = import_reference(a.reference_dir)
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    for op, itself in (("dot", False), ("dot", True), ("cat", False)):
        R = reference_model(ref, op, itself)
        M = npdlrm.DLRM.from_arch(BOTTOM, TOP, TABLES, D, arch_interaction_op=op,
                                  arch_interaction_itself=itself, seed=123)
        rs, ms = reference_state(R), M.state_dict()
        same = all(np.array_equal(rs[k], ms[k]) for k in rs)
        b = make_batch(rng)
        dp = np.abs(R(*as_torch(torch, b)[:3]).detach().numpy().ravel() - M.predict(*b[:3]))
        print(f"{op:3s} self-interaction={itself!s:5s}  init bitwise equal: {same}  "
              f"forward max |dp|: {dp.max():.1e}")
    optimizers = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
                  "rwsadagrad": ref.RowWiseSparseAdagrad.RWSAdagrad}
    for name, cls in optimizers.items():
        R = reference_model(ref)
        M = npdlrm.DLRM.from_arch(BOTTOM, TOP, TABLES, D, seed=123)
        lr = 0.1 if name == "sgd" else 0.01
        topt = cls(R.parameters(), lr=lr)
        sched = ref.LRPolicyScheduler(topt, 3, 6, 10)
        opt = npdlrm.Optimizer(name, lr=lr, num_warmup_steps=3, decay_start_step=6,
                               num_decay_steps=10)
        lr_equal, rows = True, []
        for _ in range(a.steps):
            b = make_batch(rng)
            lr_equal &= topt.param_groups[0]["lr"] == opt.lr
            dense, lo, li, y = as_torch(torch, b)
            loss_ref = R.loss_fn(R(dense, lo, li), y)
            topt.zero_grad()
            loss_ref.backward()
            topt.step()
            sched.step()
            loss = M.train_step(*b, opt)
            rows.append((abs(loss_ref.item() - loss), max_diff(reference_state(R),
                                                               M.state_dict())))
        print(f"{name:10s} LR sequence equal: {lr_equal}  |dloss| first {rows[0][0]:.1e} "
              f"last {rows[-1][0]:.1e}  max |dparam| first {rows[0][1]:.1e} "
              f"last {rows[-1][1]:.1e}")


if __name__ == "__main__":
    main()

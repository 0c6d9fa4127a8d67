"""npdlrm against torch running the reference's DLRM_Net: (a) sigmoid and tanh MLPs (the
reference's ReLU modules swapped for them: the reference itself ignores
--activation-function), (b) true gradient accumulation (loss / K, optimizer and LR
scheduler stepped every K batches) against npdlrm's --mlperf-grad-accum-iter; float32
and float64. Needs torch (never imported by npdlrm) and a reference checkout:

    .venv/bin/python bench/compare_training_flags.py --reference-dir /path/to/dlrm \
        [--torch-site /path/to/venv/lib/python3.11/site-packages]

--torch-site: a site-packages holding torch, when npdlrm's venv has none.
"""
import argparse
import os
import sys

import numpy as np

import npdlrm  # noqa: F401  (first, from npdlrm's venv: numba, h5py)

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--reference-dir", required=True, help="checkout of facebookresearch/dlrm")
p.add_argument("--torch-site", help="site-packages directory that holds torch")
args = p.parse_args()
if args.torch_site:
    sys.path.append(args.torch_site)
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_reference as cr  # noqa: E402
from npdlrm.grad_accum import GradientAccumulator  # noqa: E402

ref = cr.import_reference(args.reference_dir)
torch.set_num_threads(1)
D, BOT, TOP, T = cr.D, cr.BOTTOM, cr.TOP, cr.TABLES


def swap(R, act):
    for seq in (R.bot_l, R.top_l):
        for i, m in enumerate(seq):
            if isinstance(m, torch.nn.ReLU):
                seq[i] = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[act]()


rng = np.random.default_rng(7)
for act in ("sigmoid", "tanh"):
    R = cr.reference_model(ref)
    swap(R, act)
    M = npdlrm.DLRM.from_arch(BOT, TOP, T, D, seed=123, activation=act)
    topt = torch.optim.SGD(R.parameters(), lr=0.1)
    opt = npdlrm.Optimizer("sgd", lr=0.1)
    dl, dp = [], []
    for _ in range(20):
        b = cr.make_batch(rng)
        dense, lo, li, y = cr.as_torch(torch, b)
        L = R.loss_fn(R(dense, lo, li), y)
        topt.zero_grad(); L.backward(); topt.step()
        dl.append(abs(L.item() - M.train_step(*b, opt)))
        dp.append(cr.max_diff(cr.reference_state(R), M.state_dict()))
    print(f"activation {act:7s}: 20 sgd steps, max |dloss| {max(dl):.1e}, max |dparam| "
          f"first {dp[0]:.1e} last {dp[-1]:.1e}")

for name, K in (("sgd", 2), ("sgd", 4), ("adagrad", 3)):
    R = cr.reference_model(ref)
    M = npdlrm.DLRM.from_arch(BOT, TOP, T, D, seed=123)
    lr = 0.1 if name == "sgd" else 0.01
    topt = (torch.optim.SGD if name == "sgd" else torch.optim.Adagrad)(R.parameters(), lr=lr)
    sched = ref.LRPolicyScheduler(topt, 2, 4, 6)
    opt = npdlrm.Optimizer(name, lr=lr, num_warmup_steps=2, decay_start_step=4,
                           num_decay_steps=6)
    acc = GradientAccumulator(M, K)
    dl, dp = [], []
    topt.zero_grad()
    for j in range(6 * K):
        b = cr.make_batch(rng)
        dense, lo, li, y = cr.as_torch(torch, b)
        L = R.loss_fn(R(dense, lo, li), y)
        (L / K).backward()
        if (j + 1) % K == 0:
            topt.step(); sched.step(); topt.zero_grad()
        dl.append(abs(L.item() - acc.train_step(*b, opt)))
        if (j + 1) % K == 0:
            dp.append(cr.max_diff(cr.reference_state(R), M.state_dict()))
    print(f"grad accumulation {name:7s} K={K}: {6 * K} batches, 6 steps, max |dloss| "
          f"{max(dl):.1e}, max |dparam| after each step {' '.join(f'{d:.0e}' for d in dp)}")

# the same in float64 (torch model .double(), npdlrm float64 with the torch weights)
for name, K in (("sgd", 2), ("sgd", 4), ("adagrad", 3)):
    R = cr.reference_model(ref).double()
    M = npdlrm.DLRM.from_arch(BOT, TOP, T, D, seed=123, dtype="float64")
    M.load_state_dict(cr.reference_state(R))
    lr = 0.1 if name == "sgd" else 0.01
    topt = (torch.optim.SGD if name == "sgd" else torch.optim.Adagrad)(R.parameters(), lr=lr)
    sched = ref.LRPolicyScheduler(topt, 2, 4, 6)
    opt = npdlrm.Optimizer(name, lr=lr, num_warmup_steps=2, decay_start_step=4,
                           num_decay_steps=6)
    acc = GradientAccumulator(M, K)
    dl, dp = [], []
    topt.zero_grad()
    for j in range(6 * K):
        b = cr.make_batch(rng)
        b = (b[0].astype(np.float64),) + b[1:3] + (b[3].astype(np.float64),)
        dense, lo, li, y = cr.as_torch(torch, b)
        L = R.loss_fn(R(dense, lo, li), y)
        (L / K).backward()
        if (j + 1) % K == 0:
            topt.step(); sched.step(); topt.zero_grad()
        dl.append(abs(L.item() - acc.train_step(*b, opt)))
        if (j + 1) % K == 0:
            dp.append(cr.max_diff(cr.reference_state(R), M.state_dict()))
    print(f"float64 grad accumulation {name:7s} K={K}: max |dloss| {max(dl):.1e}, max "
          f"|dparam| after each step {' '.join(f'{d:.0e}' for d in dp)}")

for act in ("sigmoid", "tanh"):
    R = cr.reference_model(ref).double()
    swap(R, act)
    M = npdlrm.DLRM.from_arch(BOT, TOP, T, D, seed=123, activation=act, dtype="float64")
    M.load_state_dict(cr.reference_state(R))
    topt = torch.optim.SGD(R.parameters(), lr=0.1)
    opt = npdlrm.Optimizer("sgd", lr=0.1)
    dl, dp = [], []
    for _ in range(20):
        b = cr.make_batch(rng)
        b = (b[0].astype(np.float64),) + b[1:3] + (b[3].astype(np.float64),)
        dense, lo, li, y = cr.as_torch(torch, b)
        L = R.loss_fn(R(dense, lo, li), y)
        topt.zero_grad(); L.backward(); topt.step()
        dl.append(abs(L.item() - M.train_step(*b, opt)))
        dp.append(cr.max_diff(cr.reference_state(R), M.state_dict()))
    print(f"float64 activation {act:7s}: 20 sgd steps, max |dloss| {max(dl):.1e}, "
          f"max |dparam| last {dp[-1]:.1e}")

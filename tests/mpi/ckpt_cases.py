"""What tests/test_mpi_checkpoint.py and its worker (ckpt_worker.py) share: the model,
the data, the optimizers, the plans, and a model's state as plain arrays."""
import glob

import numpy as np

from npdlrm import DLRMConfig, Optimizer
from npdlrm.data.synthetic import SyntheticData
from npdlrm.parallel import ShardingPlan, place

CONFIG = DLRMConfig(table_sizes=(50, 7, 30, 3, 11), embedding_dim=4, bottom_mlp=(5, 8, 4),
                    top_mlp=(6, 1))
SEED = 3
BATCH = 37  # divides evenly over none of 2, 3, 4 ranks
DATA = SyntheticData(num_dense=5, table_sizes=CONFIG.table_sizes, num_samples=2000,
                     distribution="power-law", bag_size=3, fixed_bag_size=False, seed=1)
OPTIMIZERS = {"adagrad": dict(name="adagrad", lr=0.1),
              "rwsadagrad": dict(name="rwsadagrad", lr=0.1, dense="adam")}

# table -> (kind, ranks) for every plan; a plan holds each kind somewhere
PLANS = {
    "mixA": (2, [("row", [0, 1]), ("column", [1, 0]), ("replicate", [0, 1]), ("table", [1]),
                 ("column", [0, 1])]),
    "mixB": (3, [("column", [0, 1, 2]), ("row", [2, 0, 1]), ("row", [0, 1, 2]),
                 ("replicate", [0, 1, 2]), ("table", [2])]),
    "mixD": (2, [("table", [0]), ("replicate", [0, 1]), ("column", [1, 0]), ("row", [0, 1]),
                 ("row", [1, 0])]),
    "mixC": (4, [("row", [0, 1, 2, 3]), ("column", [3, 2, 1, 0]), ("table", [3]),
                 ("column", [2, 3]), ("replicate", [0, 1, 2, 3])]),
}


def optimizer(case):
    return Optimizer(**OPTIMIZERS[case])


def plan(name):
    W, kinds = PLANS[name]
    D = CONFIG.embedding_dim
    return ShardingPlan(W, CONFIG.table_sizes, D, [
        place(k, kind, V, D, ranks) for k, (V, (kind, ranks)) in
        enumerate(zip(CONFIG.table_sizes, kinds))])


def batch(i):
    """Global batch i (the same on every rank)."""
    return DATA.batch(i, BATCH, "train")


def train(model, opt, steps):
    for i in range(*steps):
        b = batch(i)
        model.train_step(b.dense, b.indices, b.offsets, b.labels, opt)


def state_of(local, opt):
    """A DLRM's parameters and optimizer state (whole or the shards it holds) as arrays."""
    out = {"params": local.params.data.copy(), "step_count": np.array(opt.step_count)}
    out.update({f"dense/{k}": np.array(v) for k, v in local.params.state.items()})
    for t in local.embeddings.tables:
        (r0, r1), (c0, c1) = t.rows, t.cols
        out[f"w/{t.table_id}/{r0}/{r1}/{c0}/{c1}"] = t.weight.copy()
        if t.state is not None:
            out[f"s/{t.table_id}/{r0}/{r1}/{c0}/{c1}"] = t.state.copy()
    return out


def assemble(parts):
    """The whole model's state from the states of its pieces (state_of of every rank)."""
    out = {}
    for part in parts:
        for key, a in part.items():
            if not key.startswith(("w/", "s/")):
                out[key] = a
                continue
            what, k, r0, r1, c0, c1 = key.split("/")
            V, D = CONFIG.table_sizes[int(k)], CONFIG.embedding_dim
            full = out.setdefault(f"{what}/{k}", np.zeros((V, D) if a.ndim == 2 else V,
                                                          a.dtype))
            cols = (slice(int(c0), int(c1)),) if a.ndim == 2 else ()
            full[(slice(int(r0), int(r1)),) + cols] = a
    return out


def load_dump(outdir, tag):
    """assemble() of the per-rank files `{tag}.rank*.npz` a worker wrote."""
    files = sorted(glob.glob(f"{outdir}/{tag}.rank*.npz"))
    assert files, f"no dump {tag} in {outdir}"
    return assemble([dict(np.load(f)) for f in files])

"""Worker of tests/test_planner.py: what each rank's all-to-alls send in one real
DistributedDLRM step, for plans made by the planner (on every rank, independently).

    mpiexec -n W python tests/mpi/planner_bytes.py

Rank 0 prints one JSON line: a list of cases, each with the config, the make_plan
arguments, the plan every rank made, and per rank the measured
PooledExchange.sent_bytes() ({'forward', 'backward'}).
"""
import json

import numpy as np

from npdlrm import DLRMConfig, Optimizer
from npdlrm.parallel import DistributedDLRM, world
from npdlrm.parallel.planner import make_plan
from mpirun import worker_main

BATCH = 37  # divides evenly by neither 2 nor 3
TABLES = (50, 7, 300, 3, 1, 120, 2000)
CONFIG = DLRMConfig(table_sizes=TABLES, embedding_dim=5, bottom_mlp=(4, 8, 5), top_mlp=(6, 1))
# (name, make_plan keyword arguments, all-to-all dtype)
CASES = [
    ("auto", {"sharding": "auto", "optimizer": "sgd"}, None),
    ("table", {"sharding": "table"}, None),
    ("row", {"sharding": "row", "optimizer": "adagrad"}, None),
    ("column", {"sharding": "column", "optimizer": "rwsadagrad"}, None),
    ("replicate", {"sharding": "replicate"}, None),
    ("overrides", {"sharding": "1:row,6:column,2:table", "optimizer": "rwsadagrad"}, None),
    ("memory", {"sharding": "auto", "memory_per_rank": 30_000}, None),
    ("float16", {"sharding": "auto"}, "float16"),
]


def global_batch(seed):
    """The same batch on every rank: bags of 0 to 3 entries."""
    rng = np.random.default_rng(seed)
    counts = [rng.integers(0, 4, BATCH) for _ in TABLES]
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in counts]
    indices = [rng.integers(0, v, int(c.sum())) for v, c in zip(TABLES, counts)]
    dense = rng.random((BATCH, 4), dtype=np.float32)
    labels = rng.integers(0, 2, BATCH).astype(np.float32)
    return dense, indices, offsets, labels


def main():
    comm = world()
    out = []
    for name, kwargs, wire in CASES:
        kwargs = {**kwargs, "batch_size": BATCH}
        plan = make_plan(CONFIG, comm.size, **kwargs)
        model = DistributedDLRM(CONFIG, comm, plan, seed=3, alltoall_dtype=wire)
        opt = Optimizer(kwargs.get("optimizer", "sgd"), lr=0.05)
        model.train_step(*global_batch(len(out)), opt)
        plans = comm.allgather_obj(plan.to_dict())
        out.append({"name": name, "config": CONFIG.to_dict(), "make_plan": kwargs,
                    "wire_bytes": np.dtype(wire or "float32").itemsize,
                    "plan": plans[0], "same_plan": all(p == plans[0] for p in plans),
                    "sent": comm.allgather_obj(model.exchange.sent_bytes())})
    if comm.rank == 0:
        print(json.dumps(out))


if __name__ == "__main__":
    worker_main(main)

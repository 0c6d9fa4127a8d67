"""Worker of tests/test_mpi_equivalence.py: K steps of a DistributedDLRM per case.

    mpiexec -n W python tests/mpi/equivalence.py OUTDIR

Writes OUTDIR/rank{r}.npz: per case, the losses, the probabilities of one batch, the
MLP parameters (every rank) and the table shards this rank holds.
"""
import sys

import numpy as np

from npdlrm import Optimizer
from npdlrm.parallel import DistributedDLRM, ShardingPlan, place, uniform_plan, world
from mpi_cases import CASES, STEPS, config_of, global_batch
from mpirun import worker_main


def mixed_plan(W, config):
    """One table of each kind (the rest table-wise), on the last ranks first."""
    kinds = ["row", "column", "replicate", "table"]
    D = config.embedding_dim
    placements = []
    for k, v in enumerate(config.table_sizes):
        kind = kinds[k % len(kinds)]
        ranks = [W - 1 - (k % W)] if kind == "table" else list(range(W))[::-1]
        placements.append(place(k, kind, v, D, sorted(ranks) if kind == "replicate" else ranks))
    return ShardingPlan(W, config.table_sizes, D, placements)


def main(outdir):
    comm = world()
    out = {}
    for case in CASES:
        name, kind, opt_name = case["name"], case["kind"], case["optimizer"]
        config = config_of(case)
        plan = mixed_plan(comm.size, config) if kind == "mixed" else \
            uniform_plan(comm.size, config.table_sizes, config.embedding_dim, kind)
        model = DistributedDLRM(config, comm, plan, seed=5, check_every=1)
        opt = Optimizer(opt_name, lr=0.1)
        losses = []
        for i in range(STEPS):
            b = global_batch(case, i)
            if i % 2:  # odd steps: only the tables this rank needs, as its loader reads them
                b = partial(b, model.tables_needed)
            losses.append(model.train_step(b["dense"], b["indices"], b["offsets"], b["labels"],
                                           opt, per_sample_weights=b["weights"]))
        b = global_batch(case, STEPS)
        out[f"{name}/predict"] = model.predict(b["dense"], b["indices"], b["offsets"],
                                               per_sample_weights=b["weights"])
        out[f"{name}/losses"] = np.array(losses)
        out[f"{name}/params"] = model.local.params.data.copy()
        for t in model.local.embeddings.tables:
            (r0, r1), (c0, c1) = t.rows, t.cols
            out[f"{name}/table{t.table_id}/{r0}-{r1}/{c0}-{c1}"] = t.weight.copy()
    out["refused"] = np.array(refusal(comm))
    np.savez(f"{outdir}/rank{comm.rank}.npz", **out)


def partial(b, needed):
    """Batch b with None for the tables not in `needed`."""
    keep = lambda seq: None if seq is None else [x if k in needed else None  # noqa: E731
                                                 for k, x in enumerate(seq)]
    return {**b, "indices": keep(b["indices"]), "offsets": keep(b["offsets"]),
            "weights": keep(b["weights"])}


def refusal(comm):
    """A bad index in a table that only the last rank reads: every rank must refuse the
    step, and nothing may change. Returns this rank's error message."""
    case = CASES[0]
    config = config_of(case)
    plan = uniform_plan(comm.size, config.table_sizes, config.embedding_dim, "table")
    model = DistributedDLRM(config, comm, plan, seed=5)
    k = next(p.table for p in plan.placements if p.ranks == (comm.size - 1,))
    b = partial(global_batch(case, 0), model.tables_needed)
    if b["indices"][k] is not None:
        b["indices"][k] = b["indices"][k].copy()
        b["indices"][k][0] = config.table_sizes[k] + 7
    before = model.local.params.data.copy()
    try:
        model.train_step(b["dense"], b["indices"], b["offsets"], b["labels"],
                         Optimizer("sgd", lr=0.1))
    except ValueError as e:
        assert np.array_equal(before, model.local.params.data)
        return str(e)
    return "accepted"


if __name__ == "__main__":
    worker_main(main, sys.argv[1])

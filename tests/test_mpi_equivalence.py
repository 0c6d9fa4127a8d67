"""The central test of distributed training: 1 rank == N ranks.

For every placement (table, row, column, replicate, and a plan mixing them) and every
optimizer, STEPS steps of a DistributedDLRM on 1, 2, 3 and 4 ranks (mpiexec; MPICH
oversubscribes the cores) give the losses, parameters and predictions of one process
training a plain DLRM on the same global batches (of 37 samples, and one of 2: fewer
than ranks). Every other step each rank is given only the tables it needs.
"""
import numpy as np
import pytest

from mpi_cases import CASES, STEPS, config_of, global_batch
from mpirun import run_mpi
from npdlrm import DLRM, Optimizer

TOL = dict(rtol=2e-5, atol=2e-6)  # float32: summation orders differ across ranks


def single_process(case):
    model = DLRM(config_of(case), seed=5)
    opt = Optimizer(case["optimizer"], lr=0.1)
    losses = []
    for i in range(STEPS):
        b = global_batch(case, i)
        losses.append(model.train_step(b["dense"], b["indices"], b["offsets"], b["labels"], opt,
                                       per_sample_weights=b["weights"]))
    b = global_batch(case, STEPS)
    p = model.predict(b["dense"], b["indices"], b["offsets"], per_sample_weights=b["weights"])
    return np.array(losses), p, model


@pytest.fixture(scope="module")
def references():
    return {case["name"]: single_process(case) for case in CASES}


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_n_ranks_train_as_one_process(world_size, tmp_path, references):
    run_mpi(world_size, ["tests/mpi/equivalence.py", tmp_path], timeout=300)
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(world_size)]
    for case in CASES:
        name = case["name"]
        losses, p, model = references[name]
        state = model.state_dict()
        for r, out in enumerate(ranks):
            np.testing.assert_allclose(out[f"{name}/losses"], losses, **TOL,
                                       err_msg=f"{name}: losses on rank {r}")
            np.testing.assert_allclose(out[f"{name}/predict"], p, **TOL,
                                       err_msg=f"{name}: predictions on rank {r}")
            np.testing.assert_allclose(out[f"{name}/params"], model.params.data, **TOL,
                                       err_msg=f"{name}: MLP parameters on rank {r}")
            assert out[f"{name}/params"].tobytes() == ranks[0][f"{name}/params"].tobytes(), \
                f"{name}: MLP parameters of rank {r} differ from rank 0's"
        covered = {k: np.zeros(v.shape, bool) for k, v in state.items()
                   if k.startswith("embeddings.")}
        for r, out in enumerate(ranks):
            for key, shard in out.items():
                parts = key.split("/")
                if parts[0] != name or not parts[1].startswith("table"):
                    continue
                k = int(parts[1][len("table"):])
                r0, r1 = map(int, parts[2].split("-"))
                c0, c1 = map(int, parts[3].split("-"))
                full = state[f"embeddings.{k}.weight"]
                np.testing.assert_allclose(shard, full[r0:r1, c0:c1], **TOL,
                                           err_msg=f"{name}: table {k} shard on rank {r}")
                covered[f"embeddings.{k}.weight"][r0:r1, c0:c1] = True
        for k, mask in covered.items():
            assert mask.all(), f"{name}: {k} is not fully held by the ranks"
    for r, out in enumerate(ranks):  # a bad index seen by one rank only: all refuse
        assert "out of range" in str(out["refused"]), (r, out["refused"])

"""The cases of the 1-rank == N-ranks test, shared by the MPI worker and the test."""
import numpy as np

from npdlrm import DLRMConfig
from npdlrm.data.synthetic import SyntheticData

STEPS = 4
BATCH = 37  # divides evenly by none of 2, 3, 4
SIZES = (37, 37, 2, 37, 37)  # step 2: fewer samples than ranks (some ranks get none)
TABLES = (50, 7, 300, 3, 1, 120)  # 3 and 1 rows: fewer rows than ranks
KINDS = ("table", "row", "column", "replicate", "mixed")
OPTIMIZERS = ("sgd", "adagrad", "rwsadagrad")
CASES = [{"name": f"{kind}-{opt}", "kind": kind, "optimizer": opt, "pooling": "sum",
          "weighted": False} for kind in KINDS for opt in OPTIMIZERS]
# mean pooling and per-sample weights go through the row shards' weights
CASES += [{"name": f"{kind}-mean-weighted", "kind": kind, "optimizer": "adagrad",
           "pooling": "mean", "weighted": True} for kind in ("row", "mixed")]


def config_of(case):
    return DLRMConfig(table_sizes=TABLES, embedding_dim=5, bottom_mlp=(4, 8, 5),
                      top_mlp=(6, 1), pooling=case["pooling"])


def global_batch(case, i):
    """Batch i (SIZES[i] samples): the same on every rank (power-law bags of 1 to 3)."""
    data = SyntheticData(num_samples=100 * BATCH, num_dense=4, table_sizes=TABLES,
                         distribution="power-law", bag_size=3, fixed_bag_size=False, seed=11)
    mb = data.batch(i, SIZES[i], "train")
    weights = None
    if case["weighted"]:
        rng = np.random.default_rng(i)
        weights = [rng.random(idx.shape[0], dtype=np.float32) + 0.5 for idx in mb.indices]
    return {"dense": mb.dense, "indices": mb.indices, "offsets": mb.offsets,
            "labels": mb.labels, "weights": weights}

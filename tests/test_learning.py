"""End to end: a small model learns a planted signal (metrics: test_metrics.py)."""

import numpy as np
import pytest

import npdlrm
from npdlrm.metrics import log_loss, roc_auc
from npdlrm.data.synthetic import SyntheticData


# ----------------------------------------------------------------------------
# learning a planted signal
# ----------------------------------------------------------------------------
TABLES = (50, 100, 30, 20)


def train_on_planted(optimizer, lr, steps=300, B=128, dtype="float32", op="dot", seed=0):
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="8-16-8", arch_mlp_top="16-1",
                                  arch_embedding_size="-".join(map(str, TABLES)),
                                  arch_sparse_feature_size=8, arch_interaction_op=op,
                                  dtype=dtype, seed=seed)
    data = SyntheticData(8, TABLES, max(steps * B, 5000), signal=2.0, bias=-0.5, seed=1)
    dense, idx, off, y, p_true = data.batch(0, 5000, "test")  # held out
    p0 = model.predict(dense, idx, off)
    start = (log_loss(y, p0), roc_auc(y, p0))
    opt = npdlrm.Optimizer(optimizer, lr=lr)
    train_losses = []
    for step in range(steps):
        d, i, o, yy, _ = data.batch(step, B)
        train_losses.append(model.train_step(d, i, o, yy, opt))
    p = model.predict(dense, idx, off)
    return dict(start=start, end=(log_loss(y, p), roc_auc(y, p)),
                planted=(log_loss(y, p_true), roc_auc(y, p_true)), train=train_losses)


@pytest.mark.parametrize("optimizer,lr,gap", [("adagrad", 0.05, 0.03), ("rwsadagrad", 0.05, 0.03),
                                              ("sgd", 0.5, 0.06)])
def test_learns_planted_signal(optimizer, lr, gap):
    r = train_on_planted(optimizer, lr)
    (loss0, auc0), (loss1, auc1), (loss_p, auc_p) = r["start"], r["end"], r["planted"]
    assert auc_p > 0.85  # the planted model itself separates the classes well
    assert loss1 < loss0 - 0.2, (loss0, loss1)
    assert auc1 > 0.8 and auc1 > auc0 + 0.2, (auc0, auc1)
    assert auc1 > auc_p - gap, (auc1, auc_p)
    assert loss1 < loss_p + 2 * gap, (loss1, loss_p)
    assert np.mean(r["train"][-50:]) < np.mean(r["train"][:50])


def test_learns_planted_signal_float64_cat():
    r = train_on_planted("adagrad", 0.05, steps=200, dtype="float64", op="cat")
    (loss0, _), (loss1, auc1), (_, auc_p) = r["start"], r["end"], r["planted"]
    assert loss1 < loss0 - 0.2
    assert auc1 > auc_p - 0.04, (auc1, auc_p)

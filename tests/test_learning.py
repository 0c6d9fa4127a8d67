"""End to end: a small model learns a planted signal; the AUC metric is exact."""
import math

import numpy as np
import pytest

import npdlrm
from npdlrm.metrics import log_loss, roc_auc
from npdlrm.data.synthetic import SyntheticData


# ----------------------------------------------------------------------------
# roc_auc against the O(n^2) pairwise definition
# ----------------------------------------------------------------------------
def pairwise_auc(labels, scores):
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize("n,levels", [(2, None), (7, 2), (50, 3), (200, 10), (301, None)])
def test_roc_auc_matches_pairwise_definition_with_ties(n, levels):
    rng = np.random.RandomState(n)
    for _ in range(5):
        y = rng.randint(0, 2, size=n)
        y[0], y[-1] = 0, 1  # both classes present
        s = rng.normal(size=n) + y * 0.5
        if levels is not None:  # many ties, within and across classes
            s = np.round(s * levels / 3) / levels
        assert roc_auc(y, s) == pytest.approx(pairwise_auc(y, s), abs=1e-12)
        assert roc_auc(y.astype(np.float32), s.astype(np.float32)) == pytest.approx(
            pairwise_auc(y, s.astype(np.float32)), abs=1e-12)


def test_roc_auc_simple_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied: half each
    assert roc_auc([0, 1, 1], [0.2, 0.2, 0.9]) == 0.75


def test_roc_auc_single_class_is_nan():
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(roc_auc([0, 0], [0.1, 0.5]))
    assert math.isnan(roc_auc([], []))


def test_log_loss():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.6, 0.5])
    expect = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert log_loss(y, p) == pytest.approx(expect, rel=1e-12)
    assert np.isfinite(log_loss([1, 0], [0.0, 1.0]))  # clipped


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

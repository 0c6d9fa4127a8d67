"""The --mlperf-logging metrics (recall, precision, f1, ap, auc, accuracy) against naive
definitions written from their textbook formulas, and against scikit-learn when it is
installed (the reference computes them with it)."""
import math

import numpy as np
import pytest

from npdlrm import metrics


def naive_counts(y, p):
    tp = fp = fn = 0
    for yi, pi in zip(y, p):
        predicted = round(float(pi)) == 1  # Python's round: half to even, as np.round
        tp += predicted and yi == 1
        fp += predicted and yi == 0
        fn += (not predicted) and yi == 1
    return tp, fp, fn


def naive_ap(y, s):
    """sum over each distinct score t, highest first, of (R(t) - R(previous t)) P(t)."""
    P = sum(y)
    if P == 0:
        return 0.0
    total, prev_r = 0.0, 0.0
    for t in sorted(set(s), reverse=True):
        chosen = [yi for yi, si in zip(y, s) if si >= t]
        prec = sum(chosen) / len(chosen)
        r = sum(chosen) / P
        total += (r - prev_r) * prec
        prev_r = r
    return total


def naive_auc(y, s):
    pos = [si for yi, si in zip(y, s) if yi == 1]
    neg = [si for yi, si in zip(y, s) if yi == 0]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def naive(y, p):
    tp, fp, fn = naive_counts(y, p)
    acc = sum(round(float(pi)) == yi for yi, pi in zip(y, p)) / len(y)
    return {"recall": tp / (tp + fn) if tp + fn else 0.0,
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "ap": naive_ap(y, p), "auc": naive_auc(y, p), "accuracy": acc}


def cases():
    rng = np.random.RandomState(0)
    out = []
    for n, levels in ((7, None), (60, None), (200, 5), (50, 2)):
        y = (rng.uniform(size=n) < 0.35).astype(np.float32)
        p = rng.uniform(size=n).astype(np.float32)
        if levels:  # many ties
            p = (np.floor(p * levels) / levels).astype(np.float32)
        out.append((y, p))
    out.append((np.array([0, 1, 1, 0, 1.]), np.array([.5, .5, .2, .2, .9])))  # 0.5 ties
    out.append((np.array([0, 0, 1.]), np.array([.1, .2, .3])))  # nothing predicted positive
    out.append((np.array([0, 0, 0.]), np.array([.1, .6, .7])))  # no positive label
    out.append((np.array([1, 1.]), np.array([.6, .4])))  # one class: auc undefined
    return out


def assert_same(got, want):
    assert set(got) == set(want)
    for k in want:
        if math.isnan(want[k]):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-15), k


@pytest.mark.parametrize("case", range(len(cases())))
def test_mlperf_metrics_match_the_definitions(case):
    y, p = cases()[case]
    assert_same(metrics.mlperf_metrics(y, p), naive(list(y), list(p)))


@pytest.mark.parametrize("case", range(len(cases())))
def test_mlperf_metrics_match_scikit_learn(case):
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed "
                              "(the naive references above are the tests that always run)")
    y, p = cases()[case]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = {"recall": skm.recall_score(y, np.round(p)),
                "precision": skm.precision_score(y, np.round(p)),
                "f1": skm.f1_score(y, np.round(p)),
                "ap": skm.average_precision_score(y, p),
                "auc": skm.roc_auc_score(y, p) if len(set(y)) == 2 else math.nan,
                "accuracy": skm.accuracy_score(y, np.round(p))}
    assert_same(metrics.mlperf_metrics(y, p), {k: float(v) for k, v in want.items()})


def test_single_metrics_say_undefined_as_nan_unless_told():
    y, p = np.array([0, 0, 1.]), np.array([.1, .2, .3])
    assert math.isnan(metrics.precision(y, p))
    assert metrics.precision(y, p, zero_division=0.0) == 0.0
    assert metrics.recall(y, p) == 0.0 and metrics.f1(y, p) == 0.0
    assert math.isnan(metrics.recall([0, 0], [.2, .7]))
    assert math.isnan(metrics.f1([0, 0], [.2, .3]))
    assert math.isnan(metrics.average_precision([0, 0], [.2, .3]))
    y, p = cases()[1]
    assert metrics.average_precision(y, p) == pytest.approx(naive_ap(list(y), list(p)),
                                                            rel=1e-12)
    assert metrics.recall(y, p) == pytest.approx(naive(list(y), list(p))["recall"])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        metrics.mlperf_metrics([0, 2], [.1, .2])
    with pytest.raises(ValueError, match="probabilities must be in"):
        metrics.mlperf_metrics([0, 1], [.1, 1.2])

"""Metrics against slow, obvious references: pairwise AUC, explicit loops; ties, one class,
empty and tiny inputs, float32 inputs, and the refusals of bad labels and probabilities."""
import math
import warnings

import numpy as np
import pytest

from npdlrm.metrics import (accuracy, calibration, evaluate, format_metric, log_loss,
                            normalized_entropy, roc_auc)


# ---- slow references ------------------------------------------------------------
def ref_auc(labels, scores):
    pos = [float(s) for y, s in zip(labels, scores) if y == 1]
    neg = [float(s) for y, s in zip(labels, scores) if y == 0]
    if not pos or not neg:
        return math.nan
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def ref_log_loss(labels, probs, eps=1e-12):
    if len(labels) == 0:
        return math.nan
    total = 0.0
    for y, p in zip(labels, probs):
        p = min(max(float(p), eps), 1 - eps)
        total += -math.log(p) if y == 1 else -math.log(1 - p)
    return total / len(labels)


def ref_accuracy(labels, probs):
    if len(labels) == 0:
        return math.nan
    return sum(1 for y, p in zip(labels, probs) if np.round(p) == y) / len(labels)


def ref_ne(labels, probs):
    if len(labels) == 0:
        return math.nan
    q = sum(float(y) for y in labels) / len(labels)
    if q in (0.0, 1.0):
        return math.nan
    return ref_log_loss(labels, probs) / -(q * math.log(q) + (1 - q) * math.log(1 - q))


def ref_calibration(labels, probs):
    positives = sum(float(y) for y in labels)
    if positives == 0:
        return math.nan
    return sum(float(p) for p in probs) / positives


def same_metric(a, b, rel=1e-12):
    if math.isnan(b):
        return math.isnan(a)
    return a == pytest.approx(b, rel=rel, abs=1e-12)


def random_case(n, levels, seed, dtype=np.float64):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 2, size=n).astype(dtype)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + y)))
    if levels is not None:  # many ties within and across classes, exact 0.5 included
        p = np.round(p * levels) / levels
    return y, p.astype(dtype)


# ---- every metric against its reference -------------------------------------------
@pytest.mark.parametrize("n,levels", [(1, None), (2, None), (3, 2), (9, 2), (60, 4),
                                      (250, 10), (301, None)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_metrics_match_slow_references(n, levels, dtype):
    for seed in range(4):
        y, p = random_case(n, levels, seed + 10 * n, dtype)
        got = evaluate(y, p)
        expect = {"auc": ref_auc(y, p), "log_loss": ref_log_loss(y, p),
                  "accuracy": ref_accuracy(y, p), "ne": ref_ne(y, p),
                  "calibration": ref_calibration(y, p)}
        for key, value in expect.items():
            assert same_metric(got[key], value), (key, got[key], value, y, p)
        assert got["count"] == n and got["positives"] == int(y.sum())
        assert isinstance(got["count"], int) and isinstance(got["positives"], int)
        assert same_metric(roc_auc(y, p), expect["auc"])
        assert same_metric(log_loss(y, p), expect["log_loss"])
        assert same_metric(accuracy(y, p), expect["accuracy"])
        assert same_metric(normalized_entropy(y, p), expect["ne"])
        assert same_metric(calibration(y, p), expect["calibration"])


def test_small_exact_values():
    y, p = [0, 0, 1, 1], [0.1, 0.5, 0.5, 0.8]
    m = evaluate(y, p)
    assert m["auc"] == (1 + 0.5 + 1 + 1) / 4  # one tied pair counts half
    assert m["accuracy"] == 0.75  # p = 0.5 is a negative prediction
    assert m["calibration"] == pytest.approx((0.1 + 0.5 + 0.5 + 0.8) / 2)
    assert m["ne"] == pytest.approx(m["log_loss"] / math.log(2))  # mean label 0.5
    assert evaluate([1, 0], [0.5, 0.5])["accuracy"] == 0.5
    assert evaluate([1, 0], [0.5000001, 0.5])["accuracy"] == 1.0
    assert roc_auc([0, 1, 1], [0.2, 0.2, 0.9]) == 0.75


def test_auc_takes_any_scores_and_ignores_their_scale():
    y = np.array([0, 1, 0, 1, 1, 0])
    logits = np.array([-3.0, 2.0, 0.5, 0.5, 10.0, -np.inf])
    assert roc_auc(y, logits) == ref_auc(y, logits)
    assert roc_auc(y, logits) == roc_auc(y, 1 / (1 + np.exp(-logits)))


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_not_a_fake_value(label):
    y = np.full(5, label, dtype=np.float32)
    p = np.array([0.1, 0.3, 0.5, 0.7, 0.9], dtype=np.float32)
    m = evaluate(y, p)
    assert math.isnan(m["auc"]) and math.isnan(m["ne"])
    assert math.isnan(m["calibration"]) == (label == 0)
    if label == 1:
        assert m["calibration"] == pytest.approx(float(np.mean(p.astype(np.float64))))
    assert m["log_loss"] == pytest.approx(ref_log_loss(y, p), rel=1e-12)
    assert m["accuracy"] == ref_accuracy(y, p)
    assert m["count"] == 5 and m["positives"] == 5 * label


def test_one_row():
    m = evaluate([1.0], [0.75])
    assert math.isnan(m["auc"]) and math.isnan(m["ne"])
    assert m["accuracy"] == 1.0 and m["calibration"] == 0.75
    assert m["log_loss"] == pytest.approx(-math.log(0.75))


def test_empty_input_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = evaluate([], [])
        for key in ("auc", "log_loss", "accuracy", "ne", "calibration"):
            assert math.isnan(m[key]), key
        assert m["count"] == 0 and m["positives"] == 0
        assert math.isnan(log_loss(np.zeros(0), np.zeros(0, np.float32)))
        assert math.isnan(accuracy([], []))


def test_log_loss_clips_certain_mistakes():
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-12), rel=1e-6)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-11)


def test_labels_of_any_numeric_type():
    p = [0.2, 0.9, 0.6]
    base = evaluate([0, 1, 1], p)
    for y in ([False, True, True], np.array([0, 1, 1], np.int8), np.array([0., 1., 1.], np.float32)):
        assert evaluate(y, p) == base


# ---- refusals -------------------------------------------------------------------
@pytest.mark.parametrize("labels,pos,bad", [([0, 1, 2], 2, "2"), ([0, -1, 1], 1, "-1"),
                                            ([0.5, 1, 0], 0, "0.5"), ([1, 0, np.nan], 2, "nan")])
def test_bad_labels_name_value_and_position(labels, pos, bad):
    p = [0.5] * len(labels)
    for fn in (evaluate, roc_auc, log_loss, accuracy, normalized_entropy, calibration):
        with pytest.raises(ValueError, match=rf"labels must be 0 or 1.* position {pos} is {bad}"):
            fn(labels, p)


@pytest.mark.parametrize("probs,pos,bad", [([0.1, 1.5, 0.2], 1, "1.5"), ([-0.1, 0.5, 0.2], 0, "-0.1"),
                                           ([0.1, 0.2, np.nan], 2, "nan"),
                                           ([0.1, np.inf, 0.3], 1, "inf")])
def test_bad_probabilities_name_value_and_position(probs, pos, bad):
    for fn in (evaluate, log_loss, accuracy, normalized_entropy, calibration):
        with pytest.raises(ValueError, match=rf"in \[0, 1\].* position {pos} is {bad}"):
            fn([0, 1, 0], probs)


def test_nan_scores_and_length_mismatch_and_non_numbers_are_refused():
    with pytest.raises(ValueError, match=r"scores must not be NaN.* position 1 is nan"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match=r"3 labels but 2 probabilities"):
        evaluate([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"2 labels but 3 scores"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"labels must be numbers"):
        evaluate(["0", "1"], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"probabilities must be numbers"):
        evaluate([0, 1], ["a", "b"])


# ---- printing -------------------------------------------------------------------
def test_format_metric():
    assert format_metric("auc", float("nan")) == "undefined"
    assert format_metric("ne", np.float32("nan")) == "undefined"
    assert format_metric("calibration", None) == "undefined"
    assert format_metric("auc", 0.75) == "0.75000"
    assert format_metric("log_loss", 0.123456789, precision=3) == "0.123"
    assert format_metric("accuracy", 0.5) == "50.000 %"
    assert format_metric("count", 12345) == "12,345"
    assert format_metric("auc", evaluate([1, 1], [0.2, 0.4])["auc"]) == "undefined"

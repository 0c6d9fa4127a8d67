"""Evaluation metrics, exact and without scikit-learn.

Undefined values are nan, never a stand-in: AUC and normalized entropy of one class,
calibration without a positive, anything of an empty input. `evaluate` returns them all.
"""
import math

import numpy as np

LOG_LOSS_EPS = 1e-12


def _first_bad(bad, values, what):
    """Raise ValueError naming the first True of `bad` (same length as `values`)."""
    i = int(np.flatnonzero(bad)[0])
    raise ValueError(f"{what} at position {i} is {values[i].item()!r}")


def check_labels(labels):
    """labels: (N,) of 0/1 (bool, int or float) -> float64 (N,); anything else is refused."""
    y = np.asarray(labels).ravel()
    if y.dtype.kind not in "biuf":
        raise ValueError(f"labels must be numbers 0 or 1, got dtype {y.dtype}")
    bad = (y != 0) & (y != 1)  # NaN is neither
    if bad.any():
        _first_bad(bad, y, "labels must be 0 or 1; the label")
    return y.astype(np.float64)


def _numbers(values, n, what, check_nan=True):
    """values: (n,) real numbers (none NaN when check_nan) -> float64 (n,)."""
    v = np.asarray(values).ravel()
    if v.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numbers, got dtype {v.dtype}")
    if v.size != n:
        raise ValueError(f"{n} labels but {v.size} {what}: expected one per label")
    bad = np.isnan(v) if check_nan and v.dtype.kind == "f" else np.zeros(v.shape, bool)
    if bad.any():
        _first_bad(bad, v, f"{what} must not be NaN; the value")
    return v.astype(np.float64)


def check_probs(probs, n):
    """probs: (n,) in [0, 1], no NaN -> float64 (n,)."""
    p = _numbers(probs, n, "probabilities", check_nan=False)
    bad = ~((p >= 0) & (p <= 1))  # NaN fails both comparisons
    if bad.any():
        _first_bad(bad, p, "probabilities must be in [0, 1]; the probability")
    return p


def _check_scores(scores, n):
    return _numbers(scores, n, "scores")


def _auc(y, s):
    """y: (N,) float 0/1; s: (N,) float64 scores. Mann-Whitney U over average ranks."""
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg_rank = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _log_loss(y, p, eps=LOG_LOSS_EPS):
    if y.size == 0:
        return math.nan
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _accuracy(y, p):
    if y.size == 0:
        return math.nan
    return float(np.mean((p > 0.5) == (y == 1)))  # 0.5 counts as negative, like np.round


def _entropy(q):
    """Entropy (nats) of a Bernoulli(q); 0 when q is 0 or 1."""
    if q <= 0 or q >= 1:
        return 0.0
    return -(q * math.log(q) + (1 - q) * math.log1p(-q))


def _ne(y, p):
    if y.size == 0:
        return math.nan
    h = _entropy(float(np.mean(y)))
    return _log_loss(y, p) / h if h > 0 else math.nan


def _calibration(y, p):
    positives = float(np.sum(y))
    return float(np.sum(p)) / positives if positives > 0 else math.nan


def roc_auc(labels, scores):
    """Exact ROC AUC by ranks, ties counted as half. labels: (N,) 0/1; scores: (N,).

    nan when only one class is present (AUC is undefined there) or N is 0."""
    y = check_labels(labels)
    return _auc(y, _check_scores(scores, y.size))


def log_loss(labels, probs, eps=LOG_LOSS_EPS):
    """Mean binary cross-entropy (nats) of probabilities clipped to [eps, 1 - eps]."""
    y = check_labels(labels)
    return _log_loss(y, check_probs(probs, y.size), eps)


def accuracy(labels, probs):
    """Fraction of samples with (p > 0.5) == label; p = 0.5 is a negative prediction."""
    y = check_labels(labels)
    return _accuracy(y, check_probs(probs, y.size))


def normalized_entropy(labels, probs):
    """Log loss / entropy of the mean label; nan when one class only (entropy 0)."""
    y = check_labels(labels)
    return _ne(y, check_probs(probs, y.size))


def calibration(labels, probs):
    """Mean prediction / mean label; nan when there is no positive."""
    y = check_labels(labels)
    return _calibration(y, check_probs(probs, y.size))


def evaluate(labels, probs):
    """labels, probs: (N,). Returns auc, log_loss, accuracy, ne, calibration (floats, nan
    where undefined), count and positives (ints)."""
    y = check_labels(labels)
    p = check_probs(probs, y.size)
    return {"auc": _auc(y, p), "log_loss": _log_loss(y, p), "accuracy": _accuracy(y, p),
            "ne": _ne(y, p), "calibration": _calibration(y, p),
            "count": int(y.size), "positives": int(np.sum(y))}


def _confusion(y, p):
    """(tp, fp, fn) of the predictions p > 0.5 (np.round's: 0.5 is negative)."""
    pred, pos = p > 0.5, y == 1
    tp = int(np.count_nonzero(pred & pos))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(pos)) - tp


def _ratio(num, den, zero_division):
    return num / den if den > 0 else zero_division


def _average_precision(y, s, zero_division):
    """sum over the distinct thresholds, highest first, of (R_n - R_n-1) P_n."""
    n_pos = int(np.count_nonzero(y == 1))
    if n_pos == 0:
        return zero_division
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1]  # tie groups
    tps = np.cumsum(y_sorted)[ends]
    precision = tps / (ends + 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision(labels, probs, zero_division=math.nan):
    """TP / (TP + FP) of the predictions p > 0.5; zero_division when nothing is predicted
    positive (scikit-learn's default there is 0)."""
    y = check_labels(labels)
    tp, fp, _ = _confusion(y, check_probs(probs, y.size))
    return _ratio(tp, tp + fp, zero_division)


def recall(labels, probs, zero_division=math.nan):
    """TP / (TP + FN) of the predictions p > 0.5; zero_division without a positive label."""
    y = check_labels(labels)
    tp, _, fn = _confusion(y, check_probs(probs, y.size))
    return _ratio(tp, tp + fn, zero_division)


def f1(labels, probs, zero_division=math.nan):
    """2 TP / (2 TP + FP + FN) of the predictions p > 0.5; zero_division when there is
    neither a positive label nor a positive prediction."""
    y = check_labels(labels)
    tp, fp, fn = _confusion(y, check_probs(probs, y.size))
    return _ratio(2 * tp, 2 * tp + fp + fn, zero_division)


def average_precision(labels, scores, zero_division=math.nan):
    """Area under the step precision-recall curve (scikit-learn's average_precision_score):
    sum of (R_n - R_n-1) P_n over the distinct scores, highest first, ties as one
    threshold. zero_division without a positive label."""
    y = check_labels(labels)
    return _average_precision(y, _check_scores(scores, y.size), zero_division)


def mlperf_metrics(labels, probs):
    """The reference's --mlperf-logging evaluation: recall, precision, f1 (of p > 0.5,
    as np.round), ap, auc and accuracy. As scikit-learn there, a ratio whose denominator
    is 0 is 0 (e.g. precision when nothing is predicted positive); auc of one class is
    nan."""
    y = check_labels(labels)
    p = check_probs(probs, y.size)
    tp, fp, fn = _confusion(y, p)
    return {"recall": _ratio(tp, tp + fn, 0.0), "precision": _ratio(tp, tp + fp, 0.0),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn, 0.0),
            "ap": _average_precision(y, p, 0.0), "auc": _auc(y, p),
            "accuracy": _accuracy(y, p)}


def format_metric(name, value, precision=5):
    """A metric for people: nan or None says "undefined"; accuracy in percent."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "undefined"
    if name in ("count", "positives"):
        return f"{int(value):,}"
    if name == "accuracy":
        return f"{100 * value:.{max(precision - 2, 1)}f} %"
    return f"{value:.{precision}f}"

"""Losses on the logit, each returning (mean loss, dloss/dlogit)."""
import numpy as np


def sigmoid(z):
    """Numerically stable logistic function; z: (B,)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)


def bce_with_logits(z, y, weights=None):
    """z, y: (B,); weights: None or (2,) per label value (weighted BCE).

    loss_b = max(z, 0) - z*y + log1p(exp(-|z|)) = -(y log p + (1-y) log(1-p)).
    Returns (loss: float, dz: (B,)) with dz = w (p - y) / B.
    """
    B = z.shape[0]
    z64 = z.astype(np.float64)
    per = np.maximum(z64, 0) - z64 * y + np.log1p(np.exp(-np.abs(z64)))
    dz = sigmoid(z) - y
    if weights is not None:
        w = np.asarray(weights, dtype=z.dtype)[y.astype(np.int64)]
        per = per * w
        dz *= w
    dz /= B
    return float(per.mean()), dz


def mse_on_probability(z, y):
    """Mean of (sigmoid(z) - y)^2; dz = 2 (p - y) p (1 - p) / B."""
    B = z.shape[0]
    p = sigmoid(z)
    r = p - y
    loss = float(np.mean(np.square(r, dtype=np.float64)))
    dz = 2 * r * p * (1 - p) / B
    return loss, dz.astype(z.dtype, copy=False)


def clamp_logits(z, threshold):
    """The reference's clamp of p to [t, 1-t] (0 < t < 1), done on the logit z: (B,).

    Returns (clamped z, mask of the entries left alone) or (z, None) when t is 0."""
    if not 0 < threshold < 1:
        return z, None
    hi = np.log1p(-threshold) - np.log(threshold)  # logit(1 - t)
    inside = np.abs(z) <= hi
    return np.clip(z, -hi, hi).astype(z.dtype, copy=False), inside


def compute_loss(kind, z, y, weights=None):
    """kind: 'bce' | 'wbce' | 'mse'; z, y: (B,) in the model dtype."""
    if kind == "bce":
        return bce_with_logits(z, y)
    if kind == "wbce":
        return bce_with_logits(z, y, weights)
    if kind == "mse":
        return mse_on_probability(z, y)
    raise ValueError(f"loss must be 'bce', 'wbce' or 'mse', got {kind!r}")

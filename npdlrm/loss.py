"""Losses on the logit, each returning (mean loss, dloss/dlogit)."""
import numpy as np

from .backend import get_array_module, to_host


def sigmoid(z):
    """Numerically stable logistic function; z: (B,)."""
    xp = get_array_module(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)


def _mean(per, count):
    """The mean of per-sample losses (B,) over `count` samples (None: B)."""
    return float(per.mean()) if count is None else float(per.sum() / count)


def bce_with_logits(z, y, weights=None, count=None):
    """z, y: (B,); weights: None or (2,) per label value (weighted BCE); count: the
    samples the mean runs over (None: B; a distributed step's global batch).

    loss_b = max(z, 0) - z*y + log1p(exp(-|z|)) = -(y log p + (1-y) log(1-p)).
    Returns (loss: float, dz: (B,)) with dz = w (p - y) / count.
    """
    xp = get_array_module(z)
    B = z.shape[0] if count is None else count
    z64 = z.astype(np.float64)
    per = xp.maximum(z64, 0) - z64 * y + xp.log1p(xp.exp(-xp.abs(z64)))
    dz = sigmoid(z) - y
    if weights is not None:
        w = xp.asarray(weights, dtype=z.dtype)[y.astype(np.int64)]
        per = per * w
        dz *= w
    dz /= B
    return _mean(per, count), dz


def mse_on_probability(z, y, count=None):
    """Mean of (sigmoid(z) - y)^2; dz = 2 (p - y) p (1 - p) / count (None: B)."""
    B = z.shape[0] if count is None else count
    p = sigmoid(z)
    r = p - y
    loss = _mean(get_array_module(r).square(r, dtype=np.float64), count)
    dz = 2 * r * p * (1 - p) / B
    return loss, dz.astype(z.dtype, copy=False)


def clamp_logits(z, threshold):
    """The reference's clamp of p to [t, 1-t] (0 < t < 1), done on the logit z: (B,).

    Returns (clamped z, mask of the entries left alone) or (z, None) when t is 0."""
    if not 0 < threshold < 1:
        return z, None
    xp = get_array_module(z)
    hi = np.log1p(-threshold) - np.log(threshold)  # logit(1 - t), a host float
    inside = xp.abs(z) <= hi
    return xp.clip(z, -hi, hi).astype(z.dtype, copy=False), inside


def compute_loss(kind, z, y, weights=None, count=None):
    """kind: 'bce' | 'wbce' | 'mse'; z, y: (B,) in the model dtype; count: the samples
    the mean runs over (None: B). Returns (this part's share of the mean, dz: (B,))."""
    if kind == "bce":
        return bce_with_logits(z, y, count=count)
    if kind == "wbce":
        return bce_with_logits(z, y, weights, count)
    if kind == "mse":
        return mse_on_probability(z, y, count)
    raise ValueError(f"loss must be 'bce', 'wbce' or 'mse', got {kind!r}")


HUGE = 1e30  # a parameter this large means an update has blown up


def check_loss(loss, parameters=None):
    """Raise FloatingPointError for a non-finite loss (before any parameter changes).

    parameters: None, or a callable giving {name: array}, looked at only then: the
    message says when they already hold non-finite or huge values (an earlier step's
    update blew up: a finite loss does not mean a finite update)."""
    if np.isfinite(loss):
        return
    message = f"the loss is {loss}: refusing the step, no parameter was changed"
    arrays = {} if parameters is None else {n: to_host(a) for n, a in parameters().items()
                                            if a.size}
    bad = {n: int(np.count_nonzero(~np.isfinite(a))) for n, a in arrays.items()}
    bad = {n: c for n, c in bad.items() if c}
    largest = max(((float(np.abs(a).max()), n) for n, a in arrays.items()
                   if n not in bad), default=(0.0, None))
    advice = ("written by an earlier step whose update blew up: lower the learning rate "
              "and resume from a checkpoint")
    if bad:
        shown = ", ".join(f"{c:,} in {n}" for n, c in list(bad.items())[:3])
        message += (f"; the parameters already hold non-finite values ({shown}"
                    f"{', ...' if len(bad) > 3 else ''}), {advice}")
    elif largest[0] > HUGE:
        message += (f"; the parameters already hold huge values (up to {largest[0]:.3g} in "
                    f"{largest[1]}), {advice}")
    else:
        message += " (lower the learning rate?)"
    raise FloatingPointError(message)

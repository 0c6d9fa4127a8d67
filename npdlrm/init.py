"""Parameter initialisation identical to the reference DLRM (bit for bit).

One legacy `RandomState(seed)` stream: every table in order, then the bottom MLP,
then the top MLP; drawn in float64 and cast to the model dtype.
"""
import numpy as np

ROWS_PER_CHUNK = 1 << 16  # rows drawn at once for large tables (bounded memory)


def fill_table_reference(weight, rng):
    """weight: (V, D), filled with uniform(-sqrt(1/V), sqrt(1/V)) in row chunks."""
    V, D = weight.shape
    bound = np.sqrt(1 / V)
    for r0 in range(0, V, ROWS_PER_CHUNK):
        r1 = min(V, r0 + ROWS_PER_CHUNK)
        weight[r0:r1] = rng.uniform(low=-bound, high=bound, size=(r1 - r0, D))


def fill_table_fast(weight, gen):
    """Non-reference: same distribution, drawn in float32 by a PCG64 Generator."""
    V, D = weight.shape
    bound = np.float32(np.sqrt(1 / V))
    for r0 in range(0, V, ROWS_PER_CHUNK):
        r1 = min(V, r0 + ROWS_PER_CHUNK)
        block = gen.random((r1 - r0, D), dtype=np.float32)
        weight[r0:r1] = (block * 2 - 1) * bound


def fill_linear_reference(weight, bias, rng):
    """weight: (m, n) ~ normal(0, sqrt(2/(m+n))); bias: (m,) ~ normal(0, sqrt(1/m))."""
    m, n = weight.shape
    weight[...] = rng.normal(0.0, np.sqrt(2 / (m + n)), size=(m, n))
    bias[...] = rng.normal(0.0, np.sqrt(1 / m), size=m)


def initialize(tables, bottom_layers, top_layers, seed, method="reference"):
    """tables: list of (V, D) arrays; *_layers: lists of (weight, bias) arrays, filled in place.

    method "none" leaves the arrays as they are (their values are about to be loaded)."""
    if method == "none":
        return
    if method == "reference":
        rng = np.random.RandomState(seed)
        for w in tables:
            fill_table_reference(w, rng)
    elif method == "fast":
        gen = np.random.Generator(np.random.PCG64(seed))
        for w in tables:
            fill_table_fast(w, gen)
        rng = np.random.RandomState(seed)
    else:
        raise ValueError(f"init must be 'reference' or 'fast', got {method!r} ('none' skips "
                         f"initialisation when the weights are about to be loaded)")
    for weight, bias in list(bottom_layers) + list(top_layers):
        fill_linear_reference(weight, bias, rng)

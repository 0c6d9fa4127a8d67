"""Parameter initialisation identical to the reference DLRM (bit for bit).

One legacy `RandomState(seed)` stream: every table in order, then the bottom MLP,
then the top MLP; drawn in float64 and cast to the model dtype.
"""
import numpy as np

ROWS_PER_CHUNK = 1 << 16  # rows drawn at once for large tables (bounded memory)


def _scatter(block, r0, shards):
    """Copy the full-table rows [r0, r0 + len(block)) of `block` into the `shards` that hold
    them (objects with weight, row_start, col_start, as EmbeddingTable)."""
    r1 = r0 + block.shape[0]
    for s in shards:
        a, b = max(r0, s.row_start), min(r1, s.row_start + s.weight.shape[0])
        if a < b:
            c = s.col_start
            s.weight[a - s.row_start:b - s.row_start] = block[a - r0:b - r0,
                                                              c:c + s.weight.shape[1]]


def _fill_table(shape, shards, draw):
    """Draw the full (V, D) table in row chunks (the stream is the same whatever is kept)
    and keep what `shards` hold; `draw(rows, D, bound)` returns one chunk."""
    V, D = shape
    bound = np.sqrt(1 / V)
    for r0 in range(0, V, ROWS_PER_CHUNK):
        r1 = min(V, r0 + ROWS_PER_CHUNK)
        _scatter(draw(r1 - r0, D, bound), r0, shards)


class _Whole:
    def __init__(self, weight):
        self.weight, self.row_start, self.col_start = weight, 0, 0


def fill_table_reference(weight, rng, shards=None):
    """weight: (V, D), filled with uniform(-sqrt(1/V), sqrt(1/V)) in row chunks.

    With `shards`, `weight` is the full table's shape (V, D) and only the shards' pieces
    of it are kept (the stream is drawn whole, so each piece equals the full table's)."""
    shape = weight if shards is not None else weight.shape
    _fill_table(shape, shards if shards is not None else [_Whole(weight)],
                lambda n, D, bound: rng.uniform(low=-bound, high=bound, size=(n, D)))


def fill_table_fast(weight, gen, shards=None):
    """Non-reference: same distribution, drawn in float32 by a PCG64 Generator."""
    shape = weight if shards is not None else weight.shape

    def draw(n, D, bound):
        return (gen.random((n, D), dtype=np.float32) * 2 - 1) * np.float32(bound)
    _fill_table(shape, shards if shards is not None else [_Whole(weight)], draw)


def fill_linear_reference(weight, bias, rng):
    """weight: (m, n) ~ normal(0, sqrt(2/(m+n))); bias: (m,) ~ normal(0, sqrt(1/m))."""
    m, n = weight.shape
    weight[...] = rng.normal(0.0, np.sqrt(2 / (m + n)), size=(m, n))
    bias[...] = rng.normal(0.0, np.sqrt(1 / m), size=m)


def initialize(tables, bottom_layers, top_layers, seed, method="reference"):
    """tables: per table, its (V, D) array, or ((V, D), shards) for the pieces of it this
    process holds (EmbeddingTable shards; the values equal the whole table's);
    *_layers: lists of (weight, bias) arrays, filled in place.

    method "none" leaves the arrays as they are (their values are about to be loaded)."""
    if method == "none":
        return
    split = [(t, None) if isinstance(t, np.ndarray) else t for t in tables]
    if method == "reference":
        rng = np.random.RandomState(seed)
        for w, shards in split:
            fill_table_reference(w, rng, shards)
    elif method == "fast":
        gen = np.random.Generator(np.random.PCG64(seed))
        for w, shards in split:
            fill_table_fast(w, gen, shards)
        rng = np.random.RandomState(seed)
    else:
        raise ValueError(f"init must be 'reference' or 'fast', got {method!r} ('none' skips "
                         f"initialisation when the weights are about to be loaded)")
    for weight, bias in list(bottom_layers) + list(top_layers):
        fill_linear_reference(weight, bias, rng)


# ---- embedding variants (npdlrm.embedding_variants) -------------------------------
# The reference draws its QR tables and MD projections from torch's generator, which
# NumPy cannot replay: npdlrm draws them from streams of their own, so that every other
# parameter (plain and MD tables, MLPs: the reference's NumPy stream) stays bit for bit
# the reference's. Stream keys of SeedSequence(seed, spawn_key=(key,)):
QR_STREAM, PROJECTION_STREAM = 1, 2
QR_INITS = ("symmetric", "reference")


def variant_stream(seed, key):
    """The PCG64 Generator of stream `key` (QR_STREAM, PROJECTION_STREAM) of `seed`."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(key,))))


def fill_uniform(weight, gen, low, high):
    """weight: (V, D), filled with uniform(low, high) drawn in float64 in row chunks."""
    for r0 in range(0, weight.shape[0], ROWS_PER_CHUNK):
        r1 = min(weight.shape[0], r0 + ROWS_PER_CHUNK)
        weight[r0:r1] = gen.uniform(low, high, size=(r1 - r0, weight.shape[1]))


def qr_bounds(n, qr_init):
    """(low, high) of the QR tables of an n-row table. symmetric: +-sqrt(1/n), what the
    reference's QREmbeddingBag documents; reference: what it draws, nn.init.uniform_(w,
    sqrt(1/n)), i.e. uniform(sqrt(1/n), 1)."""
    if qr_init == "symmetric":
        return -np.sqrt(1 / n), np.sqrt(1 / n)
    if qr_init == "reference":
        return np.sqrt(1 / n), 1.0
    raise ValueError(f"qr_init must be one of {QR_INITS}, got {qr_init!r}")


def initialize_variants(qr_tables, projections, seed, method="reference",
                        qr_init="symmetric"):
    """qr_tables: [(n, quotient (ceil(n/c), D), remainder (c, D))]; projections: MD
    (D, d) matrices, xavier-uniform as torch's: uniform(+-sqrt(6 / (d + D))). Filled in
    place (method 'none': left as they are, their values are about to be loaded)."""
    if method == "none":
        return
    if qr_init not in QR_INITS:
        raise ValueError(f"qr_init must be one of {QR_INITS}, got {qr_init!r}")
    gen = variant_stream(seed, QR_STREAM)
    for n, quotient, remainder in qr_tables:
        low, high = qr_bounds(n, qr_init)
        fill_uniform(quotient, gen, low, high)
        fill_uniform(remainder, gen, low, high)
    gen = variant_stream(seed, PROJECTION_STREAM)
    for P in projections:
        bound = np.sqrt(6 / (P.shape[0] + P.shape[1]))
        fill_uniform(P, gen, -bound, bound)

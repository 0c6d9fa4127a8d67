"""Central-difference gradient checking (float64), shared by the layer and model tests.

    numeric_grad(f, x, eps)   d f / d x by central differences, x perturbed in place
    rel_error(num, ana)       max |num - ana| / max(1, |num|, |ana|)
    assert_grad_close(...)    the two together, with a readable failure message

x may be a parameter on the GPU (a CuPy array): its entries are then set one at a time
on the device, from a host copy of its values, and restored bitwise.

Also the tiny models and multi-hot batches the gradient tests are built on.
"""
import numpy as np

import npdlrm
from npdlrm import backend

EPS = 1e-6
TOL = 1e-6


def numeric_grad(f, x, eps=EPS, entries=None):
    """Central differences of the scalar f() wrt the array x (float64, modified in place
    and restored bitwise).  entries: None for every entry, else flat indices to check;
    returns an array shaped like x (NaN where not checked). On the GPU the perturbed
    values are written from a host copy of x, so they are the same bits as on the CPU."""
    assert x.dtype == np.float64, "gradient checks run in float64"
    flat = x.reshape(-1)
    assert shares_memory(flat, x), "x must be perturbable in place"
    values = np.array(backend.to_host(flat))  # a copy, on the host
    out = np.full(x.size, np.nan)
    todo = range(x.size) if entries is None else entries
    for i in todo:
        orig = values[i]
        flat[i] = orig + eps
        fp = float(f())
        flat[i] = orig - eps
        fm = float(f())
        flat[i] = orig
        out[i] = (fp - fm) / (2 * eps)
    assert np.array_equal(backend.to_host(flat), values), "x not restored"
    return out.reshape(x.shape)


def shares_memory(a, b):
    """np.shares_memory, for two NumPy or two CuPy arrays."""
    return bool(backend.get_array_module(a, b).shares_memory(a, b))


def rel_error(num, ana):
    """max |num - ana| / max(1, |num|, |ana|) over the entries where num is not NaN."""
    num = np.asarray(num, dtype=np.float64)
    ana = np.asarray(ana, dtype=np.float64)
    assert num.shape == ana.shape, (num.shape, ana.shape)
    m = ~np.isnan(num)
    if not m.any():
        return 0.0
    n, a = num[m], ana[m]
    return float(np.max(np.abs(n - a) / np.maximum(1.0, np.maximum(np.abs(n), np.abs(a)))))


def assert_grad_close(f, x, analytic, name="", eps=EPS, tol=TOL, entries=None):
    """Check analytic (shaped like x) against central differences of f wrt x.

    x: a NumPy or CuPy array (see numeric_grad); analytic: either, compared on the host.
    Returns the numeric gradient (for further checks), a NumPy array."""
    num = numeric_grad(f, x, eps, entries)
    analytic = backend.to_host(analytic)
    assert analytic.shape == x.shape, f"{name}: gradient shape {analytic.shape} != {x.shape}"
    assert np.all(np.isfinite(analytic)), f"{name}: non-finite analytic gradient"
    err = rel_error(num, analytic)
    if not err < tol:
        diff = np.where(np.isnan(num), 0, np.abs(num - analytic))
        worst = np.unravel_index(int(np.argmax(diff)), x.shape)
        raise AssertionError(
            f"{name}: relative error {err:.3e} >= {tol:.0e}; worst entry {worst}: "
            f"numeric {num[worst]!r} analytic {analytic[worst]!r}")
    return num


# ----------------------------------------------------------------------------
# tiny models and multi-hot batches
# ----------------------------------------------------------------------------
TINY = dict(arch_mlp_bot="4-3-2", arch_mlp_top="3-1", arch_embedding_size="5-6-7",
            arch_sparse_feature_size=2)

# Bags per table for a batch of 4 (one list per sample).  Table 0 (5 rows): row 1 once,
# row 2 twice within one bag, row 0 across bags, row 3 once, row 4 never; an empty bag.
# Table 1 (6 rows): rows 5 and 0 across bags, row 3 three times in one bag, rows 1, 2, 4
# never. Table 2 (7 rows): every bag non-empty, rows 0 and 6 never.
BAGS = [
    [[1], [2, 2, 0], [], [0, 3]],
    [[5, 0], [], [3, 3, 3, 5], [0]],
    [[1, 2, 3], [4], [5, 2], [2, 1, 1]],
]


def csr(bags, dtype=np.int64):
    """bags: list of lists -> (indices (nnz,), offsets (B+1,))."""
    lengths = [len(b) for b in bags]
    offsets = np.zeros(len(bags) + 1, dtype=dtype)
    offsets[1:] = np.cumsum(lengths)
    indices = np.array([i for b in bags for i in b], dtype=dtype)
    return indices, offsets


def tiny_batch(bags=BAGS, num_dense=4, seed=0, labels="binary"):
    """dense (B, num_dense), indices, offsets (B+1 form), labels (B,)."""
    rng = np.random.RandomState(seed)
    B = len(bags[0])
    dense = rng.uniform(0.2, 1.5, size=(B, num_dense))
    indices, offsets = zip(*(csr(b) for b in bags))
    if labels == "binary":
        y = (np.arange(B) % 2 == 0).astype(np.float64)
    else:
        y = rng.uniform(0, 1, size=B)
    return dense, list(indices), list(offsets), y


def tiny_model(dtype="float64", seed=1, **kw):
    args = dict(TINY)
    args.update(kw)
    return npdlrm.DLRM.from_arch(seed=seed, dtype=dtype, **args)


def writable_params(model):
    """name -> the live, writable parameter array behind state_dict()[name]."""
    out = dict(model.params.views)
    for k, table in enumerate(model.embeddings.tables):
        out[f"embeddings.{k}.weight"] = table.weight
    sd = model.state_dict()
    assert set(out) == set(sd)
    for name, a in out.items():
        assert shares_memory(a, sd[name]) and a.shape == sd[name].shape
    return out


def touched_rows(indices):
    return np.unique(backend.to_host(indices))

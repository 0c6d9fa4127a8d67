"""Whole-model float64 central-difference gradient checks (every parameter entry).

Tests taking `device` build the model there (tests/devices.py): it takes the NumPy
batches, its parameters and gradients live on the device, gradcheck perturbs the
parameters in place there, and gradients are compared on the host.
"""
import numpy as np
import pytest

from devices import host
from gradcheck import (BAGS, assert_grad_close, shares_memory, tiny_batch, tiny_model,
                       touched_rows, writable_params)

import npdlrm
from npdlrm import backend

WBCE_WEIGHTS = (0.4, 1.7)


def check_model_grads(model, dense, indices, offsets, labels, psw=None, entries_per_tensor=None,
                      seed=0):
    """Check every gradient loss_and_grad returns against central differences.

    entries_per_tensor: None checks all entries, else a random subset of that many per tensor
    (embedding tables: all touched rows plus a sample of untouched ones)."""
    loss, grads = model.loss_and_grad(dense, indices, offsets, labels, per_sample_weights=psw)
    params = writable_params(model)
    assert set(grads) == set(params)
    assert np.isfinite(loss)

    def f():
        return model.loss_and_grad(dense, indices, offsets, labels, per_sample_weights=psw)[0]

    assert f() == loss  # the loss is a pure function of the parameters
    rng = np.random.RandomState(seed)
    for name, x in params.items():
        g = grads[name]
        entries = None
        if entries_per_tensor is not None and x.size > entries_per_tensor:
            entries = rng.choice(x.size, entries_per_tensor, replace=False)
        if name.startswith("embeddings."):
            k = int(name.split(".")[1])
            assert isinstance(g, npdlrm.SparseGrad), name
            assert backend.device_of(g.values) == backend.device_of(x), name
            touched = touched_rows(indices[k])
            # exactly the touched rows, sorted, unique; untouched rows exactly zero
            np.testing.assert_array_equal(host(g.rows), touched)
            assert g.values.shape == (touched.size, x.shape[1])
            assert g.values.dtype == x.dtype
            dense_g = host(g.to_dense())
            untouched = np.setdiff1d(np.arange(x.shape[0]), touched)
            assert (dense_g[untouched] == 0).all()
            num = assert_grad_close(f, x, dense_g, name, entries=entries)
            checked_untouched = num[untouched]
            checked_untouched = checked_untouched[~np.isnan(checked_untouched)]
            assert (checked_untouched == 0).all(), f"{name}: loss depends on an untouched row"
        else:
            assert isinstance(g, type(x)) and g.shape == x.shape and g.dtype == x.dtype, name
            assert not shares_memory(g, x)
            assert_grad_close(f, x, g, name, entries=entries)
    return grads


def labels_for(loss, B, seed=0):
    if loss == "mse":
        return np.random.RandomState(seed).uniform(0, 1, size=B)
    return (np.arange(B) % 2 == 0).astype(np.float64)


def assert_nonvacuous(grads):
    """Each dense tensor and each table must have a non-zero gradient somewhere."""
    for name, g in grads.items():
        values = host(g.values if isinstance(g, npdlrm.SparseGrad) else g)
        assert np.abs(values).max() > 1e-8, f"{name}: zero gradient, the check is vacuous"


def test_gradcheck_batch_covers_every_kind_of_row():
    """The batch the model checks use: rows touched once, several times within one bag,
    across bags, never; empty bags; variable bag sizes."""
    _, indices, offsets, _ = tiny_batch()
    kinds = set()
    for k, (idx, off) in enumerate(zip(indices, offsets)):
        V = (5, 6, 7)[k]
        bags = [list(idx[off[b]:off[b + 1]]) for b in range(len(off) - 1)]
        for r in range(V):
            in_bags = [b.count(r) for b in bags if r in b]
            if not in_bags:
                kinds.add("never")
            elif len(in_bags) > 1:
                kinds.add("across bags")
            elif in_bags[0] > 1:
                kinds.add("repeated in one bag")
            else:
                kinds.add("once")
        kinds.update("empty bag" for b in bags if not b)
        assert len({len(b) for b in bags}) > 1
    assert kinds == {"never", "across bags", "repeated in one bag", "once", "empty bag"}


@pytest.mark.parametrize("loss", ["bce", "wbce", "mse"])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("interaction", ["dot", "cat"])
def test_model_grad(device, interaction, pooling, loss):
    model = tiny_model(arch_interaction_op=interaction, pooling=pooling, loss=loss,
                       loss_weights=WBCE_WEIGHTS if loss == "wbce" else (1.0, 1.0),
                       arch_mlp_top="3-1" if interaction == "dot" else "4-1", device=device)
    dense, indices, offsets, _ = tiny_batch()
    labels = labels_for(loss, dense.shape[0])
    grads = check_model_grads(model, dense, indices, offsets, labels)
    assert_nonvacuous(grads)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_model_grad_self_interaction(device, pooling):
    model = tiny_model(arch_interaction_itself=True, pooling=pooling, device=device)
    dense, indices, offsets, labels = tiny_batch()
    grads = check_model_grads(model, dense, indices, offsets, labels)
    assert_nonvacuous(grads)


@pytest.mark.parametrize("interaction", ["dot", "cat"])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_model_grad_per_sample_weights(device, interaction, pooling):
    model = tiny_model(arch_interaction_op=interaction, pooling=pooling, device=device)
    dense, indices, offsets, labels = tiny_batch()
    rng = np.random.RandomState(11)
    psw = [rng.uniform(0.3, 2.0, size=i.shape) for i in indices]
    psw[1] = None  # a table without weights beside weighted ones
    grads = check_model_grads(model, dense, indices, offsets, labels, psw=psw)
    assert_nonvacuous(grads)
    # the weights matter: unweighted gradients of table 0 differ
    _, plain = model.loss_and_grad(dense, indices, offsets, labels)
    assert not np.allclose(host(plain["embeddings.0.weight"].values),
                           host(grads["embeddings.0.weight"].values))


def test_model_grad_soft_label_bce(device):
    model = tiny_model(device=device)
    dense, indices, offsets, labels = tiny_batch(labels="soft")
    assert_nonvacuous(check_model_grads(model, dense, indices, offsets, labels))


def test_model_grad_batch_of_one_and_bag_start_offsets(device):
    """B = 1 (a (1, D) slice is 'contiguous') with B-length offsets (bag starts)."""
    model = tiny_model(arch_interaction_op="cat", arch_mlp_top="4-1", device=device)
    bags = [[b[2]] for b in BAGS]  # the third sample alone: one empty bag, one repeated row
    dense, indices, offsets, _ = tiny_batch(bags=bags, seed=4)
    starts = [o[:-1] for o in offsets]
    check_model_grads(model, dense, indices, starts, np.array([1.0]))


def test_model_grad_deeper_larger_model_sampled_entries(device):
    """A deeper model, bigger tables, a batch of 80 (more than one 64-row chunk in the
    bias reductions): a random subset of entries per tensor."""
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="5-8-6-4", arch_mlp_top="7-5-1",
                                  arch_embedding_size="40-9-25", arch_sparse_feature_size=4,
                                  arch_interaction_itself=True, pooling="mean", loss="wbce",
                                  loss_weights=(0.7, 1.3), dtype="float64", seed=7,
                                  device=device)
    rng = np.random.RandomState(8)
    B = 80
    dense = rng.uniform(0, 2, size=(B, 5))
    indices, offsets = [], []
    for V in (40, 9, 25):
        lengths = rng.randint(0, 5, size=B)
        lengths[3] = 0
        offsets.append(np.r_[0, np.cumsum(lengths)])
        indices.append(rng.randint(0, V, size=lengths.sum()))
    labels = (rng.uniform(size=B) < 0.5).astype(np.float64)
    grads = check_model_grads(model, dense, indices, offsets, labels, entries_per_tensor=25)
    assert_nonvacuous(grads)


def test_float32_gradients_match_float64(device):
    """The float32 model computes the same gradients up to float32 rounding."""
    dense, indices, offsets, labels = tiny_batch()
    m32 = tiny_model("float32", device=device)
    m64 = tiny_model("float64", device=device)
    m64.load_state_dict(m32.state_dict())  # the same (float32-representable) parameters
    l64, g64 = m64.loss_and_grad(dense, indices, offsets, labels)
    l32, g32 = m32.loss_and_grad(dense, indices, offsets, labels)
    np.testing.assert_allclose(l32, l64, rtol=1e-5)
    for name in g64:
        a, b = g32[name], g64[name]
        if isinstance(b, npdlrm.SparseGrad):
            np.testing.assert_array_equal(host(a.rows), host(b.rows))
            a, b = a.values, b.values
        a, b = host((a, b))
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)

"""Float64 central-difference gradient checks of every layer on its own.

Tests taking `device` run the layer on each device (tests/devices.py): inputs made with
NumPy and moved with on(), parameters on the device (perturbed there by gradcheck),
results compared on the host.
"""
import numpy as np
import pytest

from devices import host, on
from gradcheck import assert_grad_close, csr

from npdlrm import backend
from npdlrm.embedding import EmbeddingTable, SparseGrad
from npdlrm.interaction import CatInteraction, DotInteraction
from npdlrm.linear import linear_backward, linear_forward
from npdlrm.loss import compute_loss
from npdlrm.mlp import MLP
from npdlrm.params import FlatParams
from npdlrm.relu import relu_backward, relu_forward


def params_on(device, specs):
    """A float64 FlatParams on `device` (zeros)."""
    params = FlatParams(specs, np.float64)
    params.to(backend.array_module(device), lambda a: on(device, a))
    return params


def away_from_zero(a, margin=1e-2):
    """Push entries of a away from 0 (ReLU kinks) without changing their sign."""
    return np.where(np.abs(a) < margin, np.where(a < 0, -margin, margin), a)


# ----------------------------------------------------------------------------
# linear (with and without the fused ReLU) and relu
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("relu", [False, True])
def test_linear_grad(device, relu):
    rng = np.random.RandomState(1)
    B, n, m = 6, 4, 5
    x = rng.normal(size=(B, n))
    W = rng.normal(size=(m, n))
    b = rng.normal(size=m)
    # keep every pre-activation away from the ReLU kink
    b += np.where(np.abs(x @ W.T + b) < 1e-2, 0.05, 0.0).max(axis=0)
    pre = x @ W.T + b
    assert np.abs(pre).min() > 1e-3
    if relu:
        assert (pre > 0).any() and (pre < 0).any(), "both sides of the ReLU exercised"
    G = rng.normal(size=(B, m))

    def f():
        return np.sum(G * host(linear_forward(*on(device, (x, W, b)), relu=relu)))

    xd, Wd, bd = on(device, (x, W, b))
    y = linear_forward(xd, Wd, bd, relu=relu)
    np.testing.assert_allclose(host(y), np.maximum(pre, 0) if relu else pre, rtol=1e-13,
                               atol=1e-13)
    # linear_backward adds into dW / db: start from non-zero accumulators
    dW0, db0 = rng.normal(size=(m, n)), rng.normal(size=m)
    dW, db = on(device, (dW0.copy(), db0.copy()))
    dx = linear_backward(dW, db, on(device, G.copy()), xd, Wd, y=y if relu else None)
    dx, dW, db = host((dx, dW, db))
    assert_grad_close(f, x, dx, "dx")
    assert_grad_close(f, W, dW - dW0, "dW")
    assert_grad_close(f, b, db - db0, "db")

    # need_dx=False: same parameter gradients, no dx
    dW2, db2 = on(device, (np.zeros_like(W), np.zeros_like(b)))
    assert linear_backward(dW2, db2, on(device, G.copy()), xd, Wd, y=y if relu else None,
                           need_dx=False) is None
    np.testing.assert_allclose(host(dW2), dW - dW0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(db2), db - db0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_relu_agrees_with_relu_on_non_finite(device, dtype):
    """linear_forward(relu=True) is linear then relu_forward (np.maximum), NaN and inf
    included: a NaN (here from inf - inf) must not be turned into 0 by the fused ReLU, or
    the model's non-finite-loss guard never sees it."""
    x = np.array([[np.inf, 1.0], [np.nan, 0.0], [1.0, -np.inf], [2.0, 3.0]], dtype=dtype)
    W = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.5]], dtype=dtype)
    b = np.array([0.5, -np.inf, 0.0], dtype=dtype)
    x, W, b = on(device, (x, W, b))
    with np.errstate(invalid="ignore"):
        pre = linear_forward(x, W, b, relu=False)
        fused = host(linear_forward(x, W, b, relu=True))
        unfused = host(relu_forward(pre))
    assert np.isnan(unfused).any()
    np.testing.assert_array_equal(fused, unfused)  # NaN positions must agree too


def test_relu_grad(device):
    rng = np.random.RandomState(2)
    x = away_from_zero(rng.normal(size=(5, 7)))
    G = rng.normal(size=(5, 7))
    y = relu_forward(on(device, x))
    assert np.array_equal(host(y), np.maximum(x, 0))
    dx = host(relu_backward(on(device, G), y))
    assert_grad_close(lambda: np.sum(G * host(relu_forward(on(device, x)))), x, dx,
                      "relu dx")
    assert (dx[x < 0] == 0).all() and np.array_equal(dx[x > 0], G[x > 0])


# ----------------------------------------------------------------------------
# MLP stack
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("relu_last", [False, True])
@pytest.mark.parametrize("sizes", [(4, 3), (4, 6, 5, 2), (3, 5, 1)])
def test_mlp_grad(device, sizes, relu_last):
    rng = np.random.RandomState(3)
    params = FlatParams(MLP.param_specs(sizes, "m"), np.float64)
    params.data[...] = rng.normal(size=params.size)
    for name in params.names:  # positive biases: units active on some samples, not all
        if name.endswith("bias"):
            params.views[name][...] = rng.uniform(0.2, 1.0, size=params.views[name].shape)
    params.to(backend.array_module(device), lambda a: on(device, a))
    mlp = MLP(sizes, relu_last, params, "m")
    B = 7
    x = rng.normal(size=(B, sizes[0]))
    G = rng.normal(size=(B, sizes[-1]))

    def f():
        return np.sum(G * host(mlp.forward(on(device, x), keep=False)))

    # a reference forward in plain NumPy
    h = x
    for i in range(len(sizes) - 1):
        h = h @ host(params.views[f"m.{i}.weight"]).T + host(params.views[f"m.{i}.bias"])
        if i < len(sizes) - 2 or relu_last:
            assert np.abs(h).min() > 1e-4, "a pre-activation sits on a ReLU kink: reseed"
            h = np.maximum(h, 0)
    np.testing.assert_allclose(host(mlp.forward(on(device, x), keep=False)), h, rtol=1e-12,
                               atol=1e-12)

    params.zero_grad()
    mlp.forward(on(device, x))
    dx = host(mlp.backward(on(device, G.copy())))
    assert dx.shape == x.shape
    assert_grad_close(f, x, dx, "mlp dx")
    for name in params.names:
        assert host(params.grads[name]).any(), f"{name}: vacuous check (all ReLUs dead)"
        assert_grad_close(f, params.views[name], params.grads[name], name)

    # backward adds into the grad buffer; need_dx=False returns None
    before = host(params.grad).copy()
    mlp.forward(on(device, x))
    assert mlp.backward(on(device, G.copy()), need_dx=False) is None
    np.testing.assert_allclose(host(params.grad), 2 * before, rtol=1e-12, atol=1e-12)


def test_mlp_backward_without_forward_is_refused(device):
    params = params_on(device, MLP.param_specs((3, 2), "m"))
    mlp = MLP((3, 2), False, params, "m")
    with pytest.raises(RuntimeError):
        mlp.backward(on(device, np.ones((4, 2))))
    mlp.forward(on(device, np.ones((4, 3))))
    mlp.backward(on(device, np.ones((4, 2))))
    with pytest.raises(RuntimeError):  # the kept forward pass is consumed
        mlp.backward(on(device, np.ones((4, 2))))


# ----------------------------------------------------------------------------
# interactions
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("self_interaction", [False, True])
@pytest.mark.parametrize("F,D", [(2, 3), (4, 2), (5, 4)])
def test_dot_interaction_grad(device, F, D, self_interaction):
    rng = np.random.RandomState(4)
    B = 3
    T = rng.normal(size=(B, F, D))
    layer = DotInteraction(F, D, self_interaction)
    out = host(layer.forward(on(device, T)))
    # values: bottom output, then pairs for i in range(F): for j in range(i (+1))
    pairs = [(i, j) for i in range(F) for j in range(i + (1 if self_interaction else 0))]
    assert out.shape == (B, D + len(pairs)) == (B, layer.out_width)
    expect = np.concatenate([T[:, 0, :]] + [np.sum(T[:, i] * T[:, j], axis=1)[:, None]
                                            for i, j in pairs], axis=1)
    np.testing.assert_allclose(out, expect, rtol=1e-13, atol=1e-13)

    G = rng.normal(size=out.shape)
    dT = host(layer.backward(on(device, G.copy())))
    assert dT.shape == T.shape
    assert_grad_close(lambda: np.sum(G * host(layer.forward(on(device, T), keep=False))), T,
                      dT, "dot dT")


def test_cat_interaction_grad(device):
    rng = np.random.RandomState(5)
    B, F, D = 3, 4, 2
    T = rng.normal(size=(B, F, D))
    layer = CatInteraction(F, D)
    out = host(layer.forward(on(device, T)))
    assert out.shape == (B, F * D) == (B, layer.out_width)
    np.testing.assert_array_equal(out, np.concatenate([T[:, f] for f in range(F)], axis=1))
    G = rng.normal(size=out.shape)
    dT = host(layer.backward(on(device, G.copy())))
    assert_grad_close(lambda: np.sum(G * host(layer.forward(on(device, T), keep=False))), T,
                      dT, "cat dT")


# ----------------------------------------------------------------------------
# losses, on the logit
# ----------------------------------------------------------------------------
Z = np.array([-9.0, -3.0, -0.7, -1e-3, 0.0, 0.4, 1.5, 4.0, 12.0])
Y_BIN = np.array([1, 0, 1, 0, 1, 1, 0, 0, 1], dtype=np.float64)
Y_SOFT = np.array([0.3, 0.0, 1.0, 0.5, 0.25, 0.9, 0.1, 0.6, 0.75])


def _sig(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("kind,y,weights", [
    ("bce", Y_BIN, None),
    ("bce", Y_SOFT, None),
    ("wbce", Y_BIN, (0.3, 2.5)),
    ("wbce", Y_BIN, (1.0, 1.0)),
    ("mse", Y_BIN, None),
    ("mse", Y_SOFT, None),
])
def test_loss_value_and_grad(device, kind, y, weights):
    z = Z.copy()
    loss, dz = compute_loss(kind, *on(device, (z, y)), weights)
    dz = host(dz)
    p = _sig(z)
    if kind == "mse":
        expect = np.mean((p - y) ** 2)
    else:
        per = -(y * np.log(p) + (1 - y) * np.log1p(-p))
        if kind == "wbce":
            per = per * np.where(y == 1, weights[1], weights[0])
        expect = np.mean(per)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, expect, rtol=1e-12)
    assert dz.shape == z.shape and dz.dtype == np.float64
    assert_grad_close(lambda: compute_loss(kind, *on(device, (z, y)), weights)[0], z, dz,
                      f"{kind} dz")


def test_loss_extreme_logits_are_finite(device):
    z = np.array([-800.0, 800.0, -50.0, 50.0])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    for kind, w in (("bce", None), ("wbce", (0.5, 2.0)), ("mse", None)):
        loss, dz = compute_loss(kind, *on(device, (z, y)), w)
        assert np.isfinite(loss) and np.isfinite(host(dz)).all(), kind
    loss, dz = compute_loss("bce", *on(device, (z, y)))
    dz = host(dz)
    np.testing.assert_allclose(loss, (800 + 800 + np.log1p(np.exp(-50)) * 2) / 4, rtol=1e-12)
    np.testing.assert_allclose(dz, np.array([-1, 1, 0, 0]) / 4, atol=1e-20)


# ----------------------------------------------------------------------------
# embedding bags
# ----------------------------------------------------------------------------
# 7 rows: row 1 once, row 2 twice in one bag, row 0 in two bags, row 4 three times over
# two bags, rows 3, 5 and 6 never; two empty bags.
EMB_BAGS = [[1], [2, 0, 2], [], [0, 4, 4], [], [4]]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("mean", [False, True])
@pytest.mark.parametrize("itype", [np.int32, np.int64])
def test_embedding_bag_grad(device, mean, weighted, itype):
    rng = np.random.RandomState(6)
    V, D = 7, 3
    table = EmbeddingTable(V, D, np.float64)
    table.weight[...] = rng.normal(size=(V, D))
    weight = table.weight.copy()
    table.to(backend.array_module(device), lambda a: on(device, a))
    indices, offsets = csr(EMB_BAGS, itype)
    offsets = offsets.astype(np.int64)
    B = len(EMB_BAGS)
    psw = rng.uniform(0.5, 2.0, size=indices.shape) if weighted else None
    bags = on(device, (indices, offsets, psw))

    out = on(device, np.empty((B, D)))
    table.lookup(out, *bags, mean)
    out = host(out)
    # values against a plain loop
    for b, bag in enumerate(EMB_BAGS):
        s = offsets[b]
        w = psw[s:s + len(bag)] if weighted else np.ones(len(bag))
        e = sum((w[t] * weight[r] for t, r in enumerate(bag)), np.zeros(D))
        if mean and bag:
            e = e / len(bag)
        np.testing.assert_allclose(out[b], e, rtol=1e-13, atol=1e-15)

    G = rng.normal(size=(B, D))

    def f():
        o = on(device, np.empty((B, D)))
        table.lookup(o, *bags, mean)
        return np.sum(G * host(o))

    g = table.grad(on(device, G.copy()), *bags, mean)
    assert isinstance(g, SparseGrad)
    assert g.shape == (V, D)
    np.testing.assert_array_equal(host(g.rows), [0, 1, 2, 4])  # sorted, unique, touched only
    dense = host(g.to_dense())
    num = assert_grad_close(f, table.weight, dense, "embedding")
    untouched = [3, 5, 6]
    assert (dense[untouched] == 0).all()
    assert (num[untouched] == 0).all()
    assert (np.abs(dense[[0, 1, 2, 4]]).min(axis=1) > 0).all()


def test_embedding_bag_strided_output(device):
    """The model pools into a strided view of the interaction input (B, F, D)."""
    rng = np.random.RandomState(7)
    table = EmbeddingTable(5, 2, np.float64)
    table.weight[...] = rng.normal(size=(5, 2))
    weight = table.weight.copy()
    table.to(backend.array_module(device), lambda a: on(device, a))
    indices, offsets = csr([[1, 2], [], [4, 4, 0]])
    T = on(device, np.full((3, 4, 2), 7.0))
    table.lookup(T[:, 2, :], *on(device, (indices, offsets)))
    T = host(T)
    expect = np.stack([weight[1] + weight[2], np.zeros(2), 2 * weight[4] + weight[0]])
    np.testing.assert_allclose(T[:, 2, :], expect, rtol=1e-14)
    assert (T[:, [0, 1, 3], :] == 7.0).all()

"""--activation-function: relu, sigmoid and tanh, forward against naive formulas and
backward against float64 central differences (each alone, in an MLP, in a whole DLRM)."""
import numpy as np
import pytest

from gradcheck import assert_grad_close, tiny_batch, tiny_model
from test_model_grad import check_model_grads

import npdlrm
from npdlrm.activations import ACTIVATIONS, activation_backward, activation_forward
from npdlrm.mlp import MLP
from npdlrm.params import FlatParams

NAIVE = {"relu": lambda x: np.where(x > 0, x, 0.0),
         "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
         "tanh": lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_forward_matches_the_formula(name):
    x = np.random.RandomState(0).uniform(-6, 6, (5, 7))
    y = activation_forward(name, x.copy())
    np.testing.assert_allclose(y, NAIVE[name](x), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_float32_extremes_stay_finite(name):
    x = np.array([[-1e4, -90.0, 0.0, 90.0, 1e4]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = activation_forward(name, x.copy())
    assert y.dtype == np.float32 and np.isfinite(y).all()
    lo = 0.0 if name == "sigmoid" else -1.0
    assert y[0, 0] == lo and y[0, -1] == 1.0


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_backward_matches_central_differences(name):
    rng = np.random.RandomState(1)
    x = rng.uniform(-3, 3, (4, 6))
    x[np.abs(x) < 0.05] = 0.3  # keep ReLU away from its kink
    w = rng.normal(size=x.shape)  # loss = sum(w * f(x))

    def f():
        return float(np.sum(w * activation_forward(name, x.copy())))

    y = activation_forward(name, x.copy())
    dx = activation_backward(name, w.copy(), y)
    assert_grad_close(f, x, dx, name)


def test_unknown_activation_is_refused_by_name():
    with pytest.raises(ValueError, match="'gelu'"):
        activation_forward("gelu", np.zeros((1, 1)))
    with pytest.raises(ValueError, match="'gelu'"):
        npdlrm.DLRMConfig.from_arch("4-3-2", "3-1", "5-6", 2, activation="gelu")


def _mlp(activation, relu_last, sizes=(4, 5, 3)):
    specs = MLP.param_specs(sizes, "m")
    params = FlatParams(specs, np.float64)
    params.data[:] = np.random.RandomState(2).normal(0, 0.7, params.size)
    return MLP(sizes, relu_last, params, "m", activation), params


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("relu_last", [True, False])
def test_mlp_gradients(name, relu_last):
    mlp, params = _mlp(name, relu_last)
    rng = np.random.RandomState(3)
    x = rng.uniform(-1, 1, (6, 4))
    w = rng.normal(size=(6, 3))

    def f():
        return float(np.sum(w * mlp.forward(x, keep=False)))

    # naive forward: the activation after every layer (but the last unless relu_last)
    h = x
    for i, (W, b) in enumerate(mlp.layers()):
        h = h @ W.T + b
        if i < 1 or relu_last:
            h = NAIVE[name](h)
    np.testing.assert_allclose(mlp.forward(x, keep=False), h, rtol=1e-13)
    params.zero_grad()
    mlp.forward(x, keep=True)
    dx = mlp.backward(w.copy())
    assert_grad_close(f, params.data, params.grad.copy(), f"{name} params")
    assert_grad_close(f, x, dx, f"{name} input")


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_whole_model_gradients(name, loss):
    model = tiny_model(activation=name, loss=loss)
    dense, indices, offsets, y = tiny_batch()
    check_model_grads(model, dense, indices, offsets, y)


def test_relu_default_is_unchanged_and_activation_changes_the_model():
    dense, indices, offsets, _ = tiny_batch()
    p = {a: tiny_model(activation=a).predict(dense, indices, offsets) for a in ACTIVATIONS}
    np.testing.assert_array_equal(tiny_model().predict(dense, indices, offsets), p["relu"])
    assert not np.allclose(p["relu"], p["sigmoid"]) and not np.allclose(p["sigmoid"], p["tanh"])
    cfg = tiny_model(activation="tanh").config
    assert npdlrm.DLRMConfig.from_dict(cfg.to_dict()).activation == "tanh"


def test_config_dict_leaves_the_default_out():
    relu = tiny_model().config.to_dict()
    assert "activation" not in relu  # a plain model's dict is what it always was
    assert npdlrm.DLRMConfig.from_dict(relu).activation == "relu"
    assert tiny_model(activation="sigmoid").config.to_dict()["activation"] == "sigmoid"

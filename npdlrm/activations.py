"""The MLPs' activations (`--activation-function`): relu, sigmoid, tanh.

Each derivative is a function of the activation's output y, so a layer keeps only its
output for the backward. ReLU's hot path is fused with the bias in the kernels
(linear.py); the functions here serve every activation, ReLU included.
"""
from .backend import get_array_module
from .loss import sigmoid

ACTIVATIONS = ("relu", "sigmoid", "tanh")


def check_activation(name):
    """name, or ValueError naming it."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")
    return name


def activation_forward(name, y):
    """In place y = f(y); y: (B, n) float. Returns y."""
    xp = get_array_module(y)
    if name == "relu":
        xp.maximum(y, 0, out=y)
    elif name == "sigmoid":
        y[...] = sigmoid(y)
    elif name == "tanh":
        xp.tanh(y, out=y)
    else:
        check_activation(name)
    return y


def activation_backward(name, dy, y):
    """In place dy *= f'(x), with y = f(x) the forward output; dy, y: (B, n). Returns dy.

    relu: 1 where y > 0 (else 0, as torch's threshold backward); sigmoid: y (1 - y);
    tanh: 1 - y^2."""
    xp = get_array_module(dy)
    if name == "relu":
        dy[...] = xp.where(y > 0, dy, 0)
    elif name == "sigmoid":
        dy *= y * (1 - y)
    elif name == "tanh":
        dy *= 1 - y * y
    else:
        check_activation(name)
    return dy

"""ReLU: y = max(x, 0)."""
from .backend import get_array_module


def relu_forward(x):
    """x: (B, n); returns y: (B, n)."""
    xp = get_array_module(x)
    return xp.maximum(x, 0)


def relu_backward(dy, y):
    """dy, y: (B, n) with y the forward output; returns dx: (B, n)."""
    return dy * (y > 0)

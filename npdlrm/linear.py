"""Linear layer y = x @ W.T + b, optionally fused with a ReLU on its output."""
from . import backend
from .backend import get_array_module


def linear_forward(x, weight, bias, relu=False, out=None):
    """x: (B, n); weight: (m, n); bias: (m,); out: None or (B, m) to write into.

    Returns y: (B, m), ReLU'd when relu."""
    xp, k = get_array_module(x, weight), backend.kernels(x, weight)
    y = xp.matmul(x, weight.T, out=out)
    if relu:
        k.bias_relu_forward(y, bias)
    else:
        k.bias_forward(y, bias)
    return y


def linear_backward(dweight, dbias, dy, x, weight, y=None, need_dx=True, dx_out=None,
                    dw_tmp=None):
    """Adds into dweight: (m, n) and dbias: (m,).

    dy: (B, m) contiguous, overwritten when y is given (the ReLU output: (B, m));
    x: (B, n) the forward input; dx_out: None or (B, n); dw_tmp: None or (m, n) scratch.
    Returns dx: (B, n), or None when need_dx is False.
    """
    xp, k = get_array_module(dy, weight), backend.kernels(dy, weight)
    if y is not None:
        k.relu_bias_backward(dbias, dy, y)
    else:
        k.bias_backward(dbias, dy)
    dweight += xp.matmul(dy.T, x, out=dw_tmp)
    return xp.matmul(dy, weight, out=dx_out) if need_dx else None

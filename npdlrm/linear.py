"""Linear layer y = x @ W.T + b, optionally fused with a ReLU on its output."""
import numpy as np

from . import kernels


def linear_forward(x, weight, bias, relu=False, out=None):
    """x: (B, n); weight: (m, n); bias: (m,); out: None or (B, m) to write into.

    Returns y: (B, m), ReLU'd when relu."""
    y = np.matmul(x, weight.T, out=out)
    if relu:
        kernels.bias_relu_forward(y, bias)
    else:
        kernels.bias_forward(y, bias)
    return y


def linear_backward(dweight, dbias, dy, x, weight, y=None, need_dx=True, dx_out=None,
                    dw_tmp=None):
    """Adds into dweight: (m, n) and dbias: (m,).

    dy: (B, m) contiguous, overwritten when y is given (the ReLU output: (B, m));
    x: (B, n) the forward input; dx_out: None or (B, n); dw_tmp: None or (m, n) scratch.
    Returns dx: (B, n), or None when need_dx is False.
    """
    if y is not None:
        kernels.relu_bias_backward(dbias, dy, y)
    else:
        kernels.bias_backward(dbias, dy)
    dweight += np.matmul(dy.T, x, out=dw_tmp)
    return np.matmul(dy, weight, out=dx_out) if need_dx else None

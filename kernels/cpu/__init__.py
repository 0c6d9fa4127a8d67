"""The Numba (CPU) home of the compute kernels; `npdlrm.kernels.cuda` has the same names
with the same signatures (tests/test_backend.py checks it).

Every launcher takes its outputs first, runs a serial kernel for small work and a parallel
one above a work threshold; both give bitwise identical results, whatever the Numba
thread count.
"""
from ..names import COMPUTE
from .bias_relu import bias_backward, bias_forward, bias_relu_forward, relu_bias_backward
from .embedding_bag import embedding_bag_forward, embedding_bag_grad
from .embedding_bags import embedding_bags_forward, embedding_bags_update
from .embedding_update import (
    embedding_adagrad_update,
    embedding_rowwise_adagrad_update,
    embedding_sgd_update,
)
from .interaction import dot_interaction_backward, dot_interaction_forward

__all__ = list(COMPUTE)

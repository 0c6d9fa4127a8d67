"""Numba CPU kernels of npdlrm.

Every launcher takes its outputs first, runs a serial kernel for small work
and a parallel one above a work threshold; both give bitwise identical
results, whatever the Numba thread count.
"""
from .bias_relu import bias_backward, bias_forward, bias_relu_forward, relu_bias_backward
from .criteo_parse import parse_criteo_lines
from .embedding_bag import embedding_bag_forward, embedding_bag_grad
from .embedding_update import (
    embedding_adagrad_update,
    embedding_rowwise_adagrad_update,
    embedding_sgd_update,
)
from .interaction import dot_interaction_backward, dot_interaction_forward, pair_indices

__all__ = [
    "embedding_bag_forward",
    "embedding_bag_grad",
    "embedding_sgd_update",
    "embedding_adagrad_update",
    "embedding_rowwise_adagrad_update",
    "dot_interaction_forward",
    "dot_interaction_backward",
    "pair_indices",
    "bias_relu_forward",
    "bias_forward",
    "relu_bias_backward",
    "bias_backward",
    "parse_criteo_lines",
]

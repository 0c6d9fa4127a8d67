"""The CUDA home of the compute kernels: the names and signatures of `npdlrm.kernels.cpu`,
run by CuPy on the GPU (sources compiled on first use, see `_module`). Importing this
package needs neither CuPy nor a GPU.
"""
from ..names import COMPUTE
from . import (bias_relu, embedding_bag, embedding_bags, embedding_segments,
               embedding_update, interaction)
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

# every CUDA source of npdlrm, by file (the NVRTC check compiles each)
SOURCES = {m.__name__.rsplit(".", 1)[-1]: m.SOURCE
           for m in (bias_relu, embedding_bag, embedding_bags, embedding_segments,
                     embedding_update, interaction)}

"""npdlrm: DLRM training on NumPy and Numba, every layer hand-written.

    model = npdlrm.DLRM.from_arch(arch_mlp_bot="13-64-16", arch_mlp_top="64-1",
                                  arch_embedding_size="1000-1000",
                                  arch_sparse_feature_size=16)
    opt = npdlrm.Optimizer("sgd", lr=0.1)
    loss = model.train_step(dense, indices, offsets, labels, opt)
"""
from .config import DLRMConfig
from .embedding import SparseGrad, densify
from .lr_policy import LRPolicy
from .model import DLRM
from .optimizers import Optimizer

__version__ = "0.1.0"
__all__ = ["DLRM", "DLRMConfig", "LRPolicy", "Optimizer", "SparseGrad", "densify"]

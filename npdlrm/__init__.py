"""npdlrm: DLRM training on NumPy and Numba, every layer hand-written.

    model = npdlrm.DLRM.from_arch(arch_mlp_bot="13-64-16", arch_mlp_top="64-1",
                                  arch_embedding_size="1000-1000",
                                  arch_sparse_feature_size=16)
    opt = npdlrm.Optimizer("sgd", lr=0.1)
    loss = model.train_step(dense, indices, offsets, labels, opt)
"""
import os

# OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each GEMM before they sleep,
# so between the MLPs they hold the cores that Numba's kernels then need (on 2 cores the
# interaction took 2x its time inside the step). 2^16 cycles (~20 us) keeps them awake
# across one MLP's GEMMs only. It must be set before NumPy loads OpenBLAS, so it holds
# when npdlrm is imported first (as the `npdlrm` command does); a value you set is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

from .config import DLRMConfig  # noqa: E402
from .embedding import SparseGrad, densify
from .lr_policy import LRPolicy
from .model import DLRM
from .optimizers import Optimizer

__version__ = "0.1.0"
__all__ = ["DLRM", "DLRMConfig", "LRPolicy", "Optimizer", "SparseGrad", "densify"]

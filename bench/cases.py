"""The benchmarked configurations, the issue's targets and the PyTorch reference numbers."""
from dataclasses import dataclass

KAGGLE_TABLE_SIZES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                      8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                      286181, 105, 142572)

LR = 0.1  # SGD, tables and MLPs
STAGE_LR = 1e-6  # stages timed alone replay one gradient: same cost, no drift
TARGET_THREADS = 2  # the targets and the reference numbers are for 2 threads
MLP_GEMM_RATIO_TARGET = 1.25  # engine MLP part / bare GEMMs of the same shapes
RSS_RATIO_TARGET = 1.2  # peak RSS / (parameter + optimizer-state bytes)

# (config, batch) -> ms per iteration with 2 threads on this machine kind.
TARGET_MS = {("small", 128): 3.5, ("kaggle", 128): 6.0, ("kaggle", 2048): 65.0}
TORCH_REF_MS = {("small", 128): 8.4, ("kaggle", 128): 15.7, ("kaggle", 2048): 95.0}
TORCH_REF_PEAK_GIB = {"kaggle": 3.7}


@dataclass(frozen=True)
class Case:
    """One model shape and the batch sizes it is timed at."""
    name: str
    table_sizes: tuple
    batch_sizes: tuple
    arch_mlp_bot: str = "13-512-256-64-16"
    arch_mlp_top: str = "512-256-1"
    dim: int = 16

    def arch(self):
        """Keyword arguments of npdlrm.DLRM.from_arch."""
        return dict(arch_mlp_bot=self.arch_mlp_bot, arch_mlp_top=self.arch_mlp_top,
                    arch_embedding_size="-".join(str(v) for v in self.table_sizes),
                    arch_sparse_feature_size=self.dim)


CASES = {
    "small": Case("small", (1_000_000,) * 8, (128,)),
    "kaggle": Case("kaggle", KAGGLE_TABLE_SIZES, (128, 2048)),
}

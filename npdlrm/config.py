"""Model configuration, parsed from the reference DLRM's own vocabulary."""
from dataclasses import dataclass, field, fields

from .kernels.interaction import num_pairs

INTERACTIONS = ("dot", "cat")
POOLINGS = ("sum", "mean")
LOSSES = ("bce", "wbce", "mse")
DTYPES = ("float32", "float64")


def parse_dashed(text, what):
    """'13-512-256' -> (13, 512, 256); a list/tuple of ints passes through."""
    if isinstance(text, str):
        parts = text.strip().split("-")
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{what}: expected integers separated by '-', got {text!r}") from None
    else:
        values = tuple(int(v) for v in text)
    if not values:
        raise ValueError(f"{what}: empty")
    bad = [v for v in values if v <= 0]
    if bad:
        raise ValueError(f"{what}: every size must be positive, got {bad[0]} in {text!r}")
    return values


@dataclass(frozen=True)
class DLRMConfig:
    """Architecture of one DLRM.

    table_sizes: rows of each embedding table; embedding_dim: D;
    bottom_mlp: widths including the dense input width, ending in D;
    top_mlp: widths after the interaction, ending in 1 (the logit).
    """
    table_sizes: tuple
    embedding_dim: int
    bottom_mlp: tuple
    top_mlp: tuple
    interaction: str = "dot"
    self_interaction: bool = False
    pooling: str = "sum"
    loss: str = "bce"
    loss_weights: tuple = (1.0, 1.0)
    loss_threshold: float = 0.0
    dtype: str = "float32"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "table_sizes", parse_dashed(self.table_sizes, "table sizes"))
        object.__setattr__(self, "bottom_mlp", parse_dashed(self.bottom_mlp, "bottom MLP"))
        object.__setattr__(self, "top_mlp", parse_dashed(self.top_mlp, "top MLP"))
        object.__setattr__(self, "loss_weights", tuple(float(w) for w in self.loss_weights))
        D = int(self.embedding_dim)
        object.__setattr__(self, "embedding_dim", D)
        if D <= 0:
            raise ValueError(f"embedding dimension must be positive, got {D}")
        for name, value, allowed in (("interaction", self.interaction, INTERACTIONS),
                                     ("pooling", self.pooling, POOLINGS),
                                     ("loss", self.loss, LOSSES),
                                     ("dtype", self.dtype, DTYPES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if len(self.bottom_mlp) < 2:
            raise ValueError(f"bottom MLP needs an input and an output width, got {self.bottom_mlp}")
        if self.bottom_mlp[-1] != D:
            raise ValueError(
                f"bottom MLP output width {self.bottom_mlp[-1]} must equal the embedding "
                f"dimension {D} (arch_mlp_bot ends in {self.bottom_mlp[-1]}, "
                f"arch_sparse_feature_size is {D})")
        if self.top_mlp[-1] != 1:
            raise ValueError(f"top MLP must end in 1 (the logit), got {self.top_mlp[-1]}")
        object.__setattr__(self, "loss_threshold", float(self.loss_threshold))
        if not 0 <= self.loss_threshold < 1:
            raise ValueError(f"loss_threshold must be in [0, 1) (0: off), got "
                             f"{self.loss_threshold}")
        if len(self.loss_weights) != 2 or min(self.loss_weights) < 0:
            raise ValueError(f"loss_weights must be two non-negative numbers, got {self.loss_weights}")

    @property
    def num_tables(self):
        return len(self.table_sizes)

    @property
    def num_dense(self):
        return self.bottom_mlp[0]

    @property
    def num_features(self):
        """F: the bottom output plus one pooled vector per table."""
        return 1 + self.num_tables

    @property
    def top_input_width(self):
        F, D = self.num_features, self.embedding_dim
        if self.interaction == "cat":
            return F * D
        return num_pairs(F, self.self_interaction) + D

    @property
    def top_sizes(self):
        """Top MLP widths including its derived input width."""
        return (self.top_input_width,) + self.top_mlp

    def to_dict(self):
        """Every field, JSON-able (tuples become lists); `from_dict` inverts it."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, d):
        """A config from `to_dict`'s output; unknown keys are refused."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown DLRMConfig field {unknown[0]!r}; expected some of {names}")
        return cls(**d)

    @classmethod
    def from_arch(cls, arch_mlp_bot, arch_mlp_top, arch_embedding_size,
                  arch_sparse_feature_size, arch_interaction_op="dot",
                  arch_interaction_itself=False, **kwargs):
        return cls(table_sizes=arch_embedding_size, embedding_dim=arch_sparse_feature_size,
                   bottom_mlp=arch_mlp_bot, top_mlp=arch_mlp_top,
                   interaction=arch_interaction_op,
                   self_interaction=bool(arch_interaction_itself), **kwargs)

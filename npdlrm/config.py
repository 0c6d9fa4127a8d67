"""Model configuration, parsed from the reference DLRM's own vocabulary."""
import math
from dataclasses import dataclass, field, fields

import numpy as np

from .activations import ACTIVATIONS
from .kernels.pairs import num_pairs

INTERACTIONS = ("dot", "cat")
POOLINGS = ("sum", "mean")
LOSSES = ("bce", "wbce", "mse")
DTYPES = ("float32", "float64")
QR_OPERATIONS = ("mult", "add", "concat")
WEIGHTED_POOLINGS = (None, "fixed", "learned")
# the embedding variants' fields, by the flag that turns the group on; `to_dict` leaves a
# group out while it is off, so a plain model's dict is what it always was
VARIANT_GROUPS = {"qr_flag": ("qr_flag", "qr_threshold", "qr_operation", "qr_collisions"),
                  "md_flag": ("md_flag", "md_threshold", "md_temperature", "md_round_dims"),
                  "weighted_pooling": ("weighted_pooling",)}


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

    Embedding variants (the reference's flags; `npdlrm.embedding_layout` has the rules):
    qr_flag with qr_threshold, qr_operation (mult | add | concat: the pooled width, and
    so the bottom MLP's output, is then 2D) and qr_collisions; md_flag with md_threshold,
    md_temperature and md_round_dims; weighted_pooling None | 'fixed' | 'learned'.
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
    activation: str = "relu"  # of the MLP layers (activations.ACTIVATIONS)
    qr_flag: bool = False
    qr_threshold: int = 200
    qr_operation: str = "mult"
    qr_collisions: int = 4
    md_flag: bool = False
    md_threshold: int = 200
    md_temperature: float = 0.3
    md_round_dims: bool = False
    weighted_pooling: object = None
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
                                     ("dtype", self.dtype, DTYPES),
                                     ("activation", self.activation, ACTIVATIONS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if len(self.bottom_mlp) < 2:
            raise ValueError(f"bottom MLP needs an input and an output width, got {self.bottom_mlp}")
        self._check_variants()
        if self.bottom_mlp[-1] != self.feature_dim:
            concat = " x 2 (--qr-operation concat pools 2D wide)" if self.feature_dim != D \
                else ""
            raise ValueError(
                f"bottom MLP output width {self.bottom_mlp[-1]} must equal the embedding "
                f"dimension {D}{concat} (arch_mlp_bot ends in {self.bottom_mlp[-1]}, "
                f"arch_sparse_feature_size is {D})")
        if self.top_mlp[-1] != 1:
            raise ValueError(f"top MLP must end in 1 (the logit), got {self.top_mlp[-1]}")
        object.__setattr__(self, "loss_threshold", float(self.loss_threshold))
        if not 0 <= self.loss_threshold < 1:
            raise ValueError(f"loss_threshold must be in [0, 1) (0: off), got "
                             f"{self.loss_threshold}")
        if len(self.loss_weights) != 2 or min(self.loss_weights) < 0:
            raise ValueError(f"loss_weights must be two non-negative numbers, got {self.loss_weights}")

    def _check_variants(self):
        for name in ("qr_flag", "md_flag", "md_round_dims"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        for name in ("qr_threshold", "qr_collisions", "md_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value:
                raise ValueError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "md_temperature", float(self.md_temperature))
        if self.qr_operation not in QR_OPERATIONS:
            raise ValueError(f"qr_operation must be one of {QR_OPERATIONS}, got "
                             f"{self.qr_operation!r}")
        if self.qr_collisions < 1:
            raise ValueError(f"qr_collisions must be at least 1, got {self.qr_collisions}")
        if not (math.isfinite(self.md_temperature) and self.md_temperature >= 0):
            raise ValueError(f"md_temperature must be a finite number >= 0, got "
                             f"{self.md_temperature}")
        if self.weighted_pooling not in WEIGHTED_POOLINGS:
            raise ValueError(f"weighted_pooling must be one of {WEIGHTED_POOLINGS}, got "
                             f"{self.weighted_pooling!r}")
        if self.weighted_pooling is not None and (self.qr_flag or self.md_flag):
            which = "quotient-remainder" if self.qr_flag else "mixed-dimension"
            raise ValueError(f"weighted_pooling {self.weighted_pooling!r} with {which} "
                             f"embeddings is not supported (the reference refuses it too)")
        if self.qr_flag and self.md_flag:
            raise ValueError("qr_flag and md_flag together are not supported: the reference "
                             "hands its QR tables the whole list of mixed dimensions and "
                             "cannot run it; choose one")
        if self.qr_flag and self.qr_operation == "concat":
            small = [n for n in self.table_sizes if n <= self.qr_threshold]
            if small:
                raise ValueError(
                    f"qr_operation 'concat' needs every table above qr_threshold "
                    f"{self.qr_threshold} (a table of {small[0]} rows is not): concat pools "
                    f"2D wide, a plain table D wide, and the interaction needs one width "
                    f"(the reference cannot run it either)")

    @property
    def feature_dim(self):
        """The width of every interaction input: the bottom output and each pooled table
        (2D with quotient-remainder concat, else D)."""
        concat = self.qr_flag and self.qr_operation == "concat"
        return 2 * self.embedding_dim if concat else self.embedding_dim

    @property
    def has_embedding_variants(self):
        """Whether any table is stored other than as one plain (V, D) table."""
        return self.qr_flag or self.md_flag or self.weighted_pooling == "learned"

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
        F, D = self.num_features, self.feature_dim
        if self.interaction == "cat":
            return F * D
        return num_pairs(F, self.self_interaction) + D

    @property
    def top_sizes(self):
        """Top MLP widths including its derived input width."""
        return (self.top_input_width,) + self.top_mlp

    def to_dict(self):
        """Every field, JSON-able (tuples become lists); `from_dict` inverts it. An
        embedding variant's fields are left out while it is off (absent means off)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        for flag, group in VARIANT_GROUPS.items():
            if not getattr(self, flag):
                for name in group:
                    del out[name]
        if out["activation"] == "relu":  # the default is left out too (absent means relu)
            del out["activation"]
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

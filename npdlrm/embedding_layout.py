"""Which embedding tensors a DLRMConfig stores: plain tables, quotient-remainder (QR)
pairs, mixed-dimension (MD) tables with their projections, learned pooling weights.

One home for the shapes and the names every other module (the model, init, checkpoints,
the byte counts) uses. The rules are the reference dlrm_s_pytorch.py's:

- QR (`qr_flag`): a table of n > qr_threshold rows becomes a quotient table of
  ceil(n / c) rows and a remainder table of c rows (c = qr_collisions), both of width D;
  row i is combined from quotient row i // c and remainder row i % c (mult, add, or
  concat: width 2D).
- MD (`md_flag`): the reference's dimension solver (md_solver, the alpha-power rule with
  the smallest table at D) gives each table a width d_k; a table of n > md_threshold rows
  stores (n, d_k) and a (D, d_k) projection to D (none when d_k = D); smaller tables stay
  (n, D), which is what the reference means and crashes on.
- Learned weighted pooling: a weight per row, (n, 1), that scales the row in its bag.
"""
import math
from dataclasses import dataclass

import numpy as np


def md_solver(table_sizes, alpha, d0, round_dims=False):
    """The reference's mixed dimensions: per table (in the given order) the width of the
    alpha-power rule d_k = d0 * (n_min / n_k) ** alpha, the smallest table exactly d0,
    at least 1, rounded half to even, and with round_dims to the nearest power of two.

    Computed in float32 as the reference computes it (so the widths are its widths)."""
    n = np.asarray(table_sizes, dtype=np.int64)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"md_solver needs a list of table sizes, got {table_sizes!r}")
    order = np.argsort(n, kind="stable")
    ns = n[order].astype(np.float32)
    a = np.float32(alpha)
    lamb = np.float32(d0) * (ns[0] ** a)
    d = np.ones(n.size, np.float32) * lamb * (ns ** -a)
    d[0] = d0
    d[1:] = np.where(d[1:] < 1, np.float32(1), d[1:])
    d = np.round(d).astype(np.int64)
    if round_dims:
        d = (2.0 ** np.round(np.log2(d.astype(np.float32)))).astype(np.int64)
    out = np.empty_like(d)
    out[order] = d
    return [int(v) for v in out]


@dataclass(frozen=True)
class TableSpec:
    """How table k is stored. kind: 'plain', 'qr' or 'md'; rows: its logical rows n;
    dim: the stored width (md: d_k); out_dim: the pooled width it hands the interaction;
    collisions: c (qr); operation: mult/add/concat (qr); learned: a learned pooling
    weight per row."""
    table: int
    kind: str
    rows: int
    dim: int
    out_dim: int
    collisions: int = 0
    operation: str = ""
    learned: bool = False

    @property
    def stored(self):
        """[(state-dict name, (rows, width))] of the tables this one stores, in order."""
        k, n, d = self.table, self.rows, self.dim
        if self.kind == "qr":
            c = self.collisions
            return [(f"embeddings.{k}.weight_q", (math.ceil(n / c), d)),
                    (f"embeddings.{k}.weight_r", (c, d))]
        out = [(f"embeddings.{k}.weight", (n, d))]
        if self.learned:
            out.append((f"embeddings.{k}.pooling_weight", (n, 1)))
        return out

    @property
    def projection(self):
        """(name, (D, d_k)) of an MD table's projection (a dense parameter), else None."""
        if self.kind != "md":
            return None
        return (f"embeddings.{self.table}.projection", (self.out_dim, self.dim))


def table_specs(config):
    """One TableSpec per table of `config` (a DLRMConfig)."""
    D = config.embedding_dim
    sizes = config.table_sizes
    md = None
    if config.md_flag:
        md = [min(d, D) for d in md_solver(sizes, config.md_temperature, D,
                                           config.md_round_dims)]
    learned = config.weighted_pooling == "learned"
    specs = []
    for k, n in enumerate(sizes):
        if config.qr_flag and n > config.qr_threshold:
            out = 2 * D if config.qr_operation == "concat" else D
            specs.append(TableSpec(k, "qr", n, D, out, config.qr_collisions,
                                   config.qr_operation))
        elif md is not None and n > config.md_threshold and md[k] < D:
            specs.append(TableSpec(k, "md", n, md[k], D))
        else:
            specs.append(TableSpec(k, "plain", n, D, D, learned=learned))
    return specs


def stored_tables(config):
    """[(name, (rows, width))] of every stored embedding tensor, in the model's order
    (`model.embeddings.tables`): for a plain model, embeddings.{k}.weight (V, D)."""
    return [entry for spec in table_specs(config) for entry in spec.stored]


def projection_specs(config):
    """[(name, (D, d_k))] of the MD projections (dense parameters), in table order."""
    return [spec.projection for spec in table_specs(config) if spec.projection]


def embedding_bytes(config):
    """Bytes of the embedding parameters: stored tables plus MD projections."""
    item = np.dtype(config.dtype).itemsize
    shapes = [s for _, s in stored_tables(config)] + [s for _, s in projection_specs(config)]
    return sum(r * c for r, c in shapes) * item

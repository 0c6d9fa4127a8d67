"""The shared constants and formulas of the planner (`planner.py`) and the scaling model
(`scaling.py`), the cost model of a plan (`plan_costs`) and byte units (`format_bytes`,
`parse_bytes`).

Symbols: W ranks, B global batch, b_r = rank r's samples (`rank_bounds`), V rows and D
columns of a table, L its bag entries per sample, s the parameter itemsize (4 for
float32), a the itemsize on the all-to-all wire (4, or 2 with float16).

`plan_costs` reports per rank what a step moves; the exchanged bytes come from
`exchange_elements`, the one formula (rank s sends rank r b_r x W_s elements forward,
the reverse backward), and equal `PooledExchange.sent_bytes()`. The allreduce is taken
to be a ring (bandwidth-optimal): every rank sends (and receives) 2 (W-1)/W N s bytes of
the N-element gradient buffer in 2 (W-1) messages. Times assume each rank has a full-
duplex link of `link_gbps` Gbit/s into a non-blocking network, plus `latency_us` per
message; a collective lasts as long as its busiest rank. The 8-byte allreduce of the
loss is left out.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..config import DLRMConfig
from ..data.loader import rank_bounds
from ..optimizers import DENSE_DEFAULT, SPARSE_KINDS

# Lookup cost of one bag entry (forward pool + backward + sparse update, 2 cores, Numba
# kernels, random rows of a 1M-row table): ~50 ns of per-entry work plus ~1 ns per float
# of the row (measured: 49 ns at D=1, 124-218 ns at D=128 for sgd-rwsadagrad).
NS_PER_LOOKUP = 50.0
NS_PER_FLOAT = 1.0
# float32 NumPy GEMM at the MLPs' shapes (2048 x 1024 x 1024) on the same 2 cores: 180-190
GFLOPS = 180.0
LATENCY_US = 2.0  # an MPI message over InfiniBand / RoCE: 1-3 us

# MLPerf DLRM on Criteo 1TB with --max-ind-range 40000000 (26 tables)
CRITEO_1TB_TABLES = (39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951,
                     2953546, 403346, 10, 2208, 11938, 155, 4, 976, 14, 39979771, 25641295,
                     39664984, 585935, 12972, 108, 36)


def criteo_1tb_config():
    """The MLPerf DLRM: D=128, bottom 13-512-256-128, top 1024-1024-512-256-1."""
    return DLRMConfig(table_sizes=CRITEO_1TB_TABLES, embedding_dim=128,
                      bottom_mlp=(13, 512, 256, 128), top_mlp=(1024, 1024, 512, 256, 1))


# ---- checks -------------------------------------------------------------------------
def _check_positive(name, value):
    if not (isinstance(value, (int, np.integer)) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_optimizer(optimizer):
    if optimizer not in SPARSE_KINDS:
        raise ValueError(f"optimizer must be one of {SPARSE_KINDS}, got {optimizer!r}")
    return optimizer


def lookups_of(config, lookups_per_sample):
    """(T,) bag entries per sample of each table: None -> 1 each; a number -> that for
    every table; a sequence -> one per table."""
    T = config.num_tables
    if lookups_per_sample is None:
        return np.ones(T)
    try:
        L = np.array(lookups_per_sample, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"lookups_per_sample: expected a number or one per table, got "
                         f"{lookups_per_sample!r}") from None
    if L.size == 1:
        L = np.full(T, L[0])
    if L.size != T:
        raise ValueError(f"lookups_per_sample: expected one value or {T} (one per table), "
                         f"got {L.size}")
    bad = [v for v in L if not (np.isfinite(v) and v >= 0)]
    if bad:
        raise ValueError(f"lookups_per_sample must be finite and >= 0, got {bad[0]}")
    return L


# ---- sizes ----------------------------------------------------------------------------
def itemsize(config):
    return np.dtype(config.dtype).itemsize


def mlp_parameters(config):
    """P: the MLP weights and biases, the front of the allreduced buffer."""
    return sum(a * b + b for sizes in (config.bottom_mlp, config.top_sizes)
               for a, b in zip(sizes[:-1], sizes[1:]))


def shard_memory(rows, cols, optimizer, item):
    """(weight bytes, optimizer-state bytes) of a rows x cols shard: Adagrad keeps one
    value per weight, row-wise Adagrad one per row, SGD none."""
    state = {"sgd": 0, "adagrad": rows * cols, "rwsadagrad": rows}[optimizer]
    return rows * cols * item, state * item


def lookup_ns(entries, width):
    """Estimated ns of pooling, back-propagating and updating `entries` rows of `width`."""
    return entries * (NS_PER_LOOKUP + NS_PER_FLOAT * width)


# ---- the exchange: the one formula ---------------------------------------------------
def exchange_elements(widths, samples):
    """Elements each rank sends per step in the two all-to-alls.

    widths: (W,) W_s, the summed widths of rank s's exchanged shards; samples: (W,) b_r.
    Rank s sends rank r (r != s) a (b_r, W_s) block forward and receives it back
    backward, so forward[s] = W_s (B - b_s) and backward[r] = b_r (sum W - W_r)."""
    widths, samples = np.asarray(widths, np.int64), np.asarray(samples, np.int64)
    forward = widths * (samples.sum() - samples)
    backward = samples * (widths.sum() - widths)
    return forward, backward


def exchanged_widths(plan):
    """(W,) W_s of every rank, as `PooledExchange` lays out its send buffer."""
    return np.array(plan.exchanged_widths(), np.int64)


def samples_per_rank(batch_size, world_size):
    return np.array([hi - lo for lo, hi in (rank_bounds(batch_size, r, world_size)
                                            for r in range(world_size))], np.int64)


# ---- memory per rank -----------------------------------------------------------------
def table_memory(plan, config, optimizer):
    """(W,) bytes per rank of table weights, their optimizer state and the dense
    gradients of replicated tables (what memory_per_rank bounds)."""
    item = itemsize(config)
    used = np.zeros(plan.world_size)
    for p in plan.placements:
        for s in p.shards:
            used[s.rank] += sum(shard_memory(*s.shape, optimizer, item))
            if p.kind == "replicate":
                used[s.rank] += s.size * item
    return used


# ---- the cost model -------------------------------------------------------------------
@dataclass(frozen=True)
class RankCost:
    """What one rank holds and moves per step (bytes unless named otherwise)."""
    rank: int
    samples: int             # b_r: its share of the global batch
    table_bytes: int         # embedding weights it holds
    table_state_bytes: int   # their optimizer state
    mlp_bytes: int           # the MLPs (every rank)
    mlp_state_bytes: int     # their optimizer state
    grad_bytes: int          # the flat gradient buffer: MLPs + replicated tables, dense
    lookups: float           # bag entries pooled per step (row shards: expected share)
    lookup_floats: float     # values gathered: entries x width
    alltoall_forward: int    # sent in the forward all-to-all
    alltoall_backward: int   # sent in the backward all-to-all
    allreduce: float         # sent in the ring allreduce of the gradient buffer
    column_allreduce: float  # sent in rwsadagrad's row-sum allreduces of column groups
    seconds: Optional[dict] = None  # forward, backward, allreduce, column_allreduce

    @property
    def param_bytes(self):
        return self.table_bytes + self.mlp_bytes

    @property
    def state_bytes(self):
        return self.table_state_bytes + self.mlp_state_bytes


@dataclass(frozen=True)
class PlanCosts:
    """plan_costs' answer: `ranks` (RankCost per rank) and the exchange times, the
    busiest rank's, when a link speed was given."""
    ranks: Tuple[RankCost, ...]
    batch_size: int
    allreduce_elements: int  # N = P + the replicated tables' V x D
    link_gbps: Optional[float]
    latency_us: float

    def seconds(self):
        """{'forward', 'backward', 'allreduce', 'column_allreduce'}: max over ranks."""
        if self.link_gbps is None:
            return None
        return {k: max(r.seconds[k] for r in self.ranks) for k in self.ranks[0].seconds}


def transfer_seconds(nbytes, messages, link_gbps, latency_us):
    """Time to move nbytes in `messages` messages on a link of link_gbps Gbit/s."""
    return messages * latency_us * 1e-6 + nbytes * 8 / (link_gbps * 1e9)


def ring_bytes(elements, ranks, item):
    """Bytes each rank sends (and receives) in a ring allreduce: 2 (W-1)/W N s."""
    return 2 * (ranks - 1) / ranks * elements * item if ranks > 1 else 0.0


def _shard_memory(plan, optimizer, item):
    """(W,) weight bytes and (W,) optimizer-state bytes of the shards each rank holds."""
    weights = np.zeros(plan.world_size, np.int64)
    state = np.zeros(plan.world_size, np.int64)
    for p in plan.placements:
        for s in p.shards:
            w, st = shard_memory(*s.shape, optimizer, item)
            weights[s.rank] += w
            state[s.rank] += st
    return weights, state


def _lookup_counts(plan, B, samples, L):
    """(W,) entries and (W,) floats each rank pools per step."""
    entries, floats = np.zeros(plan.world_size), np.zeros(plan.world_size)
    for p in plan.placements:
        V = plan.table_sizes[p.table]
        for s in p.shards:
            if p.kind == "replicate":
                n = samples[s.rank] * L[p.table]
            else:
                n = B * L[p.table] * ((s.rows[1] - s.rows[0]) / V if p.kind == "row" else 1)
            entries[s.rank] += n
            floats[s.rank] += n * (s.cols[1] - s.cols[0])
    return entries, floats


def _column_allreduce(plan, B, L, optimizer, item):
    """(W,) bytes each rank sends, and (W,) messages, reducing row-wise Adagrad's per-row
    sums of g^2 over column groups; U <= min(V, B L) rows are touched (the bound is used)."""
    sent, messages = np.zeros(plan.world_size), np.zeros(plan.world_size, np.int64)
    if optimizer != "rwsadagrad":
        return sent, messages
    for p in plan.placements:
        g = len(p.shards)
        if p.kind == "column" and g > 1:
            U = min(plan.table_sizes[p.table], math.ceil(B * L[p.table]))
            for s in p.shards:
                sent[s.rank] += ring_bytes(U, g, item)
                messages[s.rank] += 2 * (g - 1)
    return sent, messages


def _alltoall_messages(widths, samples):
    """(W,) messages per rank in each all-to-all: max(blocks sent, blocks received)."""
    has_w, has_b = widths > 0, samples > 0
    sent = np.where(has_w, has_b.sum() - has_b, 0)   # forward: s -> every other r with b_r
    recv = np.where(has_b, has_w.sum() - has_w, 0)   # forward: r <- every other s with W_s
    return np.maximum(sent, recv)


def plan_costs(plan, config, batch_size, optimizer="sgd", lookups_per_sample=None,
               alltoall_bytes=4, link_gbps=None, latency_us=LATENCY_US):
    """PlanCosts of one training step of global batch `batch_size` under `plan`.

    alltoall_bytes: itemsize on the wire (2 for --alltoall-dtype float16); link_gbps:
    per-rank link speed for the times (None: no times); latency_us: per message."""
    B = _check_positive("batch_size", batch_size)
    _check_optimizer(optimizer)
    if link_gbps is not None and not link_gbps > 0:
        raise ValueError(f"link_gbps must be positive, got {link_gbps!r}")
    if plan.table_sizes != config.table_sizes or plan.dim != config.embedding_dim:
        raise ValueError(f"the plan is for tables {plan.table_sizes} of width {plan.dim}, "
                         f"the config has {config.table_sizes} of width "
                         f"{config.embedding_dim}")
    W, item, L = plan.world_size, itemsize(config), lookups_of(config, lookups_per_sample)
    samples, widths = samples_per_rank(B, W), exchanged_widths(plan)
    forward, backward = exchange_elements(widths, samples)
    P = mlp_parameters(config)
    N = P + sum(plan.table_sizes[k] * plan.dim for k in plan.replicated)
    entries, floats = _lookup_counts(plan, B, samples, L)
    columns, column_messages = _column_allreduce(plan, B, L, optimizer, item)
    messages = _alltoall_messages(widths, samples)
    mlp_state = P * item if DENSE_DEFAULT[optimizer] != "sgd" else 0
    weights, state = _shard_memory(plan, optimizer, item)
    ranks = []
    for r in range(W):
        fw, bw = int(forward[r]) * alltoall_bytes, int(backward[r]) * alltoall_bytes
        cost = RankCost(r, int(samples[r]), int(weights[r]), int(state[r]), P * item,
                        mlp_state, N * item,
                        float(entries[r]), float(floats[r]), fw, bw, ring_bytes(N, W, item),
                        float(columns[r]))
        if link_gbps is not None:
            a2a = transfer_seconds(max(fw, bw), messages[r], link_gbps, latency_us)
            ring = transfer_seconds(cost.allreduce, 2 * (W - 1), link_gbps, latency_us)
            cols = transfer_seconds(cost.column_allreduce, column_messages[r], link_gbps,
                                    latency_us)
            cost = _with_seconds(cost, {"forward": a2a, "backward": a2a, "allreduce": ring,
                                        "column_allreduce": cols})
        ranks.append(cost)
    return PlanCosts(tuple(ranks), B, N, link_gbps, latency_us)


def _with_seconds(cost, seconds):
    return RankCost(**{**cost.__dict__, "seconds": seconds})


# ---- units ----------------------------------------------------------------------------
def format_bytes(n):
    """1536 -> '1.5 KiB' (B, KiB, MiB, GiB, TiB; one decimal)."""
    n = float(n)
    if n == math.inf:
        return "unlimited"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            break
        n /= 1024
    return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"


def parse_bytes(text):
    """'16GiB', '512 MiB', '2G', '1e9' -> bytes (K/M/G/T are powers of 1024)."""
    t = str(text).strip().replace(" ", "")
    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2,
             "mb": 1024 ** 2, "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3,
             "gib": 1024 ** 3, "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4}
    i = len(t)
    while i and t[i - 1].isalpha():
        i -= 1
    number, unit = t[:i], t[i:].lower()
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise ValueError(f"expected a size like 16GiB or 512MiB, got {text!r}") from None
    if not value > 0 or value == math.inf:
        raise ValueError(f"a size must be positive, got {text!r}")
    return int(value)

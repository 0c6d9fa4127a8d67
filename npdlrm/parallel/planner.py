"""The auto planner (`make_plan`), the cost model of a plan (`plan_costs`) and a scaling
model of the Criteo 1TB model (`scaling_table`).

Symbols: W ranks, B global batch, b_r = rank r's samples (`rank_bounds`), V rows and D
columns of a table, L its bag entries per sample, s the parameter itemsize (4 for
float32), a the itemsize on the all-to-all wire (4, or 2 with float16).

`make_plan(sharding="auto")` is deterministic (same inputs, same plan on every rank;
ties go to the lower table and the lower rank):
1. World size 1: every table table-wise on rank 0 (nothing is exchanged or reduced).
2. Replication. Replicating a table costs every rank a ring allreduce of its (V, D)
   gradient, 2 (W-1) V D s bytes over the network per step; exchanging its pooled
   vectors costs about 2 B D a (W-1)/W (forward and backward). Both totals are spread
   over the ranks by a balanced plan, so a table is replicated when V s <= (B / W) a
   (it has fewer rows than a rank's share of the batch), smallest first, while its
   weights, optimizer state and dense gradient fit on every rank.
3. Load. An exchanged table or shard loads its rank in three dimensions: memory
   (weights + optimizer state), lookup time (entries x (NS_PER_LOOKUP + NS_PER_FLOAT x
   width)) and exchanged width, each counted in fair shares (its total over the
   exchanged tables / W); a rank's load is the sum of its shards'.
4. Row-wise for memory: a table that does not fit in one rank's free memory is split
   row-wise over the fewest ranks whose free memory holds a piece.
5. Column splits: a table above a fair share in some dimension (fewer big tables than
   ranks) is split column-wise into pieces of at most one share (also tried: half a
   share), at most D and W of them. Every column shard pools all the table's bag
   entries again, so a split plan is kept only when its most loaded rank (in its
   largest dimension) is less loaded than without splits.
6. The rest table-wise, longest processing time first: largest piece first, each to
   the ranks with room where its largest load after adding it is smallest (the pieces
   of one table on distinct ranks).
Overrides ('3:row,9:column'): 'row' and 'column' span every rank (as `uniform_plan`),
'replicate' replicates, 'table' goes through step 6; the planner places the rest.

`plan_costs` reports per rank what a step moves; the exchanged bytes come from
`exchange_elements`, the one formula (rank s sends rank r b_r x W_s elements forward,
the reverse backward), and equal `PooledExchange.sent_bytes()`. The allreduce is taken
to be a ring (bandwidth-optimal): every rank sends (and receives) 2 (W-1)/W N s bytes of
the N-element gradient buffer in 2 (W-1) messages. Times assume each rank has a full-
duplex link of `link_gbps` Gbit/s into a non-blocking network, plus `latency_us` per
message; a collective lasts as long as its busiest rank. The 8-byte allreduce of the
loss is left out.
"""
import heapq
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..config import DLRMConfig
from ..data.loader import rank_bounds
from ..optimizers import DENSE_DEFAULT, SPARSE_KINDS
from .plan import ShardingPlan, parse_sharding, place, uniform_plan

# Lookup cost of one bag entry (forward pool + backward + sparse update, 2 cores, Numba
# kernels, random rows of a 1M-row table): ~50 ns of per-entry work plus ~1 ns per float
# of the row (measured: 49 ns at D=1, 124-218 ns at D=128 for sgd-rwsadagrad).
NS_PER_LOOKUP = 50.0
NS_PER_FLOAT = 1.0
# float32 NumPy GEMM at the MLPs' shapes (2048 x 1024 x 1024) on the same 2 cores: 180-190
GFLOPS = 180.0
LATENCY_US = 2.0  # an MPI message over InfiniBand / RoCE: 1-3 us
SPLIT_PIECES = (1.0, 0.5)  # column pieces tried: at most this much of a rank's share

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
    widths = np.zeros(plan.world_size, np.int64)
    for p in plan.placements:
        if p.exchanged:
            for s in p.shards:
                widths[s.rank] += s.cols[1] - s.cols[0]
    return widths


def samples_per_rank(batch_size, world_size):
    return np.array([hi - lo for lo, hi in (rank_bounds(batch_size, r, world_size)
                                            for r in range(world_size))], np.int64)


# ---- the planner ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Group:
    """One table's shards still to be placed: `pieces` shards on distinct ranks, each
    needing at most `mem` bytes and adding `load` (memory, lookups, width) to its rank."""
    table: int
    kind: str
    pieces: int
    mem: float
    load: Tuple[float, float, float]

    @property
    def size(self):
        return max(self.load)


class _Loads:
    """Loads of tables and shards in three dimensions: memory (weights + optimizer
    state), lookup time and exchanged width, each relative to the mean per rank of its
    total over the exchanged tables (1.0: a rank's fair share)."""

    def __init__(self, config, tables, B, L, optimizer, W):
        self.V, self.D, self.B, self.L = config.table_sizes, config.embedding_dim, B, L
        self.opt, self.item = optimizer, itemsize(config)
        whole = [self.piece(k, "table", 1) for k in tables]
        self.means = [sum(w[i] for w in whole) / W for i in range(3)]

    def memory(self, rows, cols):
        return sum(shard_memory(rows, cols, self.opt, self.item))

    def piece(self, k, kind, n):
        """(memory bytes, lookup ns, width) of the largest of n `kind` pieces of table k."""
        V, D = self.V[k], self.D
        rows = -(-V // n) if kind == "row" else V
        cols = -(-D // n) if kind == "column" else D
        entries = self.B * self.L[k] * (rows / V if kind == "row" else 1.0)
        return (self.memory(rows, cols), lookup_ns(entries, cols),
                cols if kind == "column" else D)

    def group(self, k, kind, n):
        if kind == "row":
            n = min(n, self.V[k])
        elif kind == "column":
            n = min(n, self.D)
        parts = self.piece(k, kind, n)
        load = tuple(x / m if m > 0 else 0.0 for x, m in zip(parts, self.means))
        return _Group(k, kind, n, parts[0], load)


def _table_bytes(config, k, optimizer, replica=False):
    """Bytes of table k whole: weights + optimizer state (+ a replica's dense gradient)."""
    V, D, item = config.table_sizes[k], config.embedding_dim, itemsize(config)
    return sum(shard_memory(V, D, optimizer, item)) + (V * D * item if replica else 0)


def _replicas(config, W, B, optimizer, alltoall_bytes, free, candidates, others):
    """Tables of `candidates` to replicate, smallest first (module docstring, step 2):
    V s <= (B / W) a, and the replicas plus a W-th of the other tables (`others` bytes
    besides the candidates) fit in `free` bytes."""
    V = config.table_sizes
    sharded = sum(_table_bytes(config, k, optimizer) for k in candidates) + others
    used, chosen = 0.0, []
    for k in sorted(candidates, key=lambda k: (V[k], k)):
        if V[k] * itemsize(config) > B / W * alltoall_bytes:
            break
        need, mem = _table_bytes(config, k, optimizer, True), _table_bytes(config, k, optimizer)
        if used + need + (sharded - mem) / W <= free:
            used, sharded = used + need, sharded - mem
            chosen.append(k)
    return chosen


class _Ranks:
    """Per-rank used memory and loads while placing; picks the ranks where a piece
    raises the largest load the least."""

    def __init__(self, W, cap, mem0):
        self.W, self.cap = W, cap
        self.mem, self.load = [float(mem0)] * W, [(0.0, 0.0, 0.0)] * W

    def pick(self, n, mem, load):
        """The n best ranks with `mem` bytes free for a piece of `load`, sorted; None if
        too few have room."""
        fits = [r for r in range(self.W) if self.mem[r] + mem <= self.cap]
        if len(fits) < n:
            return None

        def after(r):
            mine = self.load[r]
            return max(a + b for a, b in zip(mine, load)), sum(mine), r
        return sorted(heapq.nsmallest(n, fits, key=after))

    def add(self, ranks, mem, load):
        for r in ranks:
            self.mem[r] += mem
            self.load[r] = tuple(a + b for a, b in zip(self.load[r], load))

    @property
    def peak(self):
        return max(max(load) for load in self.load)


def _place_groups(groups, loads, ranks, flexible):
    """Place every group, largest piece first (step 6); an auto table (in `flexible`)
    that does not fit as planned goes row-wise over the fewest ranks that hold it.
    Returns {table: (kind, ranks)}."""
    placed, W = {}, ranks.W
    for g in sorted(groups, key=lambda g: (-g.size, -g.mem, g.table)):
        chosen = ranks.pick(g.pieces, g.mem, g.load)
        while chosen is None and g.table in flexible and g.pieces < min(W, loads.V[g.table]):
            g = loads.group(g.table, "row", g.pieces + 1 if g.kind == "row" else 2)
            chosen = ranks.pick(g.pieces, g.mem, g.load)
        if chosen is None:
            k = g.table
            raise ValueError(f"table {k} ({loads.V[k]:,} x {loads.D}, "
                             f"{format_bytes(loads.memory(loads.V[k], loads.D))} with "
                             f"{loads.opt} state) does not fit in the memory left on {W} "
                             f"ranks of {format_bytes(ranks.cap)}")
        ranks.add(chosen, g.mem, g.load)
        placed[g.table] = (g.kind, chosen)
    return placed


def _split_groups(groups, loads, W, piece, flexible):
    """Step 5: auto tables (in `flexible`) placed table-wise and above `piece` of a rank's
    fair share split column-wise into pieces of about that size."""
    out = []
    for g in groups:
        n = min(math.ceil(g.size / piece - 1e-9), loads.D, W)
        split = g.kind == "table" and g.table in flexible and n > 1
        out.append(loads.group(g.table, "column", n) if split else g)
    return out


def make_plan(config, world_size, sharding="auto", optimizer="sgd", batch_size=2048,
              lookups_per_sample=None, memory_per_rank=None, alltoall_bytes=4):
    """The ShardingPlan of `config`'s tables on `world_size` ranks (see the module
    docstring). sharding: the --sharding text; batch_size: the global batch B;
    lookups_per_sample: bag entries per sample (one number or one per table; default
    1); memory_per_rank: bytes for tables + optimizer state per rank (None: no limit);
    alltoall_bytes: itemsize of the exchanged values."""
    W = _check_positive("world_size", world_size)
    B = _check_positive("batch_size", batch_size)
    _check_optimizer(optimizer)
    L = lookups_of(config, lookups_per_sample)
    cap = math.inf if memory_per_rank is None else float(memory_per_rank)
    if not cap > 0:
        raise ValueError(f"memory_per_rank must be positive bytes, got {memory_per_rank!r}")
    default, overrides = parse_sharding(sharding, config.num_tables)
    if default != "auto":
        plan = uniform_plan(W, config.table_sizes, config.embedding_dim, default)
    else:
        plan = _auto_plan(config, W, B, L, optimizer, cap, overrides, alltoall_bytes)
    _check_memory(plan, config, optimizer, cap)
    return plan


def _auto_plan(config, W, B, L, optimizer, cap, overrides, alltoall_bytes):
    V, D, T = config.table_sizes, config.embedding_dim, config.num_tables
    auto = [k for k in range(T) if k not in overrides]
    replicated = [k for k, kind in overrides.items() if kind == "replicate"]
    if W > 1:
        others = sum(_table_bytes(config, k, optimizer) for k, kind in overrides.items()
                     if kind != "replicate")
        free = cap - sum(_table_bytes(config, k, optimizer, True) for k in replicated)
        replicated += _replicas(config, W, B, optimizer, alltoall_bytes, free, auto, others)
    rep_mem = sum(_table_bytes(config, k, optimizer, True) for k in replicated)
    loads = _Loads(config, [k for k in range(T) if k not in replicated], B, L, optimizer,
                   W)
    spread = {k: kind for k, kind in overrides.items() if kind in ("row", "column")}
    groups = [_memory_rows(loads.group(k, "table", 1), loads, cap - rep_mem, W)
              if k in auto else loads.group(k, "table", 1)
              for k in range(T) if k not in replicated and k not in spread]
    placed = _best_placement(groups, loads, W, cap, rep_mem, spread, set(auto))
    placements = []
    for k in range(T):
        if k in replicated:
            placements.append(place(k, "replicate", V[k], D, range(W)))
        elif k in spread:
            placements.append(place(k, spread[k], V[k], D, range(W)))
        else:
            placements.append(place(k, placed[k][0], V[k], D, placed[k][1]))
    return ShardingPlan(W, V, D, placements)


def _best_placement(groups, loads, W, cap, rep_mem, spread, flexible):
    """Place the groups as they are and with column splits (step 5); keep the one whose
    most loaded rank is less loaded (ties: no splits)."""
    best, error = None, None
    candidates = [groups] if W == 1 else \
        [groups] + [_split_groups(groups, loads, W, p, flexible) for p in SPLIT_PIECES]
    for candidate in candidates:
        ranks = _Ranks(W, cap, rep_mem)
        for k, kind in spread.items():  # row / column overrides span every rank
            g = loads.group(k, kind, W)
            ranks.add(range(g.pieces), g.mem, g.load)
        try:
            placed = _place_groups(candidate, loads, ranks, flexible)
        except ValueError as e:
            error = error or e
            continue
        if best is None or ranks.peak < best[0] * (1 - 1e-6):
            best = (ranks.peak, placed)
    if best is None:
        raise error
    return best[1]


def _memory_rows(group, loads, free, W):
    """Step 4: a table too big for one rank's free memory goes row-wise over enough."""
    if group.mem <= free:
        return group
    n = min(math.ceil(group.mem / free), W) if free > 0 else W
    return loads.group(group.table, "row", n)


def _check_memory(plan, config, optimizer, cap):
    if cap == math.inf:
        return
    used = table_memory(plan, config, optimizer)
    worst = int(np.argmax(used))
    if used[worst] > cap:
        raise ValueError(f"rank {worst} would hold {format_bytes(used[worst])} of tables, "
                         f"optimizer state and replicated gradients, more than the "
                         f"{format_bytes(cap)} of memory_per_rank")


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


# ---- the scaling model ----------------------------------------------------------------
def mlp_flops_per_sample(config):
    """FLOPs of one sample's MLPs and interaction, forward + backward: a GEMM layer is
    2 in out forward and 4 in out backward (input and weight gradients); the dot
    interaction 2 D per pair, three times."""
    layers = sum(a * b for sizes in (config.bottom_mlp, config.top_sizes)
                 for a, b in zip(sizes[:-1], sizes[1:]))
    interaction = 0 if config.interaction == "cat" else \
        config.top_input_width - config.embedding_dim  # pairs
    return 6 * layers + 3 * 2 * config.embedding_dim * interaction


@dataclass(frozen=True)
class ScalingRow:
    """One world size of `scaling_table` (seconds per step, busiest rank)."""
    world_size: int
    global_batch: int
    per_rank_batch: int
    kinds: dict            # placement kind -> tables
    compute: float         # MLPs + lookups of the busiest rank
    alltoall: float        # forward + backward exchange
    allreduce: float       # gradient buffer + rwsadagrad column groups
    step: float

    @property
    def communication(self):
        return self.alltoall + self.allreduce

    @property
    def comm_share(self):
        return self.communication / self.step

    @property
    def samples_per_second(self):
        return self.global_batch / self.step


def scaling_table(link_gbps, world_sizes=(8, 64, 512, 4096), per_rank_batch=2048,
                  global_batch=None, optimizer="sgd", gflops=GFLOPS, latency_us=LATENCY_US,
                  alltoall_bytes=4, memory_per_rank=None, config=None):
    """Estimated step time of the Criteo 1TB model (or `config`) at each world size, with
    the auto plan of each.

    Weak scaling by default: every rank keeps `per_rank_batch` samples (B = W x it),
    because a rank's MLP work and its share of the exchange then stay fixed and what
    grows with W is what limits scaling: the all-to-all's W-1 messages per rank, its hot
    spots (a shard's owner sends B x width), and lookups that cannot be spread once
    there are fewer shards than ranks. With `global_batch`, strong scaling of that batch.
    Compute runs at `gflops` (MLPs) plus NS_PER_LOOKUP + NS_PER_FLOAT x width per bag
    entry; the step is the busiest rank's compute plus every exchange, with no overlap
    (an upper bound: the engine overlaps the forward exchange with the bottom MLP)."""
    config = config or criteo_1tb_config()
    if not link_gbps > 0:
        raise ValueError(f"link_gbps must be positive, got {link_gbps!r}")
    rows = []
    for W in world_sizes:
        W = _check_positive("world size", W)
        B = W * _check_positive("per_rank_batch", per_rank_batch) if global_batch is None \
            else _check_positive("global_batch", global_batch)
        plan = make_plan(config, W, "auto", optimizer, batch_size=B,
                         memory_per_rank=memory_per_rank, alltoall_bytes=alltoall_bytes)
        costs = plan_costs(plan, config, B, optimizer, alltoall_bytes=alltoall_bytes,
                           link_gbps=link_gbps, latency_us=latency_us)
        rows.append(_scaling_row(plan, config, costs, gflops))
    return rows


def _scaling_row(plan, config, costs, gflops):
    flops = mlp_flops_per_sample(config)
    compute = max(r.samples * flops / (gflops * 1e9)
                  + (r.lookups * NS_PER_LOOKUP + r.lookup_floats * NS_PER_FLOAT) * 1e-9
                  for r in costs.ranks)
    t = costs.seconds()
    kinds = {}
    for p in plan.placements:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    alltoall = t["forward"] + t["backward"]
    allreduce = t["allreduce"] + t["column_allreduce"]
    B, W = costs.batch_size, plan.world_size
    return ScalingRow(W, B, -(-B // W), kinds, compute, alltoall, allreduce,
                      compute + alltoall + allreduce)


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

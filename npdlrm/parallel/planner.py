"""The auto planner (`make_plan`): where each table of a distributed run goes.

Symbols as in `costs.py`: W ranks, B global batch, V rows and D columns of a table, s
the parameter itemsize (4 for float32), a the itemsize on the all-to-all wire (4, or 2
with float16).

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
"""
import heapq
import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .costs import (_check_optimizer, _check_positive, format_bytes, itemsize, lookup_ns,
                    lookups_of, shard_memory, table_memory)
from .plan import ShardingPlan, parse_sharding, place, uniform_plan

SPLIT_PIECES = (1.0, 0.5)  # column pieces tried: at most this much of a rank's share


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

"""Where each embedding table lives: the sharding plan of a distributed model.

Four placements per table (D: the embedding width, V: its rows, W: the world size):
- ``table``: the whole table on one rank;
- ``row``: contiguous row ranges on several ranks; each pools the bag entries that fall
  in its rows and the sample's owner adds the partial sums;
- ``column``: contiguous column ranges [c0, c1) of D on several ranks;
- ``replicate``: the whole table on every rank, its gradient reduced with the MLPs'.

A plan is plain data: every rank builds the same plan from the same inputs, and the
planner (`planner.py`) only chooses the placements.
"""
from dataclasses import dataclass
from typing import Tuple

KINDS = ("table", "row", "column", "replicate")


def refuse_unshardable(config):
    """ValueError naming the first embedding variant of `config` (a DLRMConfig) that a
    distributed model cannot hold: its tables are not plain (V, D) tables."""
    for flag, on in (("--qr-flag", config.qr_flag), ("--md-flag", config.md_flag),
                     ("--weighted-pooling learned", config.weighted_pooling == "learned")):
        if on:
            raise ValueError(f"{flag} is not supported in distributed runs yet: its "
                             f"tables cannot be sharded or exchanged; train in one process")


@dataclass(frozen=True)
class Shard:
    """Rows [rows[0], rows[1]) x columns [cols[0], cols[1]) of a table, on `rank`."""
    rank: int
    rows: Tuple[int, int]
    cols: Tuple[int, int]

    @property
    def shape(self):
        return (self.rows[1] - self.rows[0], self.cols[1] - self.cols[0])

    @property
    def size(self):
        return self.shape[0] * self.shape[1]


@dataclass(frozen=True)
class Placement:
    """How table `table` (shape (V, D)) is placed: `kind` and its shards, in rank order."""
    table: int
    kind: str
    shards: Tuple[Shard, ...]

    @property
    def ranks(self):
        return tuple(s.rank for s in self.shards)

    @property
    def exchanged(self):
        """True when the pooled vectors travel through the all-to-all."""
        return self.kind != "replicate"


def even_bounds(n, parts):
    """[(lo, hi)] cutting range(n) into `parts` contiguous pieces whose sizes differ by at
    most one (the first n % parts are one longer), as np.array_split does."""
    base, extra = divmod(int(n), int(parts))
    out, lo = [], 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def place(table, kind, num_rows, dim, ranks):
    """The Placement of table `table` (num_rows x dim) of `kind` on `ranks` (a sequence;
    table: its first rank; replicate: every rank given)."""
    ranks = tuple(int(r) for r in ranks)
    if kind not in KINDS:
        raise ValueError(f"table {table}: placement must be one of {KINDS}, got {kind!r}")
    if not ranks or len(set(ranks)) != len(ranks):
        raise ValueError(f"table {table}: {kind} placement needs distinct ranks, got {ranks}")
    if kind == "table":
        shards = (Shard(ranks[0], (0, num_rows), (0, dim)),)
    elif kind == "replicate":
        shards = tuple(Shard(r, (0, num_rows), (0, dim)) for r in ranks)
    elif kind == "row":
        n = min(len(ranks), num_rows)
        shards = tuple(Shard(r, b, (0, dim)) for r, b in zip(ranks[:n], even_bounds(num_rows, n)))
    else:
        n = min(len(ranks), dim)
        shards = tuple(Shard(r, (0, num_rows), b) for r, b in zip(ranks[:n], even_bounds(dim, n)))
    return Placement(int(table), kind, shards)


class ShardingPlan:
    """The placements of every table of a model on `world_size` ranks.

    table_sizes: V per table; dim: D. Every rank computes the same plan.
    """

    def __init__(self, world_size, table_sizes, dim, placements):
        self.world_size, self.dim = int(world_size), int(dim)
        self.table_sizes = tuple(int(v) for v in table_sizes)
        self.placements = tuple(placements)
        if [p.table for p in self.placements] != list(range(len(self.table_sizes))):
            raise ValueError("a plan needs one placement per table, in table order")
        for p in self.placements:
            V = self.table_sizes[p.table]
            if any(not 0 <= r < self.world_size for r in p.ranks):
                raise ValueError(f"table {p.table}: ranks {p.ranks} outside the world of "
                                 f"{self.world_size}")
            if p.kind == "replicate" and sorted(p.ranks) != list(range(self.world_size)):
                raise ValueError(f"table {p.table}: a replicated table lives on every rank")
            covered = sum(s.size for s in p.shards)
            whole = V * self.dim * (self.world_size if p.kind == "replicate" else 1)
            if covered != whole:
                raise ValueError(f"table {p.table}: its {p.kind} shards cover {covered} of "
                                 f"{whole} values")

    def __repr__(self):
        kinds = ",".join(f"{p.table}:{p.kind}" for p in self.placements)
        return f"ShardingPlan(world_size={self.world_size}, {kinds})"

    def __eq__(self, other):
        return (isinstance(other, ShardingPlan) and self.world_size == other.world_size
                and self.table_sizes == other.table_sizes and self.dim == other.dim
                and self.placements == other.placements)

    def shards_of(self, rank):
        """[(table, Shard)] held by `rank`, in table order: the local model's pieces."""
        return [(p.table, s) for p in self.placements for s in p.shards if s.rank == rank]

    def exchanged_of(self, rank):
        """[(table, Shard, kind)] of `rank` whose pooled vectors go through the all-to-all,
        in the order they are laid out in its send buffer."""
        return [(p.table, s, p.kind) for p in self.placements if p.exchanged
                for s in p.shards if s.rank == rank]

    def exchanged_widths(self):
        """[W_s] of every rank s: the summed widths (columns) of its exchanged shards,
        the row width of its block in each all-to-all."""
        widths = [0] * self.world_size
        for p in self.placements:
            if p.exchanged:
                for s in p.shards:
                    widths[s.rank] += s.cols[1] - s.cols[0]
        return widths

    @property
    def replicated(self):
        """Tables held whole by every rank."""
        return [p.table for p in self.placements if p.kind == "replicate"]

    def to_dict(self):
        """JSON-able; `from_dict` inverts it (checkpoints store the plan they were saved by)."""
        return {"world_size": self.world_size, "table_sizes": list(self.table_sizes),
                "dim": self.dim,
                "placements": [{"table": p.table, "kind": p.kind,
                                "shards": [[s.rank, list(s.rows), list(s.cols)]
                                           for s in p.shards]} for p in self.placements]}

    @classmethod
    def from_dict(cls, d):
        placements = [Placement(int(p["table"]), p["kind"],
                                tuple(Shard(int(r), tuple(rows), tuple(cols))
                                      for r, rows, cols in p["shards"]))
                      for p in d["placements"]]
        return cls(d["world_size"], d["table_sizes"], d["dim"], placements)


def uniform_plan(world_size, table_sizes, dim, kind):
    """Every table placed `kind`: table-wise round-robin over the ranks, row and column
    over every rank, or replicated."""
    W = int(world_size)
    placements = []
    for k, v in enumerate(table_sizes):
        ranks = [k % W] if kind == "table" else range(W)
        placements.append(place(k, kind, int(v), dim, ranks))
    return ShardingPlan(W, table_sizes, dim, placements)


def parse_sharding(text, num_tables):
    """'auto' | 'table' | 'row' | 'column' | 'replicate' (every table), or overrides of
    single tables '3:row,9:column' (the planner places the rest). Returns (default kind
    or 'auto', {table: kind})."""
    text = str(text).strip()
    if text in ("auto",) + KINDS:
        return text, {}
    overrides = {}
    for part in text.split(","):
        table, sep, kind = part.strip().partition(":")
        if not sep or kind not in KINDS:
            raise ValueError(f"--sharding: expected auto, one of {KINDS}, or TABLE:KIND pairs "
                             f"like 3:row,9:column; got {part.strip()!r}")
        try:
            k = int(table)
        except ValueError:
            raise ValueError(f"--sharding: {table!r} is not a table number") from None
        if not 0 <= k < num_tables:
            raise ValueError(f"--sharding: table {k} does not exist (the model has "
                             f"{num_tables} tables, 0..{num_tables - 1})")
        if k in overrides:
            raise ValueError(f"--sharding: table {k} is given twice")
        overrides[k] = kind
    return "auto", overrides

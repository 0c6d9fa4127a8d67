"""`npdlrm plan`: the sharding plan of a distributed run and what a step costs, without
MPI.

    npdlrm plan --world-size 4 <the npdlrm train flags> [--link-gbps 100]

Prints where each table goes, per rank the memory, lookups and bytes each exchange
sends per step and, with --link-gbps, the estimated times and the scaling table of the
Criteo 1TB model (see npdlrm/parallel/costs.py and scaling.py for the models and their
assumptions).
"""
import argparse
import os

from ..config import parse_dashed
from ..parallel.costs import (GFLOPS, NS_PER_FLOAT, NS_PER_LOOKUP, format_bytes, itemsize,
                              mlp_parameters, parse_bytes, plan_costs)
from ..parallel.plan import refuse_unshardable
from ..parallel.planner import make_plan
from ..parallel.scaling import scaling_table
from .train import model_config, processed_path
from .train_flags import build_parser, check_values, load_config, refuse_unsupported

SCALING_WORLDS = (8, 64, 512, 4096)
SCALING_PER_RANK_BATCH = 2048
ALL_RANKS_UP_TO = 64  # larger worlds print min / mean / max over the ranks


def add_arguments(parser):
    build_parser(parser)
    parser.description = (
        "Print the sharding plan of a distributed run (npdlrm train's flags plus "
        "--world-size) and what each rank holds, pools and sends per step. Needs no MPI.")
    g = parser.add_argument_group("npdlrm plan")
    g.add_argument("--world-size", type=int, required=True, metavar="N",
                   help="ranks of the run")
    g.add_argument("--memory-per-rank", type=_size, default=None, metavar="SIZE",
                   help="memory for tables and optimizer state per rank, e.g. 16GiB "
                        "(default: no limit)")
    _config_first(parser)


def _size(text):
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _config_first(parser):
    """Read --config FILE before the other flags, as `npdlrm train` does (the command
    line wins): its settings become the parser's defaults."""
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        known, _ = pre.parse_known_args(args)
        if known.config:
            try:
                parser.set_defaults(**load_config(known.config, parser))
            except ValueError as e:
                parser.error(str(e))
        return parse(args, namespace)
    parser.parse_known_args = parse_known_args


# ---- the run's model -----------------------------------------------------------------
def table_sizes(args):
    """--arch-embedding-size, or the processed file's sizes with --data-generation dataset."""
    if args.data_generation != "dataset":
        return parse_dashed(args.arch_embedding_size, "--arch-embedding-size")
    from ..data.h5data import read_attrs
    path = processed_path(args)
    if not os.path.exists(path):
        raise ValueError(f"processed data file {path} does not exist: npdlrm plan reads the "
                         f"table sizes from it (run npdlrm preprocess first, or give "
                         f"--data-generation random and --arch-embedding-size)")
    return tuple(int(v) for v in read_attrs(path)["table_sizes"])


def lookups_per_sample(args):
    """Bag entries per sample: Criteo rows have one per table; random and synthetic bags
    have --num-indices-per-lookup entries, or 1 to that many (mean (n + 1) / 2)."""
    if args.data_generation == "dataset":
        return 1.0
    n = args.num_indices_per_lookup
    return float(n) if args.num_indices_per_lookup_fixed else (n + 1) / 2


def wire_bytes(args):
    """Bytes per exchanged value (--alltoall-dtype)."""
    return 2 if args.alltoall_dtype == "float16" else 4


def plan_from_args(args, config, world_size, memory_per_rank=None):
    """The ShardingPlan the flags give on `world_size` ranks: what `npdlrm plan` prints
    and what the distributed `npdlrm train` uses."""
    refuse_unshardable(config)
    return make_plan(config, world_size, args.sharding, args.optimizer,
                     batch_size=args.mini_batch_size,
                     lookups_per_sample=lookups_per_sample(args),
                     memory_per_rank=memory_per_rank, alltoall_bytes=wire_bytes(args))


# ---- formatting ----------------------------------------------------------------------
def format_table(header, rows, align=None):
    """Lines of a text table; align: 'l' or 'r' per column (default: the first column
    left-aligned, the others right-aligned)."""
    align = align or "l" + "r" * (len(header) - 1)
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                      for c, w, a in zip(row, widths, align)).rstrip() for row in cells]


def format_seconds(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def format_ranks(ranks, world_size):
    """(0, 1, 2, 5) -> '0-2,5'; every rank -> 'all'."""
    ranks = sorted(ranks)
    if ranks == list(range(world_size)) and world_size > 1:
        return "all"
    runs, start = [], ranks[0]
    for a, b in zip(ranks, ranks[1:] + [None]):
        if b != a + 1:
            runs.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(runs)


def placement_lines(plan):
    rows = []
    for p in plan.placements:
        V = plan.table_sizes[p.table]
        biggest = max(p.shards, key=lambda s: s.size)
        kind = p.kind if len(p.shards) == 1 or p.kind == "replicate" else \
            f"{p.kind} x{len(p.shards)}"
        rows.append((p.table, f"{V:,}", kind, format_ranks(p.ranks, plan.world_size),
                     f"{biggest.shape[0]:,} x {biggest.shape[1]}"))
    return format_table(("table", "rows", "placement", "ranks", "largest shard"), rows,
                        "rrllr")


RANK_COLUMNS = (  # header, RankCost -> number, number -> text
    ("batch", lambda c: c.samples, lambda v: f"{round(v):,}"),
    ("params", lambda c: c.param_bytes, format_bytes),
    ("opt state", lambda c: c.state_bytes, format_bytes),
    ("lookups/step", lambda c: c.lookups, lambda v: f"{round(v):,}"),
    ("a2a fwd sent", lambda c: c.alltoall_forward, format_bytes),
    ("a2a bwd sent", lambda c: c.alltoall_backward, format_bytes),
    ("allreduce sent", lambda c: c.allreduce + c.column_allreduce, format_bytes),
)
TIME_COLUMNS = (
    ("fwd time", lambda c: c.seconds["forward"], format_seconds),
    ("bwd time", lambda c: c.seconds["backward"], format_seconds),
    ("allreduce time", lambda c: c.seconds["allreduce"] + c.seconds["column_allreduce"],
     format_seconds),
)


def rank_lines(costs):
    columns = RANK_COLUMNS + (TIME_COLUMNS if costs.link_gbps else ())
    header = ("rank",) + tuple(c[0] for c in columns)
    values = [[get(c) for _, get, _ in columns] for c in costs.ranks]
    if len(values) <= ALL_RANKS_UP_TO:
        labels = [str(c.rank) for c in costs.ranks]
    else:
        labels = ["min", "mean", "max"]
        values = [[min(col) for col in zip(*values)],
                  [sum(col) / len(col) for col in zip(*values)],
                  [max(col) for col in zip(*values)]]
    rows = [[label] + [fmt(v) for v, (_, _, fmt) in zip(row, columns)]
            for label, row in zip(labels, values)]
    return format_table(header, rows)


def summary_lines(plan, config, costs, optimizer, wire_bytes):
    W, item = plan.world_size, itemsize(config)
    P, N = mlp_parameters(config), costs.allreduce_elements
    c0 = costs.ranks[0]
    lines = [
        f"params and opt state include the MLPs ({P:,} parameters, "
        f"{format_bytes(c0.mlp_bytes)}, optimizer state {format_bytes(c0.mlp_state_bytes)}) "
        f"on every rank; the flat gradient buffer adds {format_bytes(c0.grad_bytes)}.",
        f"all-to-all: rank s sends rank r b_r x W_s values of {wire_bytes} B forward (W_s: "
        f"the widths of s's exchanged shards), the reverse backward; own blocks stay local.",
        f"allreduce: ring over {W} ranks of N = {N:,} values (MLPs + replicated tables): "
        f"each rank sends 2 (W-1)/W N x {item} B per step.",
    ]
    if optimizer == "rwsadagrad" and any(c.column_allreduce for c in costs.ranks):
        lines.append("rwsadagrad on column shards also reduces U <= min(V, nnz) row sums "
                     "per column group (counted in allreduce sent, at the bound).")
    t = costs.seconds()
    if t:
        lines.append(
            f"at {costs.link_gbps:g} Gbit/s per rank (full duplex, {costs.latency_us:g} us "
            f"per message), busiest rank: forward all-to-all {format_seconds(t['forward'])}, "
            f"backward {format_seconds(t['backward'])}, allreduce "
            f"{format_seconds(t['allreduce'] + t['column_allreduce'])} per step.")
    return lines


def scaling_lines(link_gbps, optimizer, wire_bytes):
    rows = scaling_table(link_gbps, SCALING_WORLDS, SCALING_PER_RANK_BATCH,
                         optimizer=optimizer, alltoall_bytes=wire_bytes)
    head = [
        f"Scaling of the Criteo 1TB model (MLPerf table sizes, max-ind-range 40M; D=128, "
        f"bottom 13-512-256-128, top 1024-1024-512-256-1) at {link_gbps:g} Gbit/s:",
        f"weak scaling, {SCALING_PER_RANK_BATCH} samples per rank, auto plans, {optimizer}; "
        f"compute {GFLOPS:g} GFLOP/s for the MLPs plus {NS_PER_LOOKUP:g} ns per bag entry "
        f"+ {NS_PER_FLOAT:g} ns per float; step = busiest rank's compute + every exchange "
        f"(no overlap).",
    ]
    table = [(r.world_size, f"{r.global_batch:,}", _kinds(r.kinds), format_seconds(r.compute),
              format_seconds(r.alltoall), format_seconds(r.allreduce), format_seconds(r.step),
              f"{100 * r.comm_share:.1f} %", f"{r.samples_per_second:,.0f}") for r in rows]
    return head + format_table(("ranks", "global batch", "plan", "compute", "all-to-all",
                                "allreduce", "step", "comm", "samples/s"), table,
                               "rrlrrrrrr")


def _kinds(kinds):
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))


# ---- the command -----------------------------------------------------------------------
def run(args):
    refuse_unsupported(args)
    check_values(args)
    if args.world_size < 1:
        raise ValueError(f"--world-size must be positive, got {args.world_size}")
    config = model_config(args, table_sizes(args))
    L = lookups_per_sample(args)
    wire = wire_bytes(args)
    B, W, opt = args.mini_batch_size, args.world_size, args.optimizer
    plan = plan_from_args(args, config, W, args.memory_per_rank)
    costs = plan_costs(plan, config, B, opt, L, wire, args.link_gbps or None)
    out = [f"npdlrm plan: {config.num_tables} tables of width {config.embedding_dim} on {W} "
           f"ranks, global batch {B:,}, {L:g} lookups per sample and table, {opt}, "
           f"{args.alltoall_dtype} all-to-all, --sharding {args.sharding}", ""]
    out += placement_lines(plan) + [""]
    out += [f"Per rank and step (bytes sent; a rank receives in the forward all-to-all "
            f"what it sends in the backward one):"] + rank_lines(costs)
    out += summary_lines(plan, config, costs, opt, wire)
    if args.link_gbps:
        out += [""] + scaling_lines(args.link_gbps, opt, wire)
    print("\n".join(out))
    return 0

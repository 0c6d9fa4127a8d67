"""One world size of `make bench-mpi` (run under mpiexec by bench_mpi.py).

Trains the kaggle-shaped model on pre-generated synthetic batches, then prints (rank 0)
one JSON line: ms per step, each rank's split into compute / all-to-all wait / allreduce
wait, the bytes each rank's all-to-all sent per step beside the planner's prediction,
and the step's forward all-to-all timed alone against the cost model's time for it at the
bandwidth of a uniform 4 MiB-per-peer all-to-all measured in the same run.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cases import CASES  # noqa: E402
from npdlrm import DLRMConfig, Optimizer  # noqa: E402
from npdlrm.data.synthetic import SyntheticData  # noqa: E402
from npdlrm.parallel import DistributedDLRM, world  # noqa: E402
from npdlrm.parallel.costs import plan_costs  # noqa: E402
from npdlrm.parallel.planner import make_plan  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="kaggle", choices=sorted(CASES))
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sharding", default="auto")
    p.add_argument("--alltoall-dtype", default="float32", choices=["float32", "float16"])
    return p.parse_args(argv)


def build(args, comm):
    case = CASES[args.config]
    config = DLRMConfig.from_arch(case.arch_mlp_bot, case.arch_mlp_top, case.table_sizes,
                                  case.dim, loss="bce")
    wire = np.dtype(args.alltoall_dtype).itemsize
    plan = make_plan(config, comm.size, args.sharding, optimizer="sgd", batch_size=args.batch,
                     lookups_per_sample=[1] * config.num_tables, alltoall_bytes=wire)
    model = DistributedDLRM(config, comm, plan, seed=1, init="fast",
                            alltoall_dtype=args.alltoall_dtype)
    return config, plan, model, wire


def median_seconds(fn, comm, repeats=20):
    times = []
    for _ in range(repeats):
        comm.barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def timed_alltoall(model, comm):
    """Seconds of the step's forward exchange alone (same buffers), median of repeats."""
    ex = model.exchange
    return median_seconds(
        lambda: comm.ialltoallv(ex.P_wire, *ex.fw_send, ex.recv, *ex.fw_recv).Wait(), comm)


def link_gbps(comm, per_peer=1 << 20):
    """Gbit/s one rank sends at in a uniform all-to-all of `per_peer` float32 values per
    peer (the calibration of the cost model's link, measured apart from the step)."""
    W = comm.size
    if W == 1:
        return 0.0
    send, recv = np.ones(W * per_peer, np.float32), np.empty(W * per_peer, np.float32)
    counts = np.full(W, per_peer, np.int64)
    displs = np.arange(W, dtype=np.int64) * per_peer
    seconds = median_seconds(lambda: comm.ialltoallv(send, counts, displs, recv, counts,
                                                     displs).Wait(), comm, repeats=10)
    return 8 * 4 * per_peer * (W - 1) / seconds / 1e9


def main():
    args = parse_args()
    comm = world()
    t0 = time.perf_counter()
    config, plan, model, wire = build(args, comm)
    build_s = time.perf_counter() - t0
    data = SyntheticData(num_samples=args.batch * 8, num_dense=config.num_dense,
                         table_sizes=config.table_sizes, distribution="power-law",
                         bag_size=1, fixed_bag_size=True, seed=2)
    batches = [data.batch(i, args.batch, "train") for i in range(8)]
    opt = Optimizer("sgd", lr=0.01)

    def step(i):
        mb = batches[i % len(batches)]
        return model.train_step(mb.dense, mb.indices, mb.offsets, mb.labels, opt)

    for i in range(args.warmup):
        step(i)
    model.reset_timers()
    model.steps = 0
    comm.barrier()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    comm.barrier()
    ms = 1000 * (time.perf_counter() - t0) / args.steps
    split = {k: 1000 * v / args.steps for k, v in model.timers.items()}
    sent = model.exchange.sent_bytes()
    alone = timed_alltoall(model, comm)
    gbps = link_gbps(comm)
    mine = {"rank": comm.rank, "split_ms": split, "sent": sent, "alltoall_alone_ms": 1000 * alone}
    everyone = comm.allgather_obj(mine)
    if comm.rank:
        return
    lookups = [1] * config.num_tables
    predicted = plan_costs(plan, config, args.batch, "sgd", lookups, wire)
    modelled = plan_costs(plan, config, args.batch, "sgd", lookups, wire,
                          link_gbps=gbps or None)
    kinds = {}
    for p in plan.placements:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    print(json.dumps({
        "world_size": comm.size, "batch": args.batch, "steps": args.steps, "ms_per_step": ms,
        "build_s": build_s, "plan": kinds, "ranks": everyone,
        "predicted_sent": [{"forward": r.alltoall_forward, "backward": r.alltoall_backward}
                           for r in predicted.ranks],
        "allreduce_values": int(model.grad_buffer.size),
        "predicted_allreduce_bytes": [r.allreduce for r in predicted.ranks],
        "link_gbps": gbps,
        "modelled_forward_ms": (1000 * modelled.seconds()["forward"]
                                if gbps else 0.0)}))


if __name__ == "__main__":
    main()

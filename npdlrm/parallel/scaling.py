"""A scaling model of the Criteo 1TB model (`scaling_table`): the estimated step time
of the auto plan at each world size.

Weak scaling by default: every rank keeps `per_rank_batch` samples (B = W x it),
because a rank's MLP work and its share of the exchange then stay fixed and what
grows with W is what limits scaling: the all-to-all's W-1 messages per rank, its hot
spots (a shard's owner sends B x width), and lookups that cannot be spread once
there are fewer shards than ranks. With `global_batch`, strong scaling of that batch.
Compute runs at `gflops` (MLPs) plus NS_PER_LOOKUP + NS_PER_FLOAT x width per bag
entry; the step is the busiest rank's compute plus every exchange (`plan_costs`), with
no overlap (an upper bound: the engine overlaps the forward exchange with the bottom
MLP).
"""
from dataclasses import dataclass

from .costs import (GFLOPS, LATENCY_US, NS_PER_FLOAT, NS_PER_LOOKUP, _check_positive,
                    criteo_1tb_config, plan_costs)
from .planner import make_plan


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
    the auto plan of each: ScalingRow per world size. Weak scaling (B = W x
    `per_rank_batch`) unless `global_batch` is given (see the module docstring)."""
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

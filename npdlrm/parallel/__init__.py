"""Hybrid parallel training over MPI: data-parallel MLPs, sharded embedding tables.

The core (`npdlrm.model` and friends) never imports this package; `comm.py` is the
only file that imports mpi4py.
"""
from .comm import Comm, LocalComm, world
from .checkpoint import load_sharded, save_sharded
from .model import DistributedDLRM
from .plan import KINDS, Placement, Shard, ShardingPlan, parse_sharding, place, uniform_plan
from .planner import make_plan

__all__ = ["Comm", "LocalComm", "world", "DistributedDLRM", "KINDS", "Placement", "Shard",
           "ShardingPlan", "parse_sharding", "place", "uniform_plan", "make_plan",
           "save_sharded", "load_sharded"]

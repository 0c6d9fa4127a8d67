"""`npdlrm train` over MPI: the same run as one process, with the model distributed.

Every rank reads the same global batches (the loaders are functions of (seed, epoch,
batch), so no input exchange is needed) and keeps what it uses; rank 0 alone prints,
draws the progress bar and writes the JSONL log.
"""
import os

from ..cli.train import LocalSetup, dataset_loaders, model_config, processed_path
from .agree import agree
from .model import TIMERS, DistributedDLRM


class SetupError(ValueError):
    """A bad setting found on some rank before training: every rank raises it, and the
    launcher reports it once, without aborting."""


class DistributedSetup(LocalSetup):
    """LocalSetup's hooks for a DistributedDLRM over `comm`."""

    # ranks share a node's cores in lockstep: each keeps its share (parallel/launch.py)
    adapts_threads = False

    def __init__(self, comm):
        self.comm = comm
        self.is_root = comm.rank == 0

    def agree(self, fn):
        """fn() on every rank (fn makes no collective call); if it refused its inputs on
        some rank, every rank raises SetupError with the first such rank's message."""
        try:
            result, error = fn(), None
        except (ValueError, FileNotFoundError, IsADirectoryError) as e:
            result, error = None, e
        try:
            agree(self.comm, error)
        except (ValueError, FileNotFoundError, IsADirectoryError) as e:
            raise SetupError(str(e)) from e
        return result

    def loaders(self, args, say):
        if args.data_generation == "dataset" and not os.path.exists(processed_path(args)):
            # rank 0 preprocesses once; the others wait, then open the finished file
            result = dataset_loaders(args, say) if self.is_root else None
            self.comm.barrier()
            return result or self.agree(lambda: dataset_loaders(args, say))
        return self.agree(lambda: LocalSetup.loaders(self, args, say))

    def build(self, args, table_sizes, init=None):
        config, plan = self.agree(lambda: _plan(args, table_sizes, self.comm.size))
        return DistributedDLRM(config, self.comm, plan, seed=args.numpy_rand_seed,
                               init=init or args.init,
                               alltoall_dtype=args.alltoall_dtype,
                               check_every=args.check_replicas)

    def load(self, path, model, optimizer, with_optimizer, verify=True):
        from .checkpoint import load_sharded
        return load_sharded(path, model, optimizer, with_optimizer, verify)

    @staticmethod
    def save(path, model, optimizer=None, train_state=None):
        from .checkpoint import save_sharded
        return save_sharded(path, model, optimizer, train_state)

    def describe(self, model):
        counts = {}
        for p in model.plan.placements:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        return f" on {self.comm.size} ranks (tables: {kinds})"

    def connect(self, model, loaders):
        """Loaders that can (the HDF5 and in-memory ones) read only the tables this rank
        needs; synthetic batches are generated whole."""
        for loader in loaders:
            if hasattr(loader, "tables"):
                loader.tables = model.tables_needed

    def wrap_reporter(self, reporter, model):
        return TimedReporter(reporter, model)

    def finish(self, model, say):
        steps = max(model.steps, 1)
        split = ", ".join(f"{k} {1000 * v / steps:.2f}" for k, v in model.timers.items())
        say(f"Rank 0 ms per step: {split} (all-to-all and allreduce: time spent waiting)")


def _plan(args, table_sizes, world_size):
    """(DLRMConfig, ShardingPlan) of the flags, as `npdlrm plan` shows it."""
    from ..cli.plan import plan_from_args
    config = model_config(args, table_sizes)
    return config, plan_from_args(args, config, world_size)


class TimedReporter:
    """Adds the per-step split of rank 0's time (compute, all-to-all, allreduce, in ms)
    to every train record; everything else goes to `inner`."""

    def __init__(self, inner, model):
        self.inner, self.model = inner, model
        self._last, self._steps = dict(model.timers), model.steps

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train(self, record):
        steps = max(self.model.steps - self._steps, 1)
        for key in TIMERS:
            record[f"{key}_ms"] = 1000 * (self.model.timers[key] - self._last[key]) / steps
        self._last, self._steps = dict(self.model.timers), self.model.steps
        self.inner.train(record)

"""The thread governor: follows the cores other processes leave free, never flaps on one
reading, and changing the thread count mid-run leaves every result bitwise the same."""
import numpy as np
import pytest

import npdlrm
from npdlrm.cli.train_flags import parse_train_args
from npdlrm.threads import CpuSampler, ThreadGovernor, blas_threads, max_threads, set_threads


class FakeLoad:
    """A clock and a /proc/stat reader whose foreign load the test sets, in cores."""

    def __init__(self):
        self.now, self.busy, self.own, self.others = 0.0, 0.0, 0.0, 0.0

    def clock(self):
        return self.now

    def read(self):
        return self.busy, self.own

    def advance(self, seconds, own_cores):
        self.now += seconds
        self.own += own_cores * seconds
        self.busy += (own_cores + self.others) * seconds


def governor(fake, cores=2):
    applied = []
    g = ThreadGovernor(limit=cores, interval=1.0, sampler=fake, apply=applied.append,
                       clock=fake.clock)
    g.cores = cores  # the test's machine, whatever this one has
    g.threads = cores
    return g, applied


def test_governor_drops_a_thread_when_another_process_takes_a_core():
    fake = FakeLoad()
    g, applied = governor(fake)
    fake.others = 0.9
    fake.advance(1.0, 1.1)
    assert g.tick() == 2 and applied == []  # one reading is not enough
    fake.advance(1.0, 1.1)
    assert g.tick() == 1 and applied == [1]
    assert g.others == pytest.approx(0.9)
    fake.others = 0.0  # the other process ended
    fake.advance(1.0, 1.0)
    g.tick()
    fake.advance(1.0, 1.0)
    assert g.tick() == 2 and applied == [1, 2] and g.changes == 2


def test_governor_ignores_one_burst_and_reads_only_every_interval():
    fake = FakeLoad()
    g, applied = governor(fake)
    fake.others = 1.0
    fake.advance(1.0, 1.0)
    g.tick()
    fake.others = 0.0
    fake.advance(1.0, 2.0)
    assert g.tick() == 2
    fake.others = 1.0
    fake.advance(0.5, 1.0)
    assert g.tick() == 2  # within the interval: no reading at all
    assert applied == []


def test_governor_keeps_at_least_one_thread_and_at_most_the_cores():
    g, _ = governor(FakeLoad(), cores=4)
    assert g.wanted(7.5) == 1
    assert g.wanted(0.0) == 4
    assert g.wanted(1.4) == 3
    assert g.wanted(1.6) == 2


def test_sampler_reads_this_machine():
    busy, own = CpuSampler().read()
    assert busy > 0 and own > 0


def test_set_threads_sets_openblas_and_numba():
    import numba
    if blas_threads() is None:
        pytest.skip("NumPy here does not use OpenBLAS")
    before = (blas_threads(), numba.get_num_threads())
    try:
        set_threads(1)
        assert blas_threads() == 1 and numba.get_num_threads() == 1
        with pytest.raises(ValueError, match="at least 1, got 0"):
            set_threads(0)
    finally:
        set_threads(max(before))
    assert max_threads() >= 1


def _train(switch_every):
    """Loss and parameters of 6 steps, the thread count alternating every `switch_every`
    steps (0: never)."""
    sizes = (5000, 300, 20000, 7)
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="13-256-64-16", arch_mlp_top="256-64-1",
                                  arch_embedding_size=sizes, arch_sparse_feature_size=16,
                                  seed=3)
    opt = npdlrm.Optimizer("adagrad", lr=0.05)
    rng = np.random.default_rng(0)
    B, top = 2048, max_threads()
    losses = []
    for step in range(6):
        if switch_every:
            set_threads(1 if (step // switch_every) % 2 else top)
        dense = rng.random((B, 13), dtype=np.float32)
        idx = [rng.integers(0, v, 3 * B) for v in sizes]
        off = [np.arange(0, 3 * B + 1, 3) for _ in sizes]
        y = (rng.random(B) < 0.3).astype(np.float32)
        losses.append(model.train_step(dense, idx, off, y, opt))
    set_threads(top)
    tables = [t.weight.copy() for t in model.embeddings.tables]
    return np.array(losses), model.params.data.copy(), tables


def test_changing_the_thread_count_mid_run_changes_no_bit():
    if max_threads() < 2:
        pytest.skip("one thread here (NUMBA/OPENBLAS_NUM_THREADS=1): nothing to switch")
    a = _train(0)
    b = _train(1)
    assert np.array_equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    assert all(np.array_equal(x, y) for x, y in zip(a[2], b[2]))


def test_threads_flag():
    args = parse_train_args(["--threads", "1"])
    assert args.threads == 1
    assert parse_train_args([]).threads == "auto"
    with pytest.raises(SystemExit):
        parse_train_args(["--threads", "0"])

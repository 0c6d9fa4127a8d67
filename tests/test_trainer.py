"""The training loop: cadence of prints, evaluations and checkpoints; exact resume."""
import numpy as np
import pytest

from npdlrm import DLRM, Optimizer
from npdlrm.checkpoint import load_checkpoint
from npdlrm.data.minibatch import Minibatch
from npdlrm.trainer import Reporter, Trainer, TrainState

TABLES = (50, 30, 20)


class FakeLoader:
    """Batch j of epoch e depends on (seed, e, j) only, like the real loaders."""

    def __init__(self, n_batches, B=16, seed=0, labels="binary"):
        self.n, self.B, self.seed, self.labels = n_batches, B, seed, labels
        self.opened = []

    def __len__(self):
        return self.n

    def epoch(self, epoch, start_batch=0):
        self.opened.append((epoch, start_batch))
        for j in range(start_batch, self.n):
            r = np.random.default_rng([self.seed, epoch, j])
            dense = r.random((self.B, 4), dtype=np.float32)
            idx = [r.integers(0, v, self.B) for v in TABLES]
            off = [np.arange(self.B + 1)] * len(TABLES)
            y = r.random(self.B).astype(np.float32)
            if self.labels == "binary":
                y = (y < 0.3).astype(np.float32)
            yield Minibatch(dense, idx, off, y)


class Recorder(Reporter):
    def __init__(self, fail_after_checkpoint_at=None):
        self.train_records, self.evals, self.saved = [], [], []
        self.fail_at = fail_after_checkpoint_at

    def train(self, record):
        self.train_records.append(record)

    def evaluate(self, record):
        self.evals.append(record)

    def checkpoint(self, path, record):
        self.saved.append((path, record["step"]))
        if record["step"] == self.fail_at:
            raise KeyboardInterrupt("simulated crash right after a checkpoint")


def make(opt="adagrad"):
    model = DLRM.from_arch(arch_mlp_bot="4-8-4", arch_mlp_top="8-1",
                           arch_embedding_size=TABLES, arch_sparse_feature_size=4, seed=3)
    return model, Optimizer(opt, lr=0.05, num_warmup_steps=4, decay_start_step=10,
                            num_decay_steps=8)


def test_cadence_of_prints_evaluations_and_checkpoints(tmp_path):
    model, opt = make()
    rec = Recorder()
    tr = Trainer(model, opt, FakeLoader(9), FakeLoader(2), nepochs=2, num_batches=7,
                 print_freq=2, test_freq=3, save_path=str(tmp_path / "c-{step}.h5"),
                 reporter=rec)
    tr.fit()
    assert tr.state == TrainState(epoch=2, batch=0, step=14, samples=14 * 16)
    # prints every 2 batches, at each evaluation and at the end of each epoch
    assert [(r["epoch"], r["iter"]) for r in rec.train_records] == [
        (0, 2), (0, 3), (0, 4), (0, 6), (0, 7), (1, 2), (1, 3), (1, 4), (1, 6), (1, 7)]
    assert [r["step"] for r in rec.evals] == [3, 6, 7, 10, 13, 14]
    assert [s for _, s in rec.saved] == [3, 6, 7, 10, 13, 14]
    assert all((tmp_path / f"c-{s}.h5").exists() for _, s in rec.saved)
    assert all(0 <= r["auc"] <= 1 for r in rec.evals)
    # the loss printed is the mean over the window of batches since the last line
    assert all(np.isfinite(r["loss"]) and r["samples_per_s"] > 0 for r in rec.train_records)


def test_no_evaluation_without_test_freq_but_a_final_checkpoint(tmp_path):
    model, opt = make("sgd")
    rec = Recorder()
    Trainer(model, opt, FakeLoader(5), FakeLoader(2), nepochs=1, print_freq=100,
            save_path=str(tmp_path / "last.h5"), reporter=rec).fit()
    assert rec.evals == [] and [s for _, s in rec.saved] == [5]
    assert [(r["epoch"], r["iter"]) for r in rec.train_records] == [(0, 5)]


@pytest.mark.parametrize("opt_name", ["sgd", "adagrad", "rwsadagrad"])
def test_resume_after_a_crash_equals_the_straight_run(tmp_path, opt_name):
    # straight: 2 epochs of 7 batches
    model, opt = make(opt_name)
    Trainer(model, opt, FakeLoader(9), FakeLoader(2), nepochs=2, num_batches=7,
            test_freq=5, save_path=str(tmp_path / "a-{step}.h5"), reporter=Recorder()).fit()
    straight = model.state_dict(copy=True)
    # crashed right after the checkpoint at step 12 (epoch 1, batch 5)
    model, opt = make(opt_name)
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, opt, FakeLoader(9), FakeLoader(2), nepochs=2, num_batches=7,
                test_freq=5, save_path=str(tmp_path / "b-{step}.h5"),
                reporter=Recorder(fail_after_checkpoint_at=12)).fit()
    # resume into a fresh model and optimizer
    model, opt = make(opt_name)
    ck = load_checkpoint(str(tmp_path / "b-12.h5"), model=model, optimizer=opt)
    state = TrainState.from_dict(ck.train_state)
    assert state == TrainState(epoch=1, batch=5, step=12, samples=192)
    loader = FakeLoader(9)
    Trainer(model, opt, loader, FakeLoader(2), nepochs=2, num_batches=7, test_freq=5,
            state=state, reporter=Recorder()).fit()
    assert loader.opened == [(1, 5)]  # started mid-epoch, nothing replayed
    resumed = model.state_dict()
    for name, value in straight.items():
        assert np.array_equal(value, resumed[name]), name
    assert opt.step_count == 14


def test_round_targets_rounds_the_labels():
    model, opt = make("sgd")
    tr = Trainer(model, opt, FakeLoader(1, labels="soft"), round_targets=True,
                 reporter=Recorder())
    tr.fit()  # bce takes soft labels too: rounding must show in the weights
    model2, opt2 = make("sgd")
    mb = next(FakeLoader(1, labels="soft").epoch(0))
    model2.train_step(mb.dense, mb.indices, mb.offsets, np.round(mb.labels), opt2)
    for name, value in model2.state_dict().items():
        assert np.array_equal(value, model.state_dict()[name]), name


def test_a_short_loader_is_an_error():
    class Short(FakeLoader):
        def __len__(self):
            return 5  # claims 5, yields 3

    model, opt = make("sgd")
    with pytest.raises(RuntimeError, match="gave 3 batches"):
        Trainer(model, opt, Short(3), reporter=Recorder()).fit()


def test_bad_settings_are_refused():
    model, opt = make("sgd")
    with pytest.raises(ValueError, match="print_freq"):
        Trainer(model, opt, FakeLoader(2), print_freq=0)
    with pytest.raises(ValueError, match="nepochs"):
        Trainer(model, opt, FakeLoader(2), nepochs=-1)

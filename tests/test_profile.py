"""--enable-profiling: per-stage times of the real training step."""
import numpy as np

import npdlrm
from npdlrm.cli import main
from npdlrm.profile import StageTimes

STAGES = ["batch check", "embedding lookup", "bottom MLP forward", "interaction forward",
          "top MLP forward", "loss", "top MLP backward", "interaction backward",
          "bottom MLP backward", "dense optimizer", "embedding update"]


def test_every_stage_of_train_step_is_timed_and_predict_is_not():
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="3-4-2", arch_mlp_top="4-1",
                                  arch_embedding_size="10-10", arch_sparse_feature_size=2)
    model.profile = prof = StageTimes()
    rng = np.random.default_rng(0)
    dense = rng.random((8, 3), dtype=np.float32)
    idx, off = [np.arange(8) % 10] * 2, [np.arange(8)] * 2
    labels = (np.arange(8) % 2).astype(np.float32)
    opt = npdlrm.Optimizer("sgd", lr=0.1)
    for _ in range(3):
        model.train_step(dense, idx, off, labels, opt)
        before = dict(prof.totals)
        model.predict(dense, idx, off)  # an evaluation between steps: not a stage
        assert prof.totals == before
    assert prof.steps == 2 and prof.warmup_seconds > 0  # the first step is timed apart
    assert list(prof.totals) == STAGES + [StageTimes.BETWEEN]
    assert all(ms >= 0 for _, ms, _ in prof.rows())
    assert abs(sum(share for *_, share in prof.rows()) - 1) < 1e-9


def test_cli_prints_the_profile(capsys):
    assert main(["train", "--data-generation", "random", "--arch-embedding-size", "30-40",
                 "--arch-mlp-bot", "13-8-2", "--arch-mlp-top", "4-1", "--num-batches", "5",
                 "--mini-batch-size", "16", "--log-file", "", "--progress", "False",
                 "--enable-profiling"]) == 0
    out = capsys.readouterr().out
    assert "Profile of 4 training steps" in out and "after the first step" in out
    for stage in STAGES:
        assert stage in out


def test_warmup_steps_are_kept_apart():
    prof = StageTimes(warmup=2)
    for _ in range(5):
        prof.start()
        prof.lap("a")
        prof.end()
    assert prof.steps == 3 and prof.warmup == 0 and prof.warmup_seconds > 0
    assert list(prof.totals) == ["a", StageTimes.BETWEEN]
    none = StageTimes(warmup=0)
    none.start()
    none.end()
    assert none.steps == 1 and none.warmup_seconds == 0

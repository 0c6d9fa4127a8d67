"""`npdlrm train` with --mlperf-logging, the thresholds, --mlperf-grad-accum-iter,
--activation-function, --tensor-board-filename and --debug-mode, end to end; and the
trainer's best-so-far bookkeeping and threshold stop."""
import glob
import math
import re

import pytest

from test_trainer import FakeLoader, Recorder, make

from npdlrm.cli import main
from npdlrm.mlperf import mlperf_line
from npdlrm.tensorboard import read_events
from npdlrm.trainer import Trainer

SMALL = ("--data-generation synthetic --arch-embedding-size 300-2000-50 "
         "--arch-sparse-feature-size 4 --arch-mlp-bot 13-8-4 --arch-mlp-top 8-1 "
         "--loss-function bce --mini-batch-size 32 --num-batches 8 --print-freq 4 "
         "--test-freq 4 --test-data-size 300 --test-mini-batch-size 100 --progress False "
         "--log-file").split() + [""]

LINE = re.compile(r"^recall [\d.]+, precision [\d.]+, f1 [\d.]+, ap [\d.]+, auc [\d.]+, "
                  r"best auc [\d.]+, accuracy [\d.]+ %, best accuracy [\d.]+ %$", re.M)


def test_mlperf_line_in_the_reference_format():
    r = {"recall": 0.5, "precision": 0.25, "f1": 1 / 3, "ap": 0.4, "auc": 0.71234,
         "accuracy": 0.8125, "best_auc": 0.75, "best_accuracy": 0.8125}
    assert mlperf_line(r) == ("recall 0.5000, precision 0.2500, f1 0.3333, ap 0.4000, auc "
                              "0.7123, best auc 0.7500, accuracy 81.250 %, best accuracy "
                              "81.250 %")
    assert "auc nan, best auc nan" in mlperf_line({**r, "auc": math.nan, "best_auc": math.nan})


def test_best_values_are_the_running_maximum_and_a_threshold_stops():
    model, opt = make("adagrad")
    rec = Recorder()
    tr = Trainer(model, opt, FakeLoader(12), FakeLoader(3), nepochs=3, test_freq=2,
                 mlperf=True, reporter=rec)
    tr.fit()
    aucs = [r["auc"] for r in rec.evals]
    assert [r["best_auc"] for r in rec.evals] == [max(aucs[:i + 1]) for i in range(len(aucs))]
    accs = [r["accuracy"] for r in rec.evals]
    assert [r["best_accuracy"] for r in rec.evals] == [max(accs[:i + 1])
                                                       for i in range(len(accs))]
    assert all({"recall", "precision", "f1", "ap"} <= set(r) for r in rec.evals)
    assert tr.stopped is None and all("stop" not in r for r in rec.evals)
    # the same run with an AUC threshold the 3rd evaluation's best exceeds: it stops there
    threshold = sorted(set(r["best_auc"] for r in rec.evals))[1] - 1e-9
    first = next(i for i, r in enumerate(rec.evals) if r["best_auc"] > threshold)
    model, opt = make("adagrad")
    rec2 = Recorder()
    tr = Trainer(model, opt, FakeLoader(12), FakeLoader(3), nepochs=3, test_freq=2,
                 stop_auc=threshold, reporter=rec2)
    tr.fit()
    assert len(rec2.evals) == first + 1
    assert rec2.evals[-1]["stop"] == f"MLPerf testing auc threshold {threshold} reached, " \
                                     f"stop training"
    assert tr.state.step == rec2.evals[-1]["step"] < 36
    with pytest.raises(ValueError, match="thresholds"):
        Trainer(model, opt, FakeLoader(2), stop_accuracy=-1)


def test_cli_mlperf_logging_tensorboard_and_accumulation(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLPerf events (with mlperf-logging) go to ./dlrm.log
    tb = tmp_path / "tb"
    assert main(["train", *SMALL, "--mlperf-logging", "--mlperf-grad-accum-iter", "3",
                 "--tensor-board-filename", str(tb), "--activation-function", "tanh"]) == 0
    out = capsys.readouterr().out
    assert len(LINE.findall(out)) == 2  # evaluations after batches 4 and 8
    (path,) = glob.glob(str(tb / "events.out.tfevents.*"))
    events = read_events(path)
    tags = [t for e in events for t in e["scalars"]]
    assert tags.count("Train/Loss") == 2 and tags.count("mlperf-metrics-test/roc_auc") == 2
    steps = [e["step"] for e in events if "Train/Loss" in e["scalars"]]
    assert steps == [4, 8]


def test_cli_threshold_stops_the_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *SMALL, "--mlperf-logging", "--mlperf-auc-threshold", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "MLPerf testing auc threshold 0.01 reached, stop training" in out
    assert "Finished training it 4/8" in out and "it 5/8" not in out


def test_cli_debug_mode_prints_the_architecture_batches_and_parameters(capsys):
    assert main(["train", *SMALL, "--debug-mode", "--num-batches", "2"]) == 0
    out = capsys.readouterr().out
    for words in ("model arch:", "mlp top arch 2 layers", "[10  8  1]", "# of interactions",
                  "mlp bot arch 2 layers", "[13  8  4]", "# of embeddings (= # of sparse "
                  "features) 3, with dimensions 4x:", "[ 300 2000   50]", "mini-batch: 0",
                  "mini-batch: 1", "initial parameters (weights and bias):",
                  "updated parameters (weights and bias):"):
        assert words in out, words
    assert "mini-batch: 2" not in out


def test_grad_accumulation_is_refused_under_mpi():
    from npdlrm.parallel import launch
    assert launch.main(["--mlperf-grad-accum-iter", "2"]) == 2


def test_mlperf_log_events_when_the_package_is_installed(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlperf_logging.mllog", reason="the optional mlperf-logging package "
                        "is not installed (the evaluation lines are tested above)")
    import json
    monkeypatch.chdir(tmp_path)
    assert main(["train", *SMALL, "--mlperf-logging", "--mlperf-auc-threshold", "0.01"]) == 0
    assert "Writing MLPerf log events to dlrm.log" in capsys.readouterr().out
    events = [json.loads(line.split(":::MLLOG ", 1)[1])
              for line in (tmp_path / "dlrm.log").read_text().splitlines()
              if ":::MLLOG " in line]
    keys = [e["key"] for e in events]
    for key in ("submission_benchmark", "seed", "global_batch_size", "init_start",
                "init_stop", "run_start", "eval_start", "eval_accuracy", "eval_stop",
                "run_stop"):
        assert key in keys, key
    stop = [e for e in events if e["key"] == "run_stop"]
    assert len(stop) == 1 and stop[0]["metadata"]["status"] == "success"


def test_best_values_survive_a_checkpoint(tmp_path):
    from npdlrm.checkpoint import load_checkpoint
    model, opt = make("sgd")
    tr = Trainer(model, opt, FakeLoader(4), FakeLoader(2), test_freq=2,
                 save_path=str(tmp_path / "c-{step}.h5"), reporter=Recorder())
    tr.fit()
    ck = load_checkpoint(str(tmp_path / "c-4.h5"), model=make("sgd")[0])
    assert ck.train_state["best"] == tr.best and tr.best["auc"] > 0
    # a run resumed with them goes on from them
    model, opt = make("sgd")
    tr2 = Trainer(model, opt, FakeLoader(4), FakeLoader(2), test_freq=2,
                  best={"auc": 1.0, "accuracy": 1.0}, reporter=Recorder())
    tr2.fit()
    assert tr2.best == {"auc": 1.0, "accuracy": 1.0}


def test_cli_inference_only_prints_the_mlperf_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ck = str(tmp_path / "m.h5")
    assert main(["train", *SMALL, "--save-model", ck]) == 0
    capsys.readouterr()
    assert main(["train", *SMALL, "--load-model", ck, "--inference-only",
                 "--mlperf-logging"]) == 0
    assert len(LINE.findall(capsys.readouterr().out)) == 1

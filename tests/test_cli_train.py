"""`npdlrm train / predict / plot` end to end on synthetic data: resume, inference, logs."""
import json

import h5py
import numpy as np
import pytest

from npdlrm.checkpoint import load_checkpoint
from npdlrm.cli import main

SMALL = ("--data-generation synthetic --arch-embedding-size 300-2000-50 "
         "--arch-sparse-feature-size 4 --arch-mlp-bot 13-8-4 --arch-mlp-top 8-1 "
         "--loss-function bce --mini-batch-size 32 --num-batches 9 --print-freq 4 "
         "--test-data-size 500 --test-mini-batch-size 100 --progress False").split()


def params(path):
    with h5py.File(path, "r") as f:
        return {name: f["params"][name][...] for name in f["params"]}


def train(tmp_path, *extra):
    return main(["train", *SMALL, "--log-file", str(tmp_path / "log.jsonl"), *extra])


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rwsadagrad"])
def test_resume_from_a_mid_epoch_checkpoint_equals_the_straight_run(tmp_path, optimizer):
    common = ["--optimizer", optimizer, "--learning-rate", "0.1", "--nepochs", "2",
              "--test-freq", "4", "--lr-num-warmup-steps", "3", "--lr-decay-start-step", "8",
              "--lr-num-decay-steps", "6"]
    assert train(tmp_path, *common, "--save-model", str(tmp_path / "a-{step}.h5")) == 0
    # checkpoints after each evaluation: batches 4, 8 and 9 (end) of both epochs
    saved = sorted(int(p.stem[2:]) for p in tmp_path.glob("a-*.h5"))
    assert saved == [4, 8, 9, 13, 17, 18]
    # resume from step 13 (epoch 1, batch 4) and from step 9 (the end of epoch 0)
    for start in (13, 9):
        out = tmp_path / f"r{start}.h5"
        assert train(tmp_path, *common, "--load-model", str(tmp_path / f"a-{start}.h5"),
                     "--save-model", str(out)) == 0
        straight, resumed = params(tmp_path / "a-18.h5"), params(out)
        assert straight.keys() == resumed.keys()
        for name in straight:
            assert np.array_equal(straight[name], resumed[name]), (start, name)
        info = load_checkpoint(str(out)).train_state
        assert (info["epoch"], info["batch"], info["step"]) == (2, 0, 18)


def test_resume_refuses_a_different_batch_size(tmp_path, capsys):
    assert train(tmp_path, "--save-model", str(tmp_path / "c.h5")) == 0
    assert main(["train", *SMALL, "--mini-batch-size", "16", "--load-model",
                 str(tmp_path / "c.h5"), "--log-file", ""]) == 2
    assert "--mini-batch-size" in capsys.readouterr().err


def test_load_into_another_architecture_names_the_tensor(tmp_path, capsys):
    assert train(tmp_path, "--save-model", str(tmp_path / "c.h5")) == 0
    argv = ["train", *SMALL, "--log-file", "", "--load-model", str(tmp_path / "c.h5")]
    argv[argv.index("300-2000-50")] = "300-2001-50"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "embeddings.1.weight" in err and "2000" in err and "2001" in err


def test_inference_only_evaluates_the_loaded_model(tmp_path, capsys):
    assert train(tmp_path, "--test-freq", "9", "--save-model", str(tmp_path / "c.h5")) == 0
    trained = capsys.readouterr().out
    auc = trained.split("Final held-out evaluation: auc ")[1].split(",")[0]
    assert train(tmp_path, "--load-model", str(tmp_path / "c.h5"), "--inference-only") == 0
    out = capsys.readouterr().out
    assert f"auc {auc}," in out and "Finished training" not in out


def test_jsonl_log_and_plot(tmp_path, capsys):
    assert train(tmp_path, "--nepochs", "2", "--test-freq", "5") == 0
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events[0] == "start" and records[0]["settings"]["mini_batch_size"] == 32
    train_recs = [r for r in records if r["event"] == "train"]
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in train_recs] == [4, 5, 8, 9, 13, 14, 17, 18]
    assert [r["step"] for r in evals] == [5, 9, 14, 18]
    for r in evals:
        assert 0 <= r["auc"] <= 1 and r["log_loss"] > 0 and 0 <= r["accuracy"] <= 1
        assert 0.5 < r["planted_auc"] <= 1
    png = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "log.jsonl"), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000


def test_plot_refuses_a_log_without_records(tmp_path, capsys):
    log = tmp_path / "empty.jsonl"
    log.write_text('{"event": "start", "command": "train", "settings": {}}\n')
    assert main(["plot", str(log), "-o", str(tmp_path / "x.png")]) == 2
    assert "no training or evaluation records" in capsys.readouterr().err
    log.write_text("not json\n")
    assert main(["plot", str(log), "-o", str(tmp_path / "x.png")]) == 2
    assert "line 1" in capsys.readouterr().err


def test_progress_bar_shows_loss_and_rate(tmp_path, capsys):
    argv = ["train", *SMALL, "--log-file", "", "--num-batches", "20", "--print-freq", "100"]
    argv[argv.index("--progress") + 1] = "True"
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "training" in err and "20/20" in err and "loss=" in err and "samples/s=" in err

"""Distributed training on the real Criteo sample: the same AUC as one process, a
sharded checkpoint that resumes on another world size and predicts in one process, and
the float16 all-to-all's effect on held-out AUC."""
import json

import h5py
import numpy as np
import pytest

from mpirun import run_mpi
from npdlrm.cli import main
from test_criteo_sample import SAMPLE, needs_sample

pytestmark = needs_sample


def flags(h5, log):
    return ["--data-generation", "dataset", "--data-set", "kaggle", "--processed-data-file",
            h5, "--arch-sparse-feature-size", "16", "--arch-mlp-bot", "13-64-16",
            "--arch-mlp-top", "64-1", "--loss-function", "bce", "--round-targets", "True",
            "--optimizer", "adagrad", "--learning-rate", "0.02", "--mini-batch-size", "128",
            "--print-freq", "20", "--test-freq", "67", "--test-mini-batch-size", "1000",
            "--nepochs", "2", "--progress", "False", "--log-file", log]


def evals(log):
    with open(log) as f:
        return [r for r in map(json.loads, f) if r["event"] == "eval"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("criteo_mpi")
    h5 = str(d / "sample.h5")
    assert main(["preprocess", "--raw-data-file", str(SAMPLE), "--processed-data-file", h5]) == 0
    logs = {name: str(d / f"{name}.jsonl") for name in ("one", "fp32", "fp16", "resumed")}
    assert main(["train", *flags(h5, logs["one"])]) == 0
    # table-wise: each rank's loader reads only the 13 columns of its tables
    run_mpi(2, ["mpi_launch/train.py", *flags(h5, logs["fp32"]), "--save-model",
                str(d / "ck-{step}.h5"), "--sharding", "table"])
    run_mpi(2, ["mpi_launch/train.py", *flags(h5, logs["fp16"]), "--alltoall-dtype", "float16",
                "--sharding", "table"])
    run_mpi(3, ["mpi_launch/train.py", *flags(h5, logs["resumed"]), "--load-model",
                str(d / "ck-67.h5"), "--save-model", str(d / "resumed.h5"),
                "--sharding", "column"])
    return d, h5, logs


def test_two_ranks_reach_the_auc_of_one_process(runs):
    _, _, logs = runs
    one, fp32 = evals(logs["one"]), evals(logs["fp32"])
    assert [e["step"] for e in one] == [e["step"] for e in fp32] == [67, 134]
    assert fp32[0]["auc"] == pytest.approx(one[0]["auc"], abs=1e-6)  # after one epoch
    for a, b in zip(one, fp32):
        assert a["count"] == b["count"]
        # the second epoch overfits 8,572 rows, and float32 rounding differences (other
        # summation orders) grow there: 1e-6 in the loss, about 1e-5 in the AUC
        assert b["auc"] == pytest.approx(a["auc"], abs=1e-4)
        assert b["log_loss"] == pytest.approx(a["log_loss"], rel=1e-5)


def test_float16_alltoall_stays_close(runs):
    _, _, logs = runs
    for fp32, fp16 in zip(evals(logs["fp32"]), evals(logs["fp16"])):
        print(f"held-out AUC at step {fp32['step']}: float32 all-to-all {fp32['auc']:.5f}, "
              f"float16 {fp16['auc']:.5f} (difference {fp16['auc'] - fp32['auc']:+.5f})")
        assert fp16["auc"] == pytest.approx(fp32["auc"], abs=0.01)
    assert fp16["auc"] != fp32["auc"]  # it does change the numbers: not exact


def test_resumed_on_three_ranks_ends_where_two_did(runs, capsys):
    d, h5, logs = runs
    assert evals(logs["resumed"])[-1]["auc"] == pytest.approx(evals(logs["fp32"])[-1]["auc"],
                                                              abs=1e-5)
    # one process reads both sharded checkpoints: the same model, to float32 rounding
    preds = {}
    for name in ("ck-134.h5", "resumed.h5"):
        out = str(d / f"{name}.npy")
        assert main(["predict", "--load-model", str(d / name), "--processed-data-file", h5,
                     "--split", "test", "-o", out]) == 0
        preds[name] = np.load(out)
    np.testing.assert_allclose(preds["ck-134.h5"], preds["resumed.h5"], rtol=1e-4, atol=1e-6)
    with h5py.File(str(d / "resumed.h5"), "r") as f:
        assert f.attrs["sharded"]

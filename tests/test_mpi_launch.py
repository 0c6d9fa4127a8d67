"""`mpirun -n N python mpi_launch/train.py <flags>`: the same run as `npdlrm train`,
rank 0 alone speaks, and a failure on any rank ends the whole job quickly."""
import json
import time

import pytest

from mpirun import run_mpi
from npdlrm.cli import main

FLAGS = ["--data-generation", "synthetic", "--arch-embedding-size", "300-7-2000-40-1-900",
         "--arch-sparse-feature-size", "8", "--arch-mlp-bot", "13-16-8", "--arch-mlp-top",
         "16-1", "--loss-function", "bce", "--optimizer", "adagrad", "--learning-rate", "0.05",
         "--mini-batch-size", "77", "--num-batches", "40", "--print-freq", "10",
         "--test-freq", "20", "--test-mini-batch-size", "500", "--test-data-size", "2000",
         "--num-indices-per-lookup", "3", "--progress", "False"]


def records(path, event):
    with open(path) as f:
        return [r for r in map(json.loads, f) if r["event"] == event]


def single_run(tmp_path_factory, flags):
    log = tmp_path_factory.mktemp("single") / "log.jsonl"
    assert main(["train", *flags, "--log-file", str(log)]) == 0
    return log


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return single_run(tmp_path_factory, FLAGS)


def assert_same_run(log, reference):
    """The train losses and the evaluations of two JSONL logs agree (float32 rounding)."""
    ours, theirs = records(log, "train"), records(reference, "train")
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert {"compute_ms", "alltoall_ms", "allreduce_ms"} <= set(a)
    ev_ours, ev_theirs = records(log, "eval"), records(reference, "eval")
    assert len(ev_ours) == len(ev_theirs) == 2
    for a, b in zip(ev_ours, ev_theirs):
        assert a["count"] == b["count"] == 2000  # the whole test split, exactly
        assert a["auc"] == pytest.approx(b["auc"], abs=1e-5)
        assert a["log_loss"] == pytest.approx(b["log_loss"], rel=1e-5)


@pytest.mark.parametrize("sharding", ["auto", "row", "column", "replicate",
                                      "0:row,2:column,3:replicate"])
def test_mpirun_trains_as_npdlrm_train(sharding, tmp_path, one_process):
    log = tmp_path / "log.jsonl"
    proc = run_mpi(3, ["mpi_launch/train.py", *FLAGS, "--log-file", log, "--sharding",
                       sharding, "--check-replicas", "10"])
    assert proc.stdout.count("Final held-out evaluation") == 1  # rank 0 alone prints
    assert "on 3 ranks" in proc.stdout
    assert_same_run(log, one_process)


def test_mpirun_on_random_data(tmp_path, tmp_path_factory):
    flags = [*FLAGS, "--data-generation", "random"]
    reference = single_run(tmp_path_factory, flags)
    log = tmp_path / "log.jsonl"
    run_mpi(2, ["mpi_launch/train.py", *flags, "--log-file", log])
    assert_same_run(log, reference)


def test_bad_flags_are_refused_once(tmp_path):
    proc = run_mpi(2, ["mpi_launch/train.py", *FLAGS, "--sharding", "7:row"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("table 7 does not exist") == 1


@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_a_failing_rank_ends_the_job(mode, tmp_path):
    stamp = tmp_path / "failed-at"
    flags = [*FLAGS, "--num-batches", "100000", "--test-freq", "-1", "--log-file", ""]
    proc = run_mpi(3, ["tests/mpi/fail_worker.py", mode, 1, 5, stamp, "--", *flags],
                   check=False, timeout=120)
    ended = time.time()
    assert proc.returncode != 0
    assert stamp.exists(), proc.stderr[-2000:]
    assert ended - float(stamp.read_text()) < 10, "the job outlived the failure by 10 s"
    if mode == "raise":
        assert "rank 1 of 3" in proc.stderr and "injected failure at step 5" in proc.stderr


def test_launcher_shares_the_cores_between_local_ranks():
    import importlib.util
    import os
    spec = importlib.util.spec_from_file_location("mpi_launch_train", "mpi_launch/train.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    cores = os.cpu_count()
    env = {"MPI_LOCALNRANKS": "4"}
    launcher.share_cores(env)
    assert env["OMP_NUM_THREADS"] == env["NUMBA_NUM_THREADS"] == str(max(1, cores // 4))
    env = {"OMPI_COMM_WORLD_LOCAL_SIZE": "1"}
    launcher.share_cores(env)
    assert env["OPENBLAS_NUM_THREADS"] == str(cores)
    env = {"MPI_LOCALNRANKS": "4", "NUMBA_NUM_THREADS": "3"}  # the user's choice stands
    launcher.share_cores(env)
    assert env == {"MPI_LOCALNRANKS": "4", "NUMBA_NUM_THREADS": "3"}

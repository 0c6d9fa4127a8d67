"""Sharded checkpoints under mpiexec: saved on N ranks, loaded on M with another plan
(2 -> 3 -> 2, 1 -> 4 -> 1), equal to what was saved and training on exactly as one
process would; a failed check or save raises on every rank; a rank killed during a save
leaves the previous checkpoint loadable, and the next save removes its leftovers.

Four mpiexec launches (module fixture `run`) do the distributed work; the tests read
what their workers wrote (tests/mpi/ckpt_worker.py)."""
import json
import os
import shutil
import sys

import h5py
import numpy as np
import pytest

from mpirun import HERE, run_mpi

pytest.importorskip("mpi4py")
sys.path.insert(0, os.path.join(HERE, "mpi"))
import ckpt_cases as cases  # noqa: E402

from npdlrm import DLRM  # noqa: E402
from npdlrm.checkpoint import (load_checkpoint, partial_path, read_checkpoint_info,  # noqa
                               save_checkpoint)
from npdlrm.parallel import DistributedDLRM, LocalComm, uniform_plan  # noqa: E402
from npdlrm.parallel.checkpoint import load_sharded, save_sharded  # noqa: E402

WORKER = os.path.join(HERE, "mpi", "ckpt_worker.py")
CASES = list(cases.OPTIMIZERS)
TOL = 1e-5  # float32: a distributed step sums in another order than one process


def launch(outdir, name, nprocs, actions, check=True):
    path = os.path.join(outdir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(actions, f)
    proc = run_mpi(nprocs, [WORKER, outdir, path], timeout=120, check=check)
    results = []
    for r in range(nprocs):
        with open(os.path.join(outdir, f"{name}.rank{r}.json")) as f:
            results.append(json.load(f))
    return proc, results


def train_actions(suffix, plan, steps, load=None, save=None):
    return [{"do": "train", "tag": f"{case}-{suffix}", "case": case, "plan": plan,
             "steps": steps, **({"load": load.format(case=case)} if load else {}),
             "save": [s.format(case=case) for s in save or []]} for case in CASES]


def corrupt_copy(outdir):
    """bad/: a copy of adagrad-w2.h5 whose piece of table 4 in shard file 0 is float64
    (in plan mixB only rank 2 holds table 4)."""
    bad = os.path.join(outdir, "bad")
    os.makedirs(bad)
    info = read_checkpoint_info(os.path.join(outdir, "adagrad-w2.h5"))
    for name in ["adagrad-w2.h5"] + info["sharded"]["shard_files"]:
        shutil.copy(os.path.join(outdir, name), bad)
    with h5py.File(os.path.join(bad, info["sharded"]["shard_files"][0]), "a") as f:
        g = f["table4.rows0-11.cols0-2"]
        w = g["weight"][()]
        del g["weight"]
        g["weight"] = w.astype(np.float64)


def whole_state(path):
    ck = load_checkpoint(path)
    return cases.assemble([cases.state_of(ck.model, ck.optimizer)]), ck


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The four launches, and what the tests need to see between them."""
    out = str(tmp_path_factory.mktemp("sharded"))
    os.makedirs(os.path.join(out, "kill"))
    got = {"out": out}
    # 2 ranks: save each case; a save to kill/ for later; a refused load; a failed save
    _, got["w2"] = launch(out, "launch1", 2, train_actions(
        "w2", "mixA", [0, 3], save=["{case}-w2.h5"]) + [
        {"do": "train", "tag": "previous", "case": "adagrad", "plan": "mixA",
         "steps": [0, 3], "save": ["kill/ck.h5"]},
        {"do": "refuse", "tag": "arch", "case": "adagrad", "plan": "mixA",
         "load": "adagrad-w2.h5", "config": {"bottom_mlp": [5, 16, 4]}},
        {"do": "fail_save", "tag": "raise", "case": "adagrad", "plan": "mixA", "steps": [0, 1],
         "save": "kill/ck.h5", "rank": 1, "after": 2, "how": "raise"}])
    # 3 ranks: a load that one rank refuses; 2 -> 3, train on, save
    corrupt_copy(out)
    _, got["w3"] = launch(out, "launch2", 3, [
        {"do": "refuse", "tag": "corrupt", "case": "adagrad", "plan": "mixB",
         "load": "bad/adagrad-w2.h5"}] + train_actions(
        "w3", "mixB", [3, 6], load="{case}-w2.h5", save=["{case}-w3.h5"]))
    # 2 ranks: 3 -> 2, train on; then rank 1 dies while it saves to kill/ck.h5
    got["killed"], got["w3to2"] = launch(out, "launch3", 2, train_actions(
        "w3to2", "mixD", [6, 8], load="{case}-w3.h5") + [
        {"do": "fail_save", "tag": "kill", "case": "adagrad", "plan": "mixA", "steps": [0, 1],
         "save": "kill/ck.h5", "rank": 1, "after": 2, "how": "kill"}], check=False)
    got["after_kill_files"] = sorted(os.listdir(os.path.join(out, "kill")))
    # as if rank 0 had died writing the manifest; and a file of the user's
    for name in (partial_path(os.path.join(out, "kill", "ck.h5"), "0123456789abcdef"),
                 os.path.join(out, "kill", "ck.h5.notes")):
        open(name, "w").close()
    got["after_kill_state"], _ = whole_state(os.path.join(out, "kill", "ck.h5"))
    for case in CASES:  # single-process checkpoints for 1 -> 4
        model, opt = DLRM(cases.CONFIG, seed=cases.SEED), cases.optimizer(case)
        cases.train(model, opt, [0, 3])
        save_checkpoint(os.path.join(out, f"{case}-w1.h5"), model, opt)
    # 4 ranks: 1 -> 4, train on, save; a save to kill/ck.h5 that removes the leftovers
    _, got["w4"] = launch(out, "launch4", 4, train_actions(
        "w1to4", "mixC", [3, 6], load="{case}-w1.h5", save=["{case}-w4.h5"]) + [
        {"do": "train", "tag": "later", "case": "adagrad", "plan": "mixC", "steps": [0, 2],
         "save": ["kill/ck.h5"]}])
    return got


@pytest.fixture(scope="module")
def reference():
    """One process, no checkpoint: the state after 3, 6 and 8 steps of each case."""
    out = {}
    for case in CASES:
        model, opt = DLRM(cases.CONFIG, seed=cases.SEED), cases.optimizer(case)
        done = 0
        for stop in (3, 6, 8):
            cases.train(model, opt, [done, stop])
            out[case, stop], done = cases.assemble([cases.state_of(model, opt)]), stop
    return out


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def assert_close(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=TOL, atol=TOL, err_msg=key)


# ---- resharding ---------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_2_to_3_to_2_ranks_loads_exactly_and_trains_on_like_one_process(run, reference,
                                                                       case):
    dump = lambda tag: cases.load_dump(run["out"], tag)  # noqa: E731
    assert_close(dump(f"{case}-w2"), reference[case, 3])
    assert_same(dump(f"{case}-w3-loaded"), dump(f"{case}-w2"))
    assert_close(dump(f"{case}-w3"), reference[case, 6])
    assert_same(dump(f"{case}-w3to2-loaded"), dump(f"{case}-w3"))
    assert_close(dump(f"{case}-w3to2"), reference[case, 8])


@pytest.mark.parametrize("case", CASES)
def test_1_to_4_to_1_process(run, reference, case):
    dump = lambda tag: cases.load_dump(run["out"], tag)  # noqa: E731
    assert_same(dump(f"{case}-w1to4-loaded"), reference[case, 3])
    assert_close(dump(f"{case}-w1to4"), reference[case, 6])
    path = os.path.join(run["out"], f"{case}-w4.h5")
    state, ck = whole_state(path)
    assert_same(state, dump(f"{case}-w1to4"))
    assert ck.train_state == {"tag": f"{case}-w1to4"} and ck.optimizer.step_count == 6
    cases.train(ck.model, ck.optimizer, [6, 8])
    assert_close(cases.assemble([cases.state_of(ck.model, ck.optimizer)]), reference[case, 8])
    info = read_checkpoint_info(path)
    assert info["sharded"]["plan"] == cases.plan("mixC").to_dict()
    assert len(info["sharded"]["shard_files"]) == 4
    assert info["params"]["embeddings.0.weight"] == {"shape": [50, 4], "dtype": "float32"}


# ---- refusals and failures ----------------------------------------------------------
def test_failed_check_raises_on_every_rank(run):
    for r, res in enumerate(run["w2"]):
        assert res["arch"]["error"]["type"] == "ValueError", r
        assert res["arch"]["unchanged"], r
        assert ("tensor bottom_mlp.0.weight is (8, 5) float32 in the checkpoint, (16, 5) "
                "float32 in the model") in res["arch"]["error"]["message"]
    assert all(res["corrupt"]["unchanged"] for res in run["w3"])
    errors = [res["corrupt"]["error"] for res in run["w3"]]
    assert {e["type"] for e in errors} == {"ValueError"}
    own = errors[2]["message"]  # only rank 2 reads table 4
    assert "table 4 rows [0, 11) columns [0, 2) in adagrad-w2.h5.shard-" in own
    assert "is (11, 2) float64 in the checkpoint, expected (11, 2) float32" in own
    assert errors[0]["message"] == errors[1]["message"] == f"rank 2: {own}"


def test_failed_save_raises_on_every_rank_and_leaves_nothing(run):
    first = run["w2"][0]["previous"]["saved"][0]
    for r, res in enumerate(run["w2"]):
        error = res["raise"]["error"]
        assert error["type"] == "OSError"
        assert error["message"] == ("disk full (simulated)" if r == 1 else
                                    "rank 1: disk full (simulated)")
        assert res["raise"]["files"] == sorted(["ck.h5"] + first["shard_files"])


def test_killed_save_keeps_the_previous_checkpoint_and_the_next_save_cleans_up(run):
    assert run["killed"].returncode != 0
    first = run["w2"][0]["previous"]["saved"][0]
    leftovers = sorted(set(run["after_kill_files"]) - {"ck.h5", *first["shard_files"]})
    assert leftovers and all(name.startswith("ck.h5.shard-") for name in leftovers)
    assert_same(run["after_kill_state"], cases.load_dump(run["out"], "previous"))
    later = run["w4"][0]["later"]["saved"][0]
    assert all(res["later"]["saved"][0] == later for res in run["w4"])
    assert later["replaced"] == sorted(first["shard_files"])
    assert later["leftovers"] == sorted([".ck.h5.partial-0123456789abcdef"] + leftovers)
    assert later["message"].startswith("removed 3 leftover files of interrupted saves of ")
    assert all(name in later["message"] for name in leftovers)
    folder = os.path.join(run["out"], "kill")
    assert sorted(os.listdir(folder)) == sorted(["ck.h5", "ck.h5.notes"] + later["shard_files"])
    state, _ = whole_state(os.path.join(folder, "ck.h5"))
    assert_same(state, cases.load_dump(run["out"], "later"))


def test_predict_cli_reads_a_sharded_checkpoint(tmp_path, capsys):
    """`npdlrm predict` assembles the whole tables of a sharded checkpoint (here saved by
    one rank, through LocalComm)."""
    from npdlrm import DLRMConfig
    from npdlrm.cli import main
    from npdlrm.data.h5data import open_processed
    from npdlrm.data.loader import BatchLoader
    rng = np.random.default_rng(0)
    rows = ["\t".join([str(i % 2)] + [str(j + i % 5) for j in range(13)] +
                      [f"{rng.integers(0, 40):08x}" for _ in range(26)]) for i in range(30)]
    (tmp_path / "raw.txt").write_text("\n".join(rows) + "\n")
    h5, ck, out = (str(tmp_path / n) for n in ("d.h5", "ck.h5", "p.npy"))
    assert main(["preprocess", "--raw-data-file", str(tmp_path / "raw.txt"),
                 "--processed-data-file", h5]) == 0
    with open_processed(h5) as data:
        sizes = data.table_sizes
        config = DLRMConfig(table_sizes=sizes, embedding_dim=4, bottom_mlp=(13, 8, 4),
                            top_mlp=(8, 1))
        model = DistributedDLRM(config, LocalComm(), uniform_plan(1, sizes, 4, "row"), seed=5)
        mb = next(iter(BatchLoader(data, 30, "all", shuffle=False, prefetch=0).epoch(0)))
    save_sharded(ck, model)
    assert main(["predict", "--load-model", ck, "--processed-data-file", h5, "-o", out]) == 0
    assert "Wrote 30 probabilities" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out), model.predict(mb.dense, mb.indices, mb.offsets))
    assert load_sharded(ck, model).optimizer is None

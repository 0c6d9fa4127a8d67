"""Worker of tests/test_mpi_checkpoint.py: sharded saves and loads on W ranks.

    mpiexec -n W python tests/mpi/ckpt_worker.py OUTDIR ACTIONS.json

ACTIONS.json is a list of actions, run in order (paths are relative to OUTDIR):
- {"do": "train", "tag", "case", "plan", "steps": [i, j], "load": path or absent,
   "save": [paths]}: a DistributedDLRM (fresh, or loaded with load_sharded; the loaded
   state goes to `{tag}-loaded.rank{r}.npz`) trains on batches i..j-1, saves, and writes
   its state to `{tag}.rank{r}.npz` and the SaveResults to the results;
- {"do": "refuse", "tag", "case", "plan", "load", "config": {overrides}}: a load that
   must fail; the results get the exception each rank raised and whether its model
   stayed as it was;
- {"do": "fail_save", "tag", "case", "plan", "steps", "save", "rank", "after", "how"}:
   on rank `rank` the `after`-th dataset write of the save raises OSError (how "raise")
   or ends the process with os._exit(9) (how "kill"); the results get what each rank
   raised and the folder's files after the failure.
Each rank writes its results to ACTIONS.rank{r}.json after every action.
"""
import dataclasses
import json
import os
import sys

import numpy as np

import npdlrm.checkpoint as core
from npdlrm.parallel import DistributedDLRM, world
from npdlrm.parallel.checkpoint import load_sharded, save_sharded

import ckpt_cases as cases
from mpirun import worker_main


def build(comm, action, init="none"):
    config = dataclasses.replace(cases.CONFIG, **action.get("config", {}))
    return DistributedDLRM(config, comm, cases.plan(action["plan"]), seed=cases.SEED,
                           init=init)


def dump(outdir, tag, model, opt):
    np.savez(f"{outdir}/{tag}.rank{model.rank}.npz", **cases.state_of(model.local, opt))


def do_train(comm, outdir, action):
    opt = cases.optimizer(action["case"])
    if "load" in action:
        model = build(comm, action)
        ck = load_sharded(f"{outdir}/{action['load']}", model, opt)
        assert ck.model is model and ck.optimizer is opt
        dump(outdir, f"{action['tag']}-loaded", model, opt)
    else:
        model = build(comm, action, init="reference")
    cases.train(model, opt, action["steps"])
    saved = [save_sharded(f"{outdir}/{p}", model, opt, {"tag": action["tag"]})
             for p in action.get("save", [])]
    dump(outdir, action["tag"], model, opt)
    return {"saved": [{**r._asdict(), "message": r.message} for r in saved]}


def caught(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"type": type(e).__name__, "message": str(e)}
    return None


def do_refuse(comm, outdir, action):
    model, opt = build(comm, action, init="reference"), cases.optimizer(action["case"])
    before = cases.state_of(model.local, opt)
    error = caught(lambda: load_sharded(f"{outdir}/{action['load']}", model, opt))
    after = cases.state_of(model.local, opt)
    unchanged = before.keys() == after.keys() and all(
        np.array_equal(before[k], after[k]) for k in before)
    return {"error": error, "unchanged": unchanged}


def do_fail_save(comm, outdir, action):
    model, opt = build(comm, action, init="reference"), cases.optimizer(action["case"])
    cases.train(model, opt, action["steps"])
    real, calls = core._write_array, []

    def failing(*args):
        calls.append(1)
        if len(calls) == action["after"]:
            if action["how"] == "kill":
                os._exit(9)
            raise OSError("disk full (simulated)")
        return real(*args)

    if comm.rank == action["rank"]:
        core._write_array = failing
    try:
        error = caught(lambda: save_sharded(f"{outdir}/{action['save']}", model, opt))
    finally:
        core._write_array = real
    comm.barrier()
    folder = os.path.dirname(f"{outdir}/{action['save']}")
    return {"error": error, "files": sorted(os.listdir(folder))}


ACTIONS = {"train": do_train, "refuse": do_refuse, "fail_save": do_fail_save}


def main(outdir, actions_file):
    comm = world()
    with open(actions_file) as f:
        actions = json.load(f)
    results, out = {}, f"{os.path.splitext(actions_file)[0]}.rank{comm.rank}.json"
    for action in actions:
        results[action["tag"]] = ACTIONS[action["do"]](comm, outdir, action)
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    worker_main(main, sys.argv[1], sys.argv[2])

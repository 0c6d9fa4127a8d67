"""Issue 9, faults 2 and 3: signals during a save, and the leftovers of killed saves.

* Ctrl-C (SIGINT) or SIGTERM while `npdlrm train --save-model` writes its checkpoint
  stops the run (exit 130, or 143 for SIGTERM): the save is abandoned, its temporary file
  removed and the previous checkpoint left as it was. (It used to be ignored: the
  KeyboardInterrupt landed in h5py's weakref callbacks and training went on.)
* kill -9 during a save leaves `.ck.h5.partial-<pid>`; the next write of ck.h5 removes
  the partial files of dead processes (not those of live ones) and says so in one line.
"""
import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npdlrm import atomic
from npdlrm.checkpoint import load_checkpoint, partial_path, read_checkpoint_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# about 256 MB to save (two 1M x 16 tables and their adagrad state): a save of a while
BIG = ("--data-generation synthetic --arch-embedding-size 1000000-1000000 "
       "--arch-sparse-feature-size 16 --arch-mlp-bot 13-16 --arch-mlp-top 32-1 "
       "--mini-batch-size 32 --num-batches 2 --test-data-size 64 --optimizer adagrad "
       "--progress False --log-file").split() + [""]
SMALL = ("--data-generation synthetic --arch-embedding-size 300-2000-50 "
         "--arch-sparse-feature-size 4 --arch-mlp-bot 13-8-4 --arch-mlp-top 8-1 "
         "--mini-batch-size 32 --num-batches 2 --test-data-size 64 --optimizer adagrad "
         "--progress False --log-file").split() + [""]


# ---- helpers (bench/faults_rerun.py uses them too) ------------------------------------
def start_train(ck, flags, seed, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "npdlrm", "train", *flags,
                             "--numpy-rand-seed", str(seed), "--save-model", ck],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def signal_during_save(ck, sig, seed=2, cwd=None, timeout=60, written=1 << 20):
    """Start a big training run saving to `ck`; send `sig` once its partial file holds
    `written` bytes: HDF5 is writing the tables then (where the KeyboardInterrupt of the
    old code was swallowed by h5py's weakref callbacks, "Exception ignored in").
    Returns (exit code, stdout, stderr, whether the signal was sent during the save)."""
    proc = start_train(ck, BIG, seed, cwd or os.path.dirname(ck))
    partial = partial_path(ck, proc.pid)
    deadline, sent = time.monotonic() + timeout, False
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(partial) and os.path.getsize(partial) >= written:
            proc.send_signal(sig)
            sent = True
            break
        time.sleep(0.0005)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err, sent


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def partials(folder):
    return sorted(n for n in os.listdir(folder) if ".partial" in n)


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---- signals during a save of `npdlrm train` ----------------------------------------------
@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A complete big checkpoint (the one a failed save must leave) and its digest."""
    folder = str(tmp_path_factory.mktemp("big"))
    ck = os.path.join(folder, "ck.h5")
    proc = start_train(ck, BIG, 1, folder)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return ck, digest(ck)


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "terminated")])
def test_signal_during_save_stops_the_run_cleanly(previous, sig, code, word):
    ck, before = previous
    rc, out, err, sent = signal_during_save(ck, sig)
    assert sent, (rc, out, err)
    assert rc == code, (rc, out[-500:], err[-2000:])
    assert err.strip().splitlines()[-1].startswith(f"npdlrm train: {word}"), err
    assert "Traceback" not in err and "Saved checkpoint" not in out
    assert partials(os.path.dirname(ck)) == []
    assert digest(ck) == before
    assert read_checkpoint_info(ck)["train_state"]["step"] == 2


def test_kill_9_leftover_is_removed_by_the_next_save(tmp_path):
    folder = str(tmp_path)
    ck = os.path.join(folder, "ck.h5")
    rc, _, _, sent = signal_during_save(ck, signal.SIGKILL)
    assert sent and rc == -signal.SIGKILL
    left = partials(folder)
    assert len(left) == 1  # what used to pile up
    live = partial_path(ck, os.getpid())  # a live process's partial file stays
    with open(live, "wb") as f:
        f.write(b"in progress")
    proc = start_train(ck, SMALL, 3, folder)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    said = [line for line in err.splitlines() if "removed" in line]
    assert len(said) == 1 and said[0].startswith("npdlrm train: removed 1 temporary file "), err
    assert left[0] in said[0]
    assert partials(folder) == [os.path.basename(live)]
    assert load_checkpoint(ck).optimizer.step_count == 2


# ---- the same, in-process and fine-grained -------------------------------------------------
def _write(path, n_arrays, interrupt_at=None, sig=signal.SIGINT):
    """An atomic HDF5 write of n_arrays datasets, sending `sig` to this process before
    dataset `interrupt_at`."""
    from npdlrm.checkpoint import _write_array
    with atomic.atomic_h5(path, atomic.h5_size(8000 * n_arrays, n_arrays)) as f:
        for i in range(n_arrays):
            if i == interrupt_at:
                os.kill(os.getpid(), sig)
            _write_array(f, str(i), np.full(1000, i, np.float64))


@pytest.mark.parametrize("sig,exc", [(signal.SIGINT, "KeyboardInterrupt"),
                                     (signal.SIGTERM, "Terminated")])
def test_signal_inside_a_write_is_deferred_then_abandons_it(tmp_path, sig, exc):
    exc = atomic.Terminated if exc == "Terminated" else KeyboardInterrupt
    path = str(tmp_path / "x.h5")
    _write(path, 3)
    before = open(path, "rb").read()
    old = signal.signal(signal.SIGTERM, atomic.raise_terminated)
    try:
        with pytest.raises(exc):
            _write(path, 5, interrupt_at=2, sig=sig)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is atomic.raise_terminated
    finally:
        signal.signal(signal.SIGTERM, old)
    assert open(path, "rb").read() == before
    assert partials(tmp_path) == []


def test_ignored_sigint_stays_ignored(tmp_path):
    path = str(tmp_path / "x.h5")
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _write(path, 3, interrupt_at=1)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)
    assert partials(tmp_path) == []
    assert os.path.exists(path)


def test_stale_partials_of_dead_processes_only(tmp_path, caplog):
    path = str(tmp_path / "ck.h5")
    dead, live = partial_path(path, dead_pid()), partial_path(path, os.getppid())
    token = partial_path(path, "0123456789abcdef")  # a sharded save's: not a pid
    other = partial_path(str(tmp_path / "other.h5"), dead_pid())
    for name in (dead, live, token, other):
        with open(name, "wb") as f:
            f.write(b"x" * 1000)
    with caplog.at_level("WARNING", logger="npdlrm"):
        with atomic.atomic_write(path, size=10) as pending:
            with open(pending.tmp, "wb") as f:
                f.write(b"new")
    assert pending.stale == [(os.path.basename(dead), 1000)]
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(p) for p in (path, live, token, other))
    assert [r.getMessage() for r in caplog.records] == [atomic.stale_message(path,
                                                                              pending.stale)]

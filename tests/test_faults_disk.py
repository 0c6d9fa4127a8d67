"""Issue 9, fault 1: a full disk. Every output (checkpoints, predictions, processed data)
fails cleanly: one line naming the file and the bytes needed, exit 2, the previous file
byte for byte as it was, no temporary file left, no crash.

The real cases run the `npdlrm` command in a subprocess (HDF5 used to crash on ENOSPC)
on a small tmpfs filled to leave a few KB; they need root to mount it and skip
otherwise. The fine-grained cases simulate ENOSPC where HDF5 or fallocate reports it."""
import errno
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from npdlrm import atomic, diskspace
from npdlrm import checkpoint as ckpt_mod
from npdlrm.checkpoint import load_checkpoint, save_checkpoint
from npdlrm.cli import main
from npdlrm.data.preprocess import preprocess_criteo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ("--data-generation synthetic --arch-embedding-size 300-2000-50 "
         "--arch-sparse-feature-size 4 --arch-mlp-bot 13-8-4 --arch-mlp-top 8-1 "
         "--loss-function bce --mini-batch-size 32 --num-batches 3 --test-data-size 100 "
         "--optimizer adagrad --progress False").split()
DISK_FULL = re.compile(r"npdlrm (\w+): error: no space left on device writing (\S+) "
                       r"\(needs about [0-9.]+ MiB, [0-9.]+ MiB free\)")
# A runner of the command with npdlrm.atomic's free-space check before a write disabled
# (NO_PRECHECK=1): then the reservation itself (fallocate) is what meets the full disk.
RUNNER = ("import os, sys\n"
          "import npdlrm.atomic as a\n"
          "if os.environ.get('NO_PRECHECK') == '1':\n"
          "    a.check_space = lambda *args: None\n"
          "from npdlrm.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


# ---- helpers (bench/faults_rerun.py uses them too) ------------------------------------
def mount_tmpfs(folder, size="8m"):
    """Mount a tmpfs of `size` on `folder`; None, or why it cannot be done here."""
    if not sys.platform.startswith("linux"):
        return "a tmpfs needs Linux"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"cannot mount a tmpfs: {r.stderr.strip()}"


def unmount(folder):
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def free(folder):
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fill(folder, leave):
    """Grow the file `filler` in `folder` (or shrink it) until about `leave` bytes are free."""
    filler = os.path.join(folder, "filler")
    have = os.path.getsize(filler) if os.path.exists(filler) else 0
    size = max(0, have + free(folder) - leave)
    with open(filler, "ab"):
        pass
    os.truncate(filler, min(size, have))
    if size > have:
        fd = os.open(filler, os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)


def raw_lines(n, seed=0, vocab=40):
    """n raw Criteo TSV lines."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    ints = rng.integers(-3, 500, (n, 13))
    keys = rng.integers(1, vocab, (n, 26)) * 2654435761 % 2**32 + np.arange(26)
    return [f"{labels[i]}\t" + "\t".join(map(str, ints[i])) + "\t"
            + "\t".join(format(int(k), "08x") for k in keys[i]) for i in range(n)]


def write_raw(path, n, seed=0):
    with open(path, "w") as f:
        f.write("\n".join(raw_lines(n, seed)) + "\n")
    return str(path)


def make_predict_inputs(folder, rows=10000):
    """(processed data file, checkpoint) in `folder` for `npdlrm predict`."""
    raw = write_raw(os.path.join(folder, "raw.txt"), rows)
    data = os.path.join(folder, "data.h5")
    preprocess_criteo(raw, data, dataset="kaggle", days=2)
    ck = os.path.join(folder, "model.h5")
    assert main(["train", "--data-generation", "dataset", "--data-set", "kaggle",
                 "--processed-data-file", data, "--arch-sparse-feature-size", "4",
                 "--arch-mlp-bot", "13-4", "--arch-mlp-top", "8-1", "--num-batches", "1",
                 "--mini-batch-size", "64", "--progress", "False", "--log-file",
                 os.path.join(folder, "log.jsonl"), "--save-model", ck]) == 0
    return data, ck


def npdlrm(*args, cwd, precheck=True):
    """Run the command in a subprocess: (exit code, stdout, stderr)."""
    env = dict(os.environ, NO_PRECHECK="0" if precheck else "1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def partials(folder):
    return sorted(n for n in os.listdir(folder) if ".partial" in n)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def check_one_line(stderr, cmd, target):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    m = DISK_FULL.fullmatch(lines[0])
    assert m, stderr
    assert m.group(1) == cmd and os.path.basename(m.group(2)) == os.path.basename(target)


# ---- a real full disk (tmpfs) ---------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    why = mount_tmpfs(disk)
    if why:
        pytest.skip(why)
    yield str(disk)
    unmount(disk)


@pytest.fixture(scope="module")
def predict_inputs(tmp_path_factory):
    return make_predict_inputs(str(tmp_path_factory.mktemp("predict")))


@pytest.mark.parametrize("leave,precheck", [(8 << 10, True), (80 << 10, False)])
def test_predict_on_a_full_disk_keeps_the_previous_output(small_disk, predict_inputs, leave,
                                                          precheck):
    data, ck = predict_inputs
    out = os.path.join(small_disk, "pred.h5")
    args = ["predict", "--load-model", ck, "--processed-data-file", data, "-o", out]
    rc, stdout, stderr = npdlrm(*args, cwd=small_disk)
    assert rc == 0, stderr
    before = read(out)
    fill(small_disk, leave)
    rc, stdout, stderr = npdlrm(*args, cwd=small_disk, precheck=precheck)
    assert rc == 2, (rc, stdout, stderr)
    assert "Wrote" not in stdout
    check_one_line(stderr, "predict", out)
    assert read(out) == before
    assert partials(small_disk) == []


@pytest.mark.parametrize("leave,precheck", [(8 << 10, True), (80 << 10, False)])
def test_checkpoint_save_on_a_full_disk_keeps_the_previous_checkpoint(small_disk, leave,
                                                                      precheck):
    ck = os.path.join(small_disk, "ck.h5")
    rc, _, stderr = npdlrm("train", *SMALL, "--save-model", ck, "--log-file", "",
                           cwd=small_disk)
    assert rc == 0, stderr
    before = read(ck)
    fill(small_disk, leave)
    rc, stdout, stderr = npdlrm("train", *SMALL, "--numpy-rand-seed", "7", "--save-model", ck,
                                "--log-file", "", cwd=small_disk, precheck=precheck)
    assert rc == 2, (rc, stdout, stderr)
    check_one_line(stderr, "train", ck)
    assert read(ck) == before
    assert partials(small_disk) == []
    assert load_checkpoint(ck).optimizer.step_count == 3


def test_preprocess_on_a_full_disk_keeps_the_previous_output(small_disk, tmp_path):
    raw = write_raw(tmp_path / "raw.txt", 3000)
    out = os.path.join(small_disk, "data.h5")
    rc, _, stderr = npdlrm("preprocess", "--raw-data-file", raw, "--processed-data-file", out,
                           "--days", "2", cwd=small_disk)
    assert rc == 0, stderr
    before = read(out)
    fill(small_disk, 8 << 10)
    # other days: the dictionary is reused, the output written again
    rc, _, stderr = npdlrm("preprocess", "--raw-data-file", raw, "--processed-data-file", out,
                           "--days", "3", cwd=small_disk)
    assert rc == 2, stderr
    check_one_line(stderr, "preprocess", out)
    assert read(out) == before
    assert partials(small_disk) == []


# ---- simulated ENOSPC -------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    """A checkpoint written by `npdlrm train` and its bytes."""
    ck = str(tmp_path / "ck.h5")
    assert main(["train", *SMALL, "--save-model", ck, "--log-file", ""]) == 0
    return ck, read(ck)


def test_hdf5_error_hiding_enospc_is_one_line(saved, monkeypatch, capsys):
    """h5py reports ENOSPC as a RuntimeError whose text holds it (the old 60-line
    traceback): one line, exit 2, the previous checkpoint intact."""
    ck, before = saved
    real = ckpt_mod._write_array
    calls = []

    def failing(group, name, array):
        calls.append(name)
        if len(calls) == 3:
            raise RuntimeError("Can't write data (file write failed: time = now, filename = "
                               "'x', file descriptor = 5, errno = 28, error message = 'No "
                               "space left on device', buf = 0x1, total write size = 8)")
        return real(group, name, array)
    monkeypatch.setattr(ckpt_mod, "_write_array", failing)
    capsys.readouterr()
    assert main(["train", *SMALL, "--numpy-rand-seed", "7", "--save-model", ck,
                 "--log-file", ""]) == 2
    check_one_line(capsys.readouterr().err, "train", ck)
    assert read(ck) == before and partials(os.path.dirname(ck)) == []


@pytest.mark.parametrize("how", ["fallocate", "no-fallocate"])
def test_reservation_refused_raises_disk_full(saved, monkeypatch, how):
    """The space is reserved before HDF5 writes: a refusal is a DiskFullError (an OSError
    with errno ENOSPC) naming the file and the bytes, and nothing changes. Where the file
    system has no fallocate, the free space is checked instead."""
    ck, before = saved
    model = load_checkpoint(ck)
    if how == "fallocate":
        def refuse(fd, mode, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")
    else:
        def refuse(fd, mode, offset, length):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        real_free = diskspace.free_bytes
        monkeypatch.setattr(diskspace, "free_bytes",
                            lambda folder: 0 if checks.append(1) or len(checks) > 1
                            else real_free(folder))
    checks = []
    monkeypatch.setattr(diskspace, "_fallocate", refuse)
    with pytest.raises(atomic.DiskFullError) as info:
        save_checkpoint(ck, model.model, model.optimizer, {"which": "new"})
    e = info.value
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC and e.needed > len(before) // 2
    assert str(e).startswith(f"no space left on device writing {ck} (needs about ")
    assert read(ck) == before and partials(os.path.dirname(ck)) == []


def test_failed_close_is_not_renamed(saved, monkeypatch):
    """An error when the file is flushed and closed (the last writes) leaves the previous
    file: the rename comes only after every write and the close succeeded."""
    import h5py
    ck, before = saved
    model = load_checkpoint(ck)

    def failing_flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(h5py.File, "flush", failing_flush)
    with pytest.raises(atomic.DiskFullError):
        save_checkpoint(ck, model.model, model.optimizer, {"which": "new"})
    assert read(ck) == before and partials(os.path.dirname(ck)) == []

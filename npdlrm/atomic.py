"""Atomic file writes: a temporary file beside the target, fsync, rename, fsync the folder.

Every output of npdlrm (checkpoints, processed data, predictions) goes through
`atomic_write` (or `atomic_h5`, its HDF5 form), which also makes three faults clean:

* A full disk (npdlrm.diskspace): the space a file needs is reserved before HDF5 writes
  into it (`reserved_h5`); a write that does not fit raises `DiskFullError` after
  removing the temporary file; the previous file is untouched. Every write and the close
  are checked before the rename.
* SIGINT / SIGTERM during a write (npdlrm.signals): deferred, and acted on at the next
  safe point (`check_interrupt`), which abandons the write and removes the temporary file.
* Leftovers of killed writes. The temporary file is `partial_path(path)`,
  `.{name}.partial-{pid}`; a write of `path` first removes the partial files of `path`
  whose process is dead (their pid is not alive), and logs one warning line on the
  "npdlrm" logger (`Pending.stale` lists them).
"""
import contextlib
import logging
import os
import re

from .diskspace import (DiskFullError, Reservation, _mib, check_space, free_bytes,
                        is_disk_full)
from .signals import check_interrupt, deferred_signals
# also reached through npdlrm.atomic (by the tests): re-exported
from .diskspace import h5_size  # noqa: F401
from .signals import Terminated, raise_terminated  # noqa: F401

log = logging.getLogger("npdlrm")


def fsync_path(path, directory=False):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_path(path, tag=None):
    """The temporary file a write of `path` goes to first: `.{name}.partial-{tag}` beside
    it; tag: this process's pid unless given (a sharded save uses its token)."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f".{name}.partial-{os.getpid() if tag is None else tag}")


# ---- leftovers of killed writes ----------------------------------------------------------
def pid_alive(pid):
    """True unless process `pid` is known to be gone (a zombie counts as gone)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    with contextlib.suppress(OSError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def remove_stale_partials(path):
    """Remove the partial files of `path` (`partial_path(path, pid)`) left by processes
    that are gone; returns [(name, bytes)] and logs one line when there were some."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    prefix = f".{name}.partial-"
    removed = []
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return removed
    for entry in entries:
        tag = entry[len(prefix):]
        if not entry.startswith(prefix) or not re.fullmatch(r"[0-9]{1,9}", tag):
            continue
        pid = int(tag)
        if pid == os.getpid() or pid_alive(pid):
            continue
        file = os.path.join(folder, entry)
        try:
            size = os.lstat(file).st_size
            os.remove(file)
        except OSError:
            continue
        removed.append((entry, size))
    if removed:
        log.warning(stale_message(path, removed))
    return removed


def stale_message(path, removed):
    shown = ", ".join(n for n, _ in removed[:3]) + (", ..." if len(removed) > 3 else "")
    return (f"removed {len(removed)} temporary file{'s' * (len(removed) != 1)} of "
            f"interrupted writes of {path} by dead processes "
            f"({_mib(sum(s for _, s in removed))}): {shown}")


# ---- the write ---------------------------------------------------------------------------
class Pending:
    """A write in progress: `tmp` is written (and closed) by the caller, then renamed onto
    `path`. size: the bytes it needs (about; None: unknown). stale: the leftovers of dead
    processes removed first. reservation: see reserve()."""

    def __init__(self, path, tmp, size):
        self.path, self.tmp, self.size = path, tmp, size
        self.stale = []
        self.reservation = None

    def __fspath__(self):
        return self.tmp

    def reserve(self, total=None):
        """Hold `total` (default: size) bytes for tmp, which must exist by now."""
        if self.reservation is None:
            self.reservation = Reservation(self.tmp, self.path)
        total = self.size if total is None else total
        if total is not None:
            self.reservation.grow(total)
            self.size = max(self.size or 0, int(total))


@contextlib.contextmanager
def atomic_write(path, tmp=None, size=None):
    """Yield a Pending whose `tmp` (default partial_path(path)) the caller writes and
    closes; then it is fsynced, renamed onto `path` and the folder fsynced. On any
    exception -- a full disk (DiskFullError), a deferred SIGINT / SIGTERM -- tmp is
    removed and `path` untouched. size: the bytes the file needs, when known: checked
    against the free space first, and named by a DiskFullError."""
    path = os.fspath(path)
    tmp = partial_path(path) if tmp is None else os.fspath(tmp)
    pending = Pending(path, tmp, size)
    folder = os.path.dirname(os.path.abspath(path))
    with deferred_signals():
        try:
            pending.stale = remove_stale_partials(path)
            check_space(path, size)
            yield pending
            check_interrupt()
            if pending.reservation is not None:
                pending.reservation.release()
            fsync_path(tmp)
            check_interrupt()
            os.replace(tmp, path)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            if isinstance(e, DiskFullError):
                e.free = free_bytes(folder)
                raise
            if is_disk_full(e):
                raise DiskFullError(path, pending.size, free_bytes(folder)) from e
            raise
        with contextlib.suppress(OSError):  # some file systems refuse a folder fsync
            fsync_path(folder, directory=True)


@contextlib.contextmanager
def reserved_h5(file, size, target=None, **h5_kwargs):
    """An h5py.File created at `file` with `size` bytes reserved before HDF5 writes into it
    (see Reservation); flushed and closed with errors checked (not fsynced: atomic_write
    does it). target: the name errors give. On an exception the file is closed and left
    for the caller to remove."""
    import h5py
    target = os.fspath(target or file)
    check_space(target if target != file else file, size)
    reservation = Reservation(file, target)
    f = h5py.File(file, "w", **h5_kwargs)
    _active[os.path.abspath(os.fspath(file))] = reservation
    try:
        try:
            reservation.grow(size or 0)
            yield f
            check_interrupt()
            f.flush()
        except BaseException:
            with contextlib.suppress(Exception):
                f.close()
            raise
        f.close()
    finally:
        _active.pop(os.path.abspath(os.fspath(file)), None)
    reservation.release()


_active = {}  # file name -> Reservation of the reserved_h5 files open now


def grow_reservation(f, total):
    """Hold `total` bytes for h5py.File `f` opened by reserved_h5 / atomic_h5 (growing
    files: processed data); nothing for another file."""
    reservation = _active.get(os.path.abspath(f.filename))
    if reservation is not None:
        reservation.grow(total)


@contextlib.contextmanager
def atomic_h5(path, size, tmp=None, **h5_kwargs):
    """atomic_write of an HDF5 file: yields an h5py.File written at tmp (default
    partial_path(path)) with `size` bytes reserved first (h5_size gives a bound)."""
    with atomic_write(path, tmp, size) as pending, \
            reserved_h5(pending.tmp, size, target=path, **h5_kwargs) as f:
        yield f

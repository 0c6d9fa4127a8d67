"""Atomic file writes: a temporary file beside the target, fsync, rename, fsync the folder.

Every output of npdlrm (checkpoints, processed data, predictions) goes through
`atomic_write` (or `atomic_h5`, its HDF5 form), which also makes three faults clean:

* A full disk. HDF5 does not survive ENOSPC (it may leave a readable but wrong file and
  crash later), so the space a file needs is reserved before HDF5 writes into it
  (`Reservation`: fallocate with FALLOC_FL_KEEP_SIZE, which fails cleanly; where the file
  system cannot, a check of the free space). A write that does not fit raises
  `DiskFullError` (an OSError with errno ENOSPC) naming the target, the bytes it needs
  and the bytes free, after removing the temporary file; the previous file is untouched.
  Every write and the close are checked before the rename.
* SIGINT / SIGTERM during a write (main thread only). They are deferred: a handler records
  them; the writer abandons the write at its next safe point (`check_interrupt`, between
  datasets or blocks, and before the rename), removes the temporary file and raises
  KeyboardInterrupt (SIGINT) or `Terminated` (SIGTERM, a KeyboardInterrupt) -- or rather
  does what the handler in place before the write would have done. A signal that arrives
  after the last safe point lets the write finish, and is acted on just after it.
* Leftovers of killed writes. The temporary file is `partial_path(path)`,
  `.{name}.partial-{pid}`; a write of `path` first removes the partial files of `path`
  whose process is dead (their pid is not alive), and logs one warning line on the
  "npdlrm" logger (`Pending.stale` lists them).
"""
import contextlib
import ctypes
import errno
import logging
import os
import re
import signal
import threading

log = logging.getLogger("npdlrm")

MIB = 1 << 20
# What HDF5 adds to the bytes of the arrays: object headers, B-trees of chunk indices,
# the superblock and heaps. Measured well below this; see h5_size.
H5_BASE_MARGIN = 256 << 10
H5_DATASET_MARGIN = 8 << 10


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


def h5_size(nbytes, n_datasets):
    """The bytes to reserve for an HDF5 file holding `n_datasets` datasets of `nbytes`
    bytes of array data in all (a generous bound of HDF5's own structures included)."""
    return int(nbytes) + nbytes // 100 + H5_BASE_MARGIN + H5_DATASET_MARGIN * int(n_datasets)


# ---- a full disk ---------------------------------------------------------------------
def _mib(n):
    if n is None:
        return "? MiB"
    mib = n / MIB
    return f"{mib:.0f} MiB" if mib >= 100 else f"{mib:.1f} MiB" if mib >= 1 else \
        f"{mib:.2f} MiB"


def free_bytes(folder):
    """Bytes an unprivileged user may still write in `folder` (None if unknown)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


class DiskFullError(OSError):
    """No space left on the device of `path`; needed: the bytes the write needs (about),
    free: the bytes free once the partial write was removed."""

    def __init__(self, path, needed, free=None):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
        self.path, self.needed, self.free = os.fspath(path), needed, free

    def __str__(self):
        return (f"no space left on device writing {self.path} (needs about "
                f"{_mib(self.needed)}, {_mib(self.free)} free)")

    def __reduce__(self):
        return type(self), (self.path, self.needed, self.free)


def is_disk_full(exc):
    """True when `exc` or an exception it came from is an ENOSPC (HDF5's errors wrap it
    in a RuntimeError or a plain OSError whose text names it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        text = str(exc).lower()  # also another rank's DiskFullError (parallel.agree)
        if "no space left on device" in text or "errno = 28," in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_message(exc, path=None):
    """The one line of a disk-full `exc` (a DiskFullError, or any error is_disk_full)."""
    if isinstance(exc, DiskFullError):
        return str(exc)
    path = path or getattr(exc, "filename", None) or "a file"
    folder = os.path.dirname(os.path.abspath(path)) if path != "a file" else "."
    return str(DiskFullError(path, None, free_bytes(folder))).replace(
        " (needs about ? MiB, ", " (")


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV,
                getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def _load_fallocate():
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_fallocate_fn = _load_fallocate()


def _fallocate(fd, mode, offset, length):
    """Linux fallocate(2); OSError(ENOSYS) where there is none."""
    if _fallocate_fn is None:
        raise OSError(errno.ENOSYS, "no fallocate")
    if _fallocate_fn(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Reservation:
    """Disk space held for `file` (written by someone else, e.g. HDF5) before it is
    written: blocks allocated without changing the file's size, so that its writes
    cannot meet a full disk. `target`: the name errors give (the file being replaced)."""

    def __init__(self, file, target=None):
        self.file, self.target = os.fspath(file), os.fspath(target or file)
        self.reserved = 0

    def grow(self, total):
        """Hold `total` bytes for the file in all; DiskFullError when they do not fit."""
        total = int(total)
        if total <= self.reserved:
            return
        fd = os.open(self.file, os.O_WRONLY)
        try:
            _fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, total)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DiskFullError(self.target, total) from None
            if e.errno not in _UNSUPPORTED:
                raise
            # no fallocate here: the free space must hold what is still to come
            free = free_bytes(os.path.dirname(os.path.abspath(self.file)))
            if free is not None and free < total - max(self.reserved, os.fstat(fd).st_size):
                raise DiskFullError(self.target, total) from None
        finally:
            os.close(fd)
        self.reserved = total

    def release(self):
        """Give back what was held beyond the file's end (it is complete now)."""
        if not self.reserved:
            return
        with contextlib.suppress(OSError):
            fd = os.open(self.file, os.O_WRONLY)
            try:
                size = os.fstat(fd).st_size
                if self.reserved > size:
                    _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, size,
                               self.reserved - size)
            finally:
                os.close(fd)
        self.reserved = 0


def check_space(path, size):
    """DiskFullError unless `size` bytes look free beside `path` (before creating a file:
    HDF5 must not meet a full disk even when it writes its first structures)."""
    free = free_bytes(os.path.dirname(os.path.abspath(path)))
    if size is not None and free is not None and free < size:
        raise DiskFullError(path, size, free)


# ---- signals during a write ------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception that stops the run like Ctrl-C does (the
    `npdlrm` command exits 143)."""

    def __init__(self, signum=signal.SIGTERM):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def raise_terminated(signum, frame):
    """A SIGTERM handler: raise Terminated."""
    raise Terminated(signum)


_DEFERRED = (signal.SIGINT, signal.SIGTERM)
_pending = None  # the signals received while deferred (None: not deferring)
_previous = {}  # the handlers in place before


def _record(signum, frame):
    _pending.append(signum)


def _act(signum):
    """What the handler in place before the deferral would have done with `signum`."""
    old = _previous.get(signum, signal.SIG_DFL)
    if old == signal.SIG_IGN:
        return
    if callable(old):
        old(signum, None)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        raise Terminated(signum)


def check_interrupt():
    """A safe point of a write: act on a SIGINT / SIGTERM received during it (raise, and
    so abandon the write)."""
    while _pending:
        _act(_pending.pop(0))


@contextlib.contextmanager
def deferred_signals():
    """SIGINT and SIGTERM are recorded, not acted on, inside (main thread only; nested
    uses are one). check_interrupt() acts on them; so does the exit of a body that ended
    well."""
    global _pending
    if _pending is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending = []
    _previous.clear()
    try:
        for s in _DEFERRED:
            with contextlib.suppress(ValueError, OSError):
                _previous[s] = signal.signal(s, _record)
        yield
    finally:
        pending, _pending = _pending, None
        for s, old in _previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(s, signal.SIG_DFL if old is None else old)
    for s in pending:  # the body ended well: now the signals take effect
        _act(s)


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

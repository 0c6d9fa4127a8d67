"""A full disk: free space, DiskFullError, and the space a file needs held before it is
written.

HDF5 does not survive ENOSPC (it may leave a readable but wrong file and crash later), so
the space a file needs is reserved before HDF5 writes into it (`Reservation`: fallocate
with FALLOC_FL_KEEP_SIZE, which fails cleanly; where the file system cannot, a check of
the free space). A write that does not fit raises `DiskFullError` (an OSError with errno
ENOSPC) naming the target, the bytes it needs and the bytes free. `h5_size` bounds the
bytes of an HDF5 file; `check_space` checks the free space before a file is created;
`is_disk_full` / `disk_full_message` recognise and word a full disk met anywhere.
"""
import contextlib
import ctypes
import errno
import os

MIB = 1 << 20
# What HDF5 adds to the bytes of the arrays: object headers, B-trees of chunk indices,
# the superblock and heaps. Measured well below this; see h5_size.
H5_BASE_MARGIN = 256 << 10
H5_DATASET_MARGIN = 8 << 10


def h5_size(nbytes, n_datasets):
    """The bytes to reserve for an HDF5 file holding `n_datasets` datasets of `nbytes`
    bytes of array data in all (a generous bound of HDF5's own structures included)."""
    return int(nbytes) + nbytes // 100 + H5_BASE_MARGIN + H5_DATASET_MARGIN * int(n_datasets)


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

"""Atomic file writes: a temporary file beside the target, fsync, rename, fsync the folder."""
import contextlib
import os


def fsync_path(path, directory=False):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, tmp):
    """Yield `tmp` to be written (and closed) by the caller; then fsync it, rename it onto
    `path` and fsync the folder. On any exception `tmp` is removed and `path` untouched."""
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # some file systems refuse a folder fsync
        fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)

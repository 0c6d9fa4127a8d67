"""Every rank raises when one fails: for collective steps whose failure may be local to
one rank (a file it cannot write, a piece it cannot read), so that no rank is left
waiting in the next collective call."""
import builtins
import contextlib


def attempt(fn):
    """(fn(), None), or (None, the exception fn raised)."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - reported to every rank by agree
        return None, e


def _like(kind, message):
    """An exception of the built-in type named `kind` (else RuntimeError) with `message`."""
    cls = getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        with contextlib.suppress(TypeError):  # e.g. UnicodeDecodeError takes 5 arguments
            return cls(message)
    return RuntimeError(message)


def agree(comm, error, payload=None, cleanup=None):
    """Every rank's `payload` (collective). When some rank holds an `error`, `cleanup()`
    runs and every rank raises instead: a failing rank its own exception, the others one
    of the same type naming the first failing rank and its message."""
    report = None if error is None else (type(error).__name__, str(error))
    reports = comm.allgather_obj((report, payload))
    failed = [(rank, r) for rank, (r, _) in enumerate(reports) if r is not None]
    if not failed:
        return [p for _, p in reports]
    if cleanup is not None:
        cleanup()
    if error is not None:
        raise error
    rank, (kind, message) = failed[0]
    raise _like(kind, f"rank {rank}: {message}")

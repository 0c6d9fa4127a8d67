"""SIGINT / SIGTERM during a write (main thread only): deferred, then acted on.

Inside `deferred_signals` a handler records them; the writer abandons the write at its
next safe point (`check_interrupt`, between datasets or blocks, and before the rename),
removes the temporary file and raises KeyboardInterrupt (SIGINT) or `Terminated`
(SIGTERM, a KeyboardInterrupt) -- or rather does what the handler in place before the
write would have done. A signal that arrives after the last safe point lets the write
finish, and is acted on just after it. `raise_terminated` is the SIGTERM handler that
turns SIGTERM into Terminated.
"""
import contextlib
import signal
import threading


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

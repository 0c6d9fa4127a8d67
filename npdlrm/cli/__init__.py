"""The `npdlrm` command: train, preprocess, predict, plot."""
import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading

COMMANDS = {
    "train": "train a DLRM (the reference dlrm_s_pytorch.py's flags)",
    "preprocess": "raw Criteo TSV (Kaggle or Terabyte) -> HDF5",
    "predict": "click probabilities of a data file from a checkpoint",
    "plot": "loss and AUC curves of a training log",
    "plan": "the sharding plan of a distributed run and its per-step costs (no MPI)",
    "quantize": "a compact inference checkpoint: tables in int4 / int8 / float16",
    "export-onnx": "a checkpoint's model as an ONNX graph",
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="npdlrm", description="DLRM training on NumPy and Numba.",
        epilog="Run 'npdlrm COMMAND --help' for the flags of each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help in COMMANDS.items():
        module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=help, description=help)
        module.add_arguments(p)
        p.set_defaults(_module=module, _parser=p)
    return parser


def main(argv=None):
    """Entry point of `npdlrm` and `python -m npdlrm`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] == "train":
        from .train_flags import parse_train_args
        sub = parser._subparsers._group_actions[0].choices["train"]
        try:
            args = parse_train_args(argv[1:], parser=_fresh(sub))
        except ValueError as e:
            sub.print_usage(sys.stderr)
            print(f"npdlrm train: error: {e}", file=sys.stderr)
            return 2
        module, name = importlib.import_module(f"{__name__}.train"), "train"
    else:
        args = parser.parse_args(argv)
        module, name = args._module, args.command
    try:
        with _clean_stops(name):
            return module.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError) as e:
        print(f"npdlrm {name}: error: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as e:  # a full disk: one line (npdlrm.diskspace)
        from ..diskspace import disk_full_message, is_disk_full
        if not is_disk_full(e):
            raise
        print(f"npdlrm {name}: error: {disk_full_message(e)}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"npdlrm {name}: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C: 130; SIGTERM (signals.Terminated): 143
        from ..signals import Terminated
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"npdlrm {name}: {what} (checkpoints already written are complete)",
              file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130


@contextlib.contextmanager
def _clean_stops(name):
    """While a command runs: SIGTERM raises npdlrm.signals.Terminated (a KeyboardInterrupt:
    the run stops like on Ctrl-C, exit 143; a write in progress is abandoned and its
    temporary file removed), and the warnings of npdlrm.atomic (e.g. leftovers of killed
    runs removed) print as one line `npdlrm <cmd>: <warning>` on stderr."""
    from ..signals import raise_terminated
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"npdlrm {name}: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("npdlrm")
    logger.addHandler(handler)
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, raise_terminated) if main else None
    try:
        yield
    finally:
        logger.removeHandler(handler)
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)


def _fresh(sub):
    """A bare parser with the subcommand's name (train_flags adds the flags itself)."""
    return argparse.ArgumentParser(prog=sub.prog)

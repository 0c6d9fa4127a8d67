"""`npdlrm train` flags: the reference dlrm_s_pytorch.py's, with the same meaning.

Where the reference is wrong, ours is right: its `type=bool` flags read "False" as
true; ours read it as false. The few reference flags npdlrm refuses are refused by name,
with the reason, when given a value other than the reference's default.
"""
import argparse
import json
import pathlib

from ..config import parse_dashed
from .embedding_flags import add_embedding_flags, check_embedding_variants
from .extra_flags import add_extra_flags, check_extra_flags

FALSE_WORDS, TRUE_WORDS = ("false", "0", "no", "off"), ("true", "1", "yes", "on")

# flag -> (the reference's default, why npdlrm refuses it); refused unless left at the default
UNSUPPORTED = {
    "--sync-dense-params": (True, "npdlrm keeps the MLPs identical on every rank (one "
                                  "allreduce of their gradients a step); unsynchronised "
                                  "replicas would train different models"),
    "--plot-compute-graph": (False, "the reference draws torch's autograd graph (torchviz); "
                                    "npdlrm has no autograd graph: its layers are written "
                                    "out, see docs/architecture.md"),
}
STORE_TRUE = {"--plot-compute-graph"}


def str2bool(text):
    """'True'/'False' (and 1/0, yes/no, on/off) as the words say."""
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def dashed_ints(text):
    try:
        return "-".join(str(v) for v in parse_dashed(text, "value"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def dashed_floats(text):
    parts = str(text).split("-") if isinstance(text, str) else list(text)
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by '-', got {text!r}") \
            from None


def thread_setting(text):
    """'auto' or a positive thread count."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive count, got {text!r}")
    return n


def _bool_flag(group, name, help):
    group.add_argument(name, type=str2bool, nargs="?", const=True, default=False,
                       metavar="BOOL", help=help + " (--flag, --flag True or --flag False)")


def build_parser(parser=None):
    p = parser or argparse.ArgumentParser(prog="npdlrm train")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = (
        "Train a DLRM. The flags are those of the reference dlrm_s_pytorch.py, with the "
        "same meaning and defaults, so reference command lines run unchanged.")
    p.epilog = ("Reference flags npdlrm refuses unless left at the reference's default "
                "(the error says why):\n  " + " ".join(sorted(UNSUPPORTED)) + "\n\nSettings "
                "can also come from --config FILE (TOML or JSON, keys named like the flags); "
                "the command line wins.")
    p.add_argument("--config", metavar="FILE",
                   help="TOML or JSON file of settings, e.g. mini-batch-size = 128")
    m = p.add_argument_group("model")
    m.add_argument("--arch-sparse-feature-size", type=int, default=2, metavar="D",
                   help="embedding dimension D (default 2)")
    m.add_argument("--arch-embedding-size", type=dashed_ints, default="4-3-2",
                   help="rows of each table, e.g. 1000-500-20 (with --data-generation "
                        "dataset the data's own table sizes are used, as the reference does)")
    m.add_argument("--arch-mlp-bot", type=dashed_ints, default="4-3-2",
                   help="bottom MLP widths from the dense input to D, e.g. 13-512-256-64-16")
    m.add_argument("--arch-mlp-top", type=dashed_ints, default="4-2-1",
                   help="top MLP widths after the interaction, ending in 1, e.g. 512-256-1 "
                        "(its input width is derived from the interaction, as the reference)")
    m.add_argument("--arch-interaction-op", choices=["dot", "cat"], default="dot",
                   help="dot: pairwise dot products (+ the bottom output); cat: concatenation")
    m.add_argument("--arch-interaction-itself", action="store_true",
                   help="include each vector's dot product with itself")
    m.add_argument("--loss-function", choices=["mse", "bce", "wbce"], default="mse",
                   help="mse (the reference's default), bce, or wbce (weighted by label)")
    m.add_argument("--loss-weights", type=dashed_floats, default=(1.0, 1.0),
                   help="wbce weights of labels 0 and 1, e.g. 1.0-1.0")
    m.add_argument("--loss-threshold", type=float, default=0.0,
                   help="clamp the click probability to [t, 1-t] when 0 < t < 1")
    d = p.add_argument_group("data")
    d.add_argument("--data-generation", choices=["random", "synthetic", "dataset", "internal"],
                   default="random",
                   help="random: uniform indices; synthetic: power-law indices; both with "
                        "labels from a planted model (npdlrm's generators; --rand-data-dist "
                        "and --data-trace-file give the reference's own streams). dataset: "
                        "Criteo (--data-set)")
    d.add_argument("--data-set", choices=["kaggle", "terabyte"], default="kaggle",
                   help="which Criteo data set --raw-data-file holds")
    d.add_argument("--raw-data-file", default="",
                   help="raw Criteo TSV (kaggle: train.txt[.gz]; terabyte: the prefix of "
                        "day_0 ... day_23, e.g. /data/day)")
    d.add_argument("--processed-data-file", default="",
                   help="processed HDF5 file; made from --raw-data-file if it does not exist")
    d.add_argument("--max-ind-range", type=int, default=-1,
                   help="hash categorical values modulo this before the dictionary (-1: off)")
    d.add_argument("--data-randomize", choices=["total", "day", "none"], default="total",
                   help="total: shuffle the training rows each epoch (by chunk windows, see "
                        "docs); day: the same within each day, days in order; none: file "
                        "order")
    d.add_argument("--data-size", type=int, default=1,
                   help="samples of random/synthetic training data (default: --num-batches x "
                        "--mini-batch-size)")
    d.add_argument("--num-batches", type=int, default=0,
                   help="batches per epoch (0: the whole data set)")
    d.add_argument("--num-indices-per-lookup", type=int, default=10,
                   help="bag size of random/synthetic data (the maximum unless fixed)")
    _bool_flag(d, "--num-indices-per-lookup-fixed", "every bag has exactly that many indices")
    d.add_argument("--num-workers", type=int, default=0,
                   help="accepted for compatibility: npdlrm always reads the next batches on "
                        "one background thread")
    d.add_argument("--test-num-workers", type=int, default=-1, help="as --num-workers")
    d.add_argument("--memory-map", action="store_true",
                   help="read the reference's day files (<prefix>_<d>_reordered.npz) when "
                        "they are present; npdlrm's own HDF5 is always streamed")
    d.add_argument("--dataset-multiprocessing", action="store_true",
                   help="accepted for compatibility: preprocessing is one streaming pass")
    t = p.add_argument_group("training")
    t.add_argument("--mini-batch-size", type=int, default=1, help="samples per step")
    t.add_argument("--nepochs", type=int, default=1, help="epochs")
    t.add_argument("--learning-rate", type=float, default=0.01, help="learning rate")
    t.add_argument("--optimizer", choices=["sgd", "adagrad", "rwsadagrad"], default="sgd",
                   help="for the tables; the MLPs use sgd, adagrad, adagrad (as the reference)")
    t.add_argument("--lr-num-warmup-steps", type=int, default=0, help="linear warm-up steps")
    t.add_argument("--lr-decay-start-step", type=int, default=0,
                   help="step where polynomial decay starts")
    t.add_argument("--lr-num-decay-steps", type=int, default=0, help="steps of decay")
    _bool_flag(t, "--round-targets", "round the labels to 0/1")
    t.add_argument("--numpy-rand-seed", type=int, default=123,
                   help="seed of the initial weights (same weights as the reference), the "
                        "synthetic data and the shuffling")
    o = p.add_argument_group("evaluation and output")
    o.add_argument("--print-freq", type=int, default=1, help="batches between loss lines")
    o.add_argument("--test-freq", type=int, default=-1,
                   help="batches between evaluations on the test split (and at the end of "
                        "each epoch); -1: never")
    o.add_argument("--test-mini-batch-size", type=int, default=-1,
                   help="evaluation batch size (-1: --mini-batch-size)")
    o.add_argument("--print-time", action="store_true", help="show ms per iteration")
    o.add_argument("--enable-profiling", action="store_true",
                   help="time every stage inside the real training step and print the table "
                        "at the end (one process; an MPI run prints its compute / all-to-all "
                        "/ allreduce split instead)")
    o.add_argument("--print-wall-time", action="store_true", help="show the wall-clock time")
    o.add_argument("--print-precision", type=int, default=5, help="digits of printed metrics")
    o.add_argument("--save-model", default="",
                   help="checkpoint (HDF5) written atomically after each evaluation and at "
                        "the end; '{step}' in the name keeps one file per checkpoint (the "
                        "reference keeps only the best test accuracy)")
    o.add_argument("--load-model", default="",
                   help="checkpoint to resume from (exactly: weights, optimizer state, "
                        "position in the data)")
    o.add_argument("--inference-only", action="store_true",
                   help="with --load-model: only evaluate the loaded model on the test split")
    o.add_argument("--no-verify", action="store_true",
                   help="with --load-model: skip the pass that checks every tensor's CRC-32 "
                        "and finite values before loading (it reads the checkpoint twice; "
                        "non-finite values are still refused, after reading)")
    g = p.add_argument_group(
        "distributed runs (mpirun -n N python mpi_launch/train.py <these flags>)")
    g.add_argument("--sharding", default="auto", metavar="PLAN",
                   help="where the embedding tables live: auto (the planner), table, row, "
                        "column or replicate for every table, or TABLE:KIND overrides such as "
                        "3:row,9:column (the planner places the rest)")
    g.add_argument("--alltoall-dtype", choices=["float32", "float16"], default="float32",
                   help="precision of the exchanged pooled embeddings and their gradients; "
                        "float16 halves the bytes (training is then no longer exact)")
    g.add_argument("--link-gbps", type=float, default=0.0, metavar="X",
                   help="npdlrm plan: also estimate each exchange's time on links of X Gbit/s")
    g.add_argument("--check-replicas", type=int, default=0, metavar="N",
                   help="debug: every N steps check that the MLPs and replicated tables are "
                        "bitwise identical on every rank (0: never)")
    g.add_argument("--dist-backend", choices=["", "mpi"], default="",
                   help="accepted for the reference's command lines: npdlrm always uses MPI "
                        "(nccl and gloo are torch's)")
    g.add_argument("--local_rank", type=int, default=-1,
                   help="accepted for the reference's command lines and ignored: MPI gives "
                        "each process its rank")
    add_embedding_flags(p)
    n = p.add_argument_group("npdlrm only")
    n.add_argument("--log-file", default=None,
                   help="JSONL log of every metric (default runs/npdlrm-<time>.jsonl; '' "
                        "for none)")
    n.add_argument("--progress", type=str2bool, nargs="?", const=True, default=None,
                   metavar="BOOL", help="progress bar (default: when stderr is a terminal)")
    n.add_argument("--power-law-exponent", type=dashed_floats, default=(1.1,),
                   help="synthetic data: Zipf exponent, one for all tables or one per table "
                        "(e.g. 0.9-1.1-1.3)")
    n.add_argument("--test-data-size", type=int, default=20000,
                   help="held-out samples of random/synthetic data")
    n.add_argument("--init", choices=["reference", "fast"], default="reference",
                   help="reference: the reference's initial weights, bit for bit; fast: "
                        "float32 draws (much faster for huge tables)")
    n.add_argument("--mmap-embeddings", action="store_true",
                   help="keep the tables and their optimizer state in files mapped into "
                        "memory (a working copy in --mmap-dir): tables larger than memory; "
                        "the same numbers as in memory. One process, plain tables")
    n.add_argument("--mmap-dir", default=None, metavar="DIR",
                   help="with --mmap-embeddings: the folder of the working copy (unnamed "
                        "files, gone when the run ends; default: the folder of --save-model, "
                        "else the current folder)")
    n.add_argument("--strict", action="store_true",
                   help="preprocessing: stop at the first malformed row instead of skipping")
    n.add_argument("--use-gpu", action="store_true",
                   help="train on the GPU: parameters, optimizer state and batches in GPU "
                        "memory, the CUDA kernels (CuPy) and cuBLAS; one process, plain "
                        "tables. Refused, with the reason, when no GPU is usable")
    n.add_argument("--threads", type=thread_setting, default="auto", metavar="auto|N",
                   help="threads of the MLPs (OpenBLAS) and kernels (Numba). auto: as many "
                        "as the cores other processes leave free, re-read every second, at "
                        "most the *_NUM_THREADS you set; N: fixed (results are the same "
                        "for any count)")
    add_extra_flags(p)
    u = p.add_argument_group("reference flags not supported yet (see the list below)")
    for flag, (default, _) in UNSUPPORTED.items():
        if flag in STORE_TRUE:
            u.add_argument(flag, action="store_true", default=None, help=argparse.SUPPRESS)
        else:
            kind = str2bool if isinstance(default, bool) else (
                type(default) if default is not None else str)
            u.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)
    return p


def load_config(path, parser):
    """Settings from a TOML or JSON file, keyed like the flags; returns parser defaults."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = file.read_text()
    if file.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:
            raise ValueError("TOML config files need Python 3.11 or newer; use JSON") from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config file {path}: {e}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {path}: {e}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a table of settings")
    dests = {a.dest: a for a in parser._actions}
    defaults = {}
    for key, value in values.items():
        dest = key.lstrip("-").replace("-", "_")
        action = dests.get(dest)
        if action is None or dest in ("help", "config"):
            raise ValueError(f"config file {path}: unknown setting {key!r}")
        if action.type is not None and isinstance(value, str):
            try:
                value = action.type(value)
            except (argparse.ArgumentTypeError, ValueError) as e:
                raise ValueError(f"config file {path}: {key}: {e}") from None
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"config file {path}: {key} must be one of "
                             f"{list(action.choices)}, got {value!r}")
        defaults[dest] = value
    return defaults


def refuse_unsupported(args):
    """Raise ValueError naming the first refused reference flag set to another value than
    the reference's default, and why it is refused."""
    for flag, (default, reason) in UNSUPPORTED.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and value != default:
            raise ValueError(f"{flag} {value!r}: {reason}; remove the flag (its default is "
                             f"{default!r})")


def parse_train_args(argv=None, parser=None):
    """Parse (config file, then the command line); raises ValueError on bad settings."""
    p = build_parser(parser)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        p.set_defaults(**load_config(known.config, p))
    args = p.parse_args(argv)
    refuse_unsupported(args)
    check_values(args)
    return args


def check_values(args):
    positive = ("mini_batch_size", "print_freq", "arch_sparse_feature_size",
                "num_indices_per_lookup", "test_data_size")
    for name in positive:
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got "
                             f"{getattr(args, name)}")
    for name in ("nepochs", "num_batches", "lr_num_warmup_steps", "lr_decay_start_step",
                 "lr_num_decay_steps"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got "
                             f"{getattr(args, name)}")
    if args.test_mini_batch_size == 0 or args.test_mini_batch_size < -1:
        raise ValueError(f"--test-mini-batch-size must be positive or -1, got "
                         f"{args.test_mini_batch_size}")
    if args.check_replicas < 0 or args.link_gbps < 0:
        raise ValueError("--check-replicas and --link-gbps must be >= 0")
    if not args.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {args.learning_rate}")
    if args.inference_only and not args.load_model:
        raise ValueError("--inference-only needs --load-model (the model to evaluate)")
    if args.mmap_dir is not None and not args.mmap_embeddings:
        raise ValueError("--mmap-dir needs --mmap-embeddings")
    if args.use_gpu:
        check_gpu_flags(args)
    check_embedding_variants(args)
    check_extra_flags(args)
    if args.data_generation == "internal":
        raise ValueError("--data-generation internal: the reference's own placeholder for "
                         "Meta-internal data (its loader is not public); use random, "
                         "synthetic or dataset")
    if args.data_generation == "dataset" and not (args.processed_data_file or
                                                  args.raw_data_file):
        raise ValueError("--data-generation dataset needs --processed-data-file (and "
                         "--raw-data-file to make it)")



def check_gpu_flags(args):
    """ValueError naming what --use-gpu cannot be combined with, or why no GPU is usable."""
    from ..backend import gpu_unavailable_reason
    if args.mmap_embeddings:
        raise ValueError("--use-gpu with --mmap-embeddings: mapped tables stay on the CPU")
    why = gpu_unavailable_reason()
    if why is not None:
        raise ValueError(f"--use-gpu: no usable GPU here: {why}")

"""`npdlrm predict`: click probabilities of a processed data file from a checkpoint or a
serving file (npdlrm quantize), optionally with quantized tables and MLP weights."""
import numpy as np

from ..atomic import atomic_h5, atomic_write
from ..diskspace import h5_size
from ..quantize import EMB_BITS, MLP_BITS
from .train_flags import thread_setting


def add_arguments(p):
    p.description = ("Write the click probability of every row of a processed Criteo HDF5 "
                     "file (or one split of it), in file order, using a checkpoint.")
    p.add_argument("--load-model", required=True,
                   help="checkpoint written by npdlrm train, or a serving file written by "
                        "npdlrm quantize")
    p.add_argument("--quantize-emb-with-bit", type=int, choices=EMB_BITS, default=None,
                   help="score with the tables quantized to 4 or 8 bits (row-wise int4 / "
                        "int8), 16 (float16) or 32 (default: as stored)")
    p.add_argument("--quantize-mlp-with-bit", type=int, choices=MLP_BITS, default=None,
                   help="score with the MLP weights stored in 8 bits (int8 per output "
                        "channel), 16 (float16) or 32 (default: as stored)")
    p.add_argument("--mmap-embeddings", action="store_true",
                   help="leave the tables in the file and let the operating system page in "
                        "the rows looked up (tables larger than memory); needs contiguous, "
                        "uncompressed table datasets, as npdlrm writes them")
    p.add_argument("--processed-data-file", required=True, help="processed HDF5 data file")
    p.add_argument("--split", choices=["all", "train", "test", "val"], default="all",
                   help="rows to predict (default all)")
    p.add_argument("--test-mini-batch-size", type=int, default=16384,
                   help="rows per forward pass (default 16384)")
    p.add_argument("--prefetch", type=int, default=0, metavar="N",
                   help="batches read and decoded ahead on a background thread while the "
                        "current one is scored (default 0: read on the main thread, which "
                        "measured as fast from a cached file, reading being ~4%% of the "
                        "time; try 2 when the file is on slow storage)")
    p.add_argument("--threads", type=thread_setting, default="auto", metavar="auto|N",
                   help="threads of the MLPs (OpenBLAS) and kernels (Numba). auto: as many "
                        "as the cores other processes leave free, re-read every second, at "
                        "most the *_NUM_THREADS you set; N: fixed (the probabilities are the "
                        "same for any count)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the pass that checks every tensor's CRC-32 and finite values "
                        "before loading the checkpoint (it reads it twice; non-finite values "
                        "are still refused, after reading)")
    p.add_argument("-o", "--output", required=True,
                   help="output file: .npy (float32 array), .h5 (dataset 'probability' "
                        "beside 'label'), or text (one probability per line)")


TEXT_BYTES_PER_ROW = 16  # "%.8g" and a newline: at most 15 bytes for a probability


def _write(path, probs, labels):
    """The output file, atomically (npdlrm.atomic): its space is reserved before a byte is
    written, and a full disk raises DiskFullError with the previous file untouched."""
    if path.endswith((".h5", ".hdf5")):
        size = h5_size(probs.nbytes + np.asarray(labels).nbytes, 2)
        with atomic_h5(path, size) as f:
            f.create_dataset("probability", data=probs)
            f.create_dataset("label", data=labels)
        return
    npy = path.endswith(".npy")
    size = probs.nbytes + 4096 if npy else TEXT_BYTES_PER_ROW * probs.size + 4096
    with atomic_write(path, size=size) as pending:
        with open(pending.tmp, "wb") as f:  # a failed write or close raises here
            pending.reserve()
            if npy:
                np.save(f, probs)
            else:
                np.savetxt(f, probs, fmt="%.8g")


def run(args, say=print):
    from ..data.h5data import open_processed
    from ..data.loader import BatchLoader
    from ..metrics import evaluate
    from ..trainer import predict_all
    from .report import format_eval
    if args.test_mini_batch_size <= 0:
        raise ValueError(f"--test-mini-batch-size must be positive, got "
                         f"{args.test_mini_batch_size}")
    if args.prefetch < 0:
        raise ValueError(f"--prefetch must be >= 0, got {args.prefetch}")
    from ..governed import GovernedLoader
    from ..serve_file import load_for_inference
    from ..threads import ThreadGovernor, set_threads
    model = load_for_inference(args.load_model, args.quantize_emb_with_bit,
                               args.quantize_mlp_with_bit, verify=not args.no_verify,
                               mmap=args.mmap_embeddings)
    if hasattr(model, "describe"):
        say(f"Scoring with {model.describe()}")
    if args.mmap_embeddings:
        say(f"Tables memory-mapped from {args.load_model}")
    with open_processed(args.processed_data_file) as data:
        if tuple(data.table_sizes) != tuple(model.config.table_sizes):
            raise ValueError(f"{args.processed_data_file} has table sizes "
                             f"{tuple(data.table_sizes)}, the model in {args.load_model} "
                             f"{tuple(model.config.table_sizes)}: not the data it was trained "
                             f"for")
        loader = BatchLoader(data, args.test_mini_batch_size, args.split, shuffle=False,
                             prefetch=args.prefetch)
        if args.threads == "auto":
            loader = GovernedLoader(loader, ThreadGovernor(), say)
        else:
            set_threads(args.threads)
        y, p, _ = predict_all(model, loader)
    _write(args.output, p.astype(np.float32), y)
    say(f"Wrote {p.size:,} probabilities to {args.output}")
    say("Against the file's labels: " + format_eval(evaluate(y, p)))
    return 0

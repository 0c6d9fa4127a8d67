"""`npdlrm predict`: click probabilities of a processed data file from a checkpoint."""
import numpy as np

from ..atomic import atomic_h5, atomic_write
from ..checkpoint import load_checkpoint
from ..diskspace import h5_size


def add_arguments(p):
    p.description = ("Write the click probability of every row of a processed Criteo HDF5 "
                     "file (or one split of it), in file order, using a checkpoint.")
    p.add_argument("--load-model", required=True, help="checkpoint written by npdlrm train")
    p.add_argument("--processed-data-file", required=True, help="processed HDF5 data file")
    p.add_argument("--split", choices=["all", "train", "test", "val"], default="all",
                   help="rows to predict (default all)")
    p.add_argument("--test-mini-batch-size", type=int, default=16384,
                   help="rows per forward pass (default 16384)")
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
    model = load_checkpoint(args.load_model, with_optimizer=False,
                            verify=not args.no_verify).model
    with open_processed(args.processed_data_file) as data:
        if tuple(data.table_sizes) != tuple(model.config.table_sizes):
            raise ValueError(f"{args.processed_data_file} has table sizes "
                             f"{tuple(data.table_sizes)}, the model in {args.load_model} "
                             f"{tuple(model.config.table_sizes)}: not the data it was trained "
                             f"for")
        loader = BatchLoader(data, args.test_mini_batch_size, args.split, shuffle=False,
                             prefetch=2)
        y, p, _ = predict_all(model, loader)
    _write(args.output, p.astype(np.float32), y)
    say(f"Wrote {p.size:,} probabilities to {args.output}")
    say("Against the file's labels: " + format_eval(evaluate(y, p)))
    return 0

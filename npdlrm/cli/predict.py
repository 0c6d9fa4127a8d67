"""`npdlrm predict`: click probabilities of a processed data file from a checkpoint."""
import os

import numpy as np

from ..atomic import atomic_write
from ..checkpoint import load_checkpoint


def add_arguments(p):
    p.description = ("Write the click probability of every row of a processed Criteo HDF5 "
                     "file (or one split of it), in file order, using a checkpoint.")
    p.add_argument("--load-model", required=True, help="checkpoint written by npdlrm train")
    p.add_argument("--processed-data-file", required=True, help="processed HDF5 data file")
    p.add_argument("--split", choices=["all", "train", "test", "val"], default="all",
                   help="rows to predict (default all)")
    p.add_argument("--test-mini-batch-size", type=int, default=16384,
                   help="rows per forward pass (default 16384)")
    p.add_argument("-o", "--output", required=True,
                   help="output file: .npy (float32 array), .h5 (dataset 'probability' "
                        "beside 'label'), or text (one probability per line)")


def _write(path, probs, labels):
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.partial")
    with atomic_write(path, tmp):
        if path.endswith(".npy"):
            with open(tmp, "wb") as f:
                np.save(f, probs)
        elif path.endswith((".h5", ".hdf5")):
            import h5py
            with h5py.File(tmp, "w") as f:
                f.create_dataset("probability", data=probs)
                f.create_dataset("label", data=labels)
        else:
            np.savetxt(tmp, probs, fmt="%.8g")


def run(args, say=print):
    from ..data.h5data import open_processed
    from ..data.loader import BatchLoader
    from ..metrics import evaluate
    from ..trainer import predict_all
    from .report import format_eval
    if args.test_mini_batch_size <= 0:
        raise ValueError(f"--test-mini-batch-size must be positive, got "
                         f"{args.test_mini_batch_size}")
    model = load_checkpoint(args.load_model, with_optimizer=False).model
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

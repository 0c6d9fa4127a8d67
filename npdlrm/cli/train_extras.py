"""`npdlrm train`'s optional outputs: TensorBoard files, the MLPerf line and log events,
and the reference's --debug-mode prints."""
import os
from contextlib import closing

import numpy as np

from ..mlperf import MlperfEventReporter, MlperfReporter, mllog_or_none
from ..trainer import ReporterTee

MLPERF_LOG = "dlrm.log"  # where MLPerf events go (the reference: dlrm.log beside its script)


def with_extras(args, reporter, say):
    """`reporter` with what --tensor-board-filename, --mlperf-logging and the thresholds
    add; reporter itself when none of them is set."""
    extras = []
    if args.mlperf_logging or args.mlperf_acc_threshold > 0 or args.mlperf_auc_threshold > 0:
        extras.append(MlperfReporter(say))
    if args.tensor_board_filename:
        from ..tensorboard import TensorBoardReporter
        extras.append(TensorBoardReporter(args.tensor_board_filename))
        say(f"Writing TensorBoard events into {args.tensor_board_filename}")
    if args.mlperf_logging:
        mllog = mllog_or_none()
        if mllog is None:
            say("MLPerf log events: not written (the mlperf-logging package is not "
                "installed); the evaluation lines are printed")
        else:
            extras.append(MlperfEventReporter(mllog, os.path.abspath(MLPERF_LOG), args))
            say(f"Writing MLPerf log events to {MLPERF_LOG}")
    return ReporterTee(reporter, *extras) if extras else reporter


def debug_architecture(model, loader, num_batches, say):
    """The reference's --debug-mode prints before training: the architecture, then every
    training batch of the first epoch (up to num_batches when > 0)."""
    cfg = model.config
    say("model arch:")
    say(f"mlp top arch {len(cfg.top_sizes) - 1} layers, with input to output dimensions:")
    say(str(np.array(cfg.top_sizes)))
    say("# of interactions")
    say(str(cfg.top_input_width))
    say(f"mlp bot arch {len(cfg.bottom_mlp) - 1} layers, with input to output dimensions:")
    say(str(np.array(cfg.bottom_mlp)))
    say("# of features (sparse and dense)")
    say(str(cfg.num_features))
    say("dense feature size")
    say(str(cfg.num_dense))
    say("sparse feature size")
    say(str(cfg.embedding_dim))
    say(f"# of embeddings (= # of sparse features) {cfg.num_tables}, with dimensions "
        f"{cfg.embedding_dim}x:")
    say(str(np.array(cfg.table_sizes)))
    say("data (inputs and targets):")
    with np.printoptions(precision=4), closing(loader.epoch(0)) as batches:
        for j, mb in enumerate(batches):
            if num_batches > 0 and j >= num_batches:
                break
            say(f"mini-batch: {j}")
            say(str(np.asarray(mb.dense)))
            lengths = [np.diff(np.r_[np.asarray(o)[:mb.size], np.asarray(i).size])
                       for i, o in zip(mb.indices, mb.offsets)]
            say(str(np.array(lengths)))  # bag lengths: tables x samples
            say(str([np.asarray(i) for i in mb.indices]))
            say(str(np.asarray(mb.labels).reshape(-1, 1)))


def debug_parameters(model, title, say, precision=5):
    """Every parameter, the reference's order: the tables, then the bottom and top MLPs'
    weights and biases."""
    say(title)
    state = model.state_dict()
    tables = sorted((n for n in state if n.startswith("embeddings.")),
                    key=lambda n: int(n.split(".")[1]))
    with np.printoptions(precision=precision):
        for name in tables + [n for n in state if not n.startswith("embeddings.")]:
            say(str(state[name]))

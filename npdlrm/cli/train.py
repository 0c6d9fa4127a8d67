"""`npdlrm train`: build the data, model and optimizer from the flags; run the Trainer."""
import os
import sys
import time

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import DLRMConfig, parse_dashed
from ..model import DLRM
from ..optimizers import Optimizer
from ..profile import StageTimes
from ..threads import ThreadGovernor, set_threads
from ..trainer import Reporter, Trainer, TrainState, evaluate
from .export_onnx import check_save_onnx, save_onnx_at_end
from .quantize import quantized_for_eval
from .report import ConsoleReporter, GovernedReporter, JsonlLog, format_eval
from .train_extras import debug_architecture, debug_parameters, with_extras
from .embedding_flags import embedding_variants
from .train_flags import build_parser, parse_train_args

# settings that fix which rows a (epoch, batch) position means: a resume must keep them
POSITION_SETTINGS = ("mini_batch_size", "numpy_rand_seed", "data_generation", "data_randomize",
                     "data_size", "num_batches", "rand_data_dist", "data_trace_file",
                     "mlperf_bin_shuffle")


def add_arguments(parser):
    build_parser(parser)


def synthetic_loaders(args):
    from ..data.synthetic import SyntheticData, SyntheticLoader
    sizes = parse_dashed(args.arch_embedding_size, "--arch-embedding-size")
    num_dense = parse_dashed(args.arch_mlp_bot, "--arch-mlp-bot")[0]
    if (args.data_generation == "random" and args.rand_data_dist) or \
            (args.data_generation == "synthetic" and args.data_trace_file):
        return reference_stream_loaders(args, num_dense, sizes)
    common = dict(num_dense=num_dense, table_sizes=sizes,
                  distribution="random" if args.data_generation == "random" else "power-law",
                  exponents=(args.power_law_exponent[0] if len(args.power_law_exponent) == 1
                             else args.power_law_exponent),
                  bag_size=args.num_indices_per_lookup,
                  fixed_bag_size=args.num_indices_per_lookup_fixed, seed=args.numpy_rand_seed)
    n_train = max(args.data_size, args.num_batches * args.mini_batch_size)
    train = SyntheticData(num_samples=n_train, **common)
    test = SyntheticData(num_samples=args.test_data_size, **common)
    return (SyntheticLoader(train, args.mini_batch_size, "train"),
            SyntheticLoader(test, args.test_mini_batch_size, "test"), sizes,
            f"{args.data_generation} data, {n_train:,} training samples")


def reference_stream_loaders(args, num_dense, sizes):
    """The reference's own random (--rand-data-dist) or trace (--data-trace-file) stream;
    as in the reference, the test batches are the training stream again."""
    from ..data.random_input import ReferenceStream, ReferenceStreamLoader
    from ..data.trace import read_profile, table_profile_paths
    trace = args.data_generation == "synthetic"
    profiles = [read_profile(p) for p in table_profile_paths(args.data_trace_file, len(sizes))] \
        if trace else None
    n = args.num_batches * args.mini_batch_size if args.num_batches else args.data_size
    stream = ReferenceStream(num_dense, sizes, n, args.num_indices_per_lookup,
                             args.num_indices_per_lookup_fixed,
                             "trace" if trace else args.rand_data_dist, args.rand_data_min,
                             args.rand_data_max, args.rand_data_mu, args.rand_data_sigma,
                             profiles, args.data_trace_enable_padding, args.numpy_rand_seed)
    what = f"trace {args.data_trace_file}" if trace else f"{args.rand_data_dist} rows"
    # the test labels are rounded: the reference compares its predictions with the raw
    # uniform labels unless --round-targets
    return (ReferenceStreamLoader(stream, args.mini_batch_size,
                                  round_labels=args.round_targets),
            ReferenceStreamLoader(stream, args.test_mini_batch_size, round_labels=True), sizes,
            f"the reference's {args.data_generation} stream ({what}), {n:,} samples")


def reference_file_loaders(args, data):
    """Loaders over the reference's processed files (reference_files.locate_reference)."""
    from ..data.loader import BatchLoader, BlockLoader
    if data.kind == "bin":
        train = BlockLoader(data, args.mini_batch_size, "train",
                            shuffle=args.mlperf_bin_shuffle, seed=args.numpy_rand_seed)
        test = BlockLoader(data, args.test_mini_batch_size, "test")
    else:  # day files are read in order, as the reference reads them (shuffled when made)
        shuffle = data.kind == "npz" and loader_shuffle(args)
        train = BatchLoader(data, args.mini_batch_size, "train", shuffle=shuffle,
                            seed=args.numpy_rand_seed)
        test = BatchLoader(data, args.test_mini_batch_size, "test", shuffle=False)
    kind = {"npz": "processed npz", "days": "day files", "bin": "MLPerf binary files"}
    return train, test, data.table_sizes, f"the reference's {kind[data.kind]} " \
                                          f"{data.path}, {data.num_rows:,} rows"


def loader_shuffle(args):
    """BatchLoader's shuffle for --data-randomize: total, day (within each day) or none."""
    return {"total": True, "day": "day", "none": False}[args.data_randomize]


def processed_path(args):
    if args.processed_data_file:
        return args.processed_data_file
    return args.raw_data_file.rstrip("/") + ".h5"


def dataset_loaders(args, say):
    from ..data.h5data import open_processed
    from ..data.loader import BatchLoader
    from ..data.reference_locate import locate_reference
    ref = locate_reference(args.processed_data_file, args.raw_data_file, args.data_set,
                           args.memory_map, args.mlperf_bin_loader, args.max_ind_range)
    if ref is not None:
        return reference_file_loaders(args, ref)
    path = processed_path(args)
    if not os.path.exists(path):
        if not args.raw_data_file:
            raise ValueError(f"processed data file {path} does not exist and no "
                             f"--raw-data-file was given to make it")
        from ..data.preprocess import preprocess_criteo
        say(f"Preprocessing {args.raw_data_file} into {path} (once; later runs reuse it)")
        report = preprocess_criteo(args.raw_data_file, path, dataset=args.data_set,
                                   max_ind_range=args.max_ind_range, strict=args.strict,
                                   sub_sample_rate=args.data_sub_sample_rate,
                                   sub_sample_seed=args.numpy_rand_seed)
        say(f"Preprocessed {report.rows:,} rows, {report.malformed_rows:,} malformed rows "
            f"skipped")
        for warning in report.warnings:
            say(f"warning: {warning}")
    data = open_processed(path)
    done = data.preprocessing.get("max_ind_range", -1)
    if args.max_ind_range != done and args.max_ind_range > 0:
        raise ValueError(f"{path} was preprocessed with --max-ind-range {done}, this run asks "
                         f"for {args.max_ind_range}: preprocess again into another file")
    rate = data.preprocessing.get("sub_sample_rate", 0.0)
    if args.data_sub_sample_rate != rate and args.data_sub_sample_rate > 0:
        raise ValueError(f"{path} was preprocessed with --data-sub-sample-rate {rate}, this "
                         f"run asks for {args.data_sub_sample_rate}: preprocess again into "
                         f"another file")
    train = BatchLoader(data, args.mini_batch_size, "train", shuffle=loader_shuffle(args),
                        seed=args.numpy_rand_seed)
    test = BatchLoader(data, args.test_mini_batch_size, "test", shuffle=False)
    return train, test, data.table_sizes, f"Criteo {data.dataset} from {path}, " \
                                          f"{data.num_rows:,} rows"


def model_config(args, table_sizes):
    """The DLRMConfig the flags describe, with the data's table sizes."""
    return DLRMConfig.from_arch(parse_dashed(args.arch_mlp_bot, "--arch-mlp-bot"),
                                args.arch_mlp_top, table_sizes, args.arch_sparse_feature_size,
                                args.arch_interaction_op, args.arch_interaction_itself,
                                loss=args.loss_function, loss_weights=args.loss_weights,
                                loss_threshold=args.loss_threshold,
                                activation=args.activation_function,
                                **embedding_variants(args))


def build_model(args, table_sizes, init=None):
    if getattr(args, "mmap_embeddings", False):  # tables in a mapped working copy
        from ..mmap_tables import build_mapped_model, working_folder
        return build_mapped_model(model_config(args, table_sizes), working_folder(args),
                                  seed=args.numpy_rand_seed, init=init or args.init)
    return DLRM(model_config(args, table_sizes), seed=args.numpy_rand_seed,
                init=init or args.init, qr_init=args.qr_init,
                device="gpu" if getattr(args, "use_gpu", False) else "cpu")


def build_optimizer(args):
    return Optimizer(args.optimizer, lr=args.learning_rate,
                     num_warmup_steps=args.lr_num_warmup_steps,
                     decay_start_step=args.lr_decay_start_step,
                     num_decay_steps=args.lr_num_decay_steps)


def open_log(args):
    path = args.log_file
    if path is None:
        path = os.path.join("runs", time.strftime("npdlrm-%Y%m%d-%H%M%S.jsonl"))
    return JsonlLog(path) if path else None


def check_resume(run, args):
    for name in POSITION_SETTINGS:
        if name in run and run[name] != getattr(args, name):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"the checkpoint was trained with {flag} {run[name]!r}, this run "
                             f"has {getattr(args, name)!r}: its position in the data would "
                             f"name other rows; use the same {flag}")


class LocalSetup:
    """How `npdlrm train` builds, loads and saves its model: here, in one process.
    `npdlrm.parallel.run.DistributedSetup` does the same over MPI."""

    is_root = True  # prints, draws the progress bar and writes the log
    adapts_threads = True  # --threads auto: follow the cores other processes leave free

    def loaders(self, args, say):
        if args.data_generation == "dataset":
            return dataset_loaders(args, say)
        return synthetic_loaders(args)

    def build(self, args, table_sizes, init=None):
        return build_model(args, table_sizes, init)

    def load(self, path, model, optimizer, with_optimizer, verify=True):
        return load_checkpoint(path, model=model, optimizer=optimizer,
                               with_optimizer=with_optimizer, verify=verify)

    save = staticmethod(save_checkpoint)

    def describe(self, model):
        """Extra words on how the model is laid out (none in one process)."""
        return ""

    def wrap_reporter(self, reporter, model):
        return reporter

    def connect(self, model, loaders):
        """Tell the loaders what the model needs of each batch (here: everything)."""

    def finish(self, model, say):
        pass


def run(args, setup=None):
    setup = setup or LocalSetup()
    if args.test_mini_batch_size == -1:
        args.test_mini_batch_size = args.mini_batch_size
    log = open_log(args) if setup.is_root else None
    if setup.is_root:
        reporter = ConsoleReporter(args.progress, args.print_time, args.print_wall_time,
                                   args.print_precision, log)
    else:
        reporter = SilentReporter()
    try:
        return _run(args, reporter, log, setup)
    finally:
        if log is not None:
            log.close()


class SilentReporter(Reporter):
    """What the ranks other than 0 report: nothing."""

    def say(self, text):
        pass


def _run(args, reporter, log, setup):
    say = reporter.say
    check_save_onnx(args, type(setup) is LocalSetup)
    if getattr(args, "mmap_embeddings", False) and type(setup) is not LocalSetup:
        raise ValueError("--mmap-embeddings runs in one process (not under mpirun)")
    if getattr(args, "use_gpu", False) and type(setup) is not LocalSetup:
        raise ValueError("--use-gpu runs in one process for now (not under mpirun): "
                         "multi-GPU training is not built")
    train_ld, test_ld, sizes, about = setup.loaders(args, say)
    if args.data_generation == "dataset":
        bottom_in = parse_dashed(args.arch_mlp_bot, "--arch-mlp-bot")[0]
        if bottom_in != 13:
            raise ValueError(f"Criteo rows have 13 dense features; --arch-mlp-bot starts with "
                             f"{bottom_in}")
    # weights about to be loaded need no initialisation
    model = setup.build(args, sizes, init="none" if args.load_model else None)
    reporter = setup.wrap_reporter(reporter, model)
    if args.threads != "auto":
        set_threads(args.threads)
    elif setup.adapts_threads:
        reporter = GovernedReporter(reporter, ThreadGovernor())
    setup.connect(model, (train_ld, test_ld))
    optimizer = build_optimizer(args)
    run_info = {name: getattr(args, name) for name in POSITION_SETTINGS}
    state = TrainState()
    if args.load_model:
        verify = not args.no_verify  # the checksum pass over every tensor read
        if args.inference_only:
            ckpt = setup.load(args.load_model, model, None, False, verify)
        else:
            ckpt = setup.load(args.load_model, model, optimizer, True, verify)
        if not args.inference_only:
            check_resume(ckpt.train_state.get("run", {}), args)
            state = TrainState.from_dict(ckpt.train_state)
        say(f"Loaded {args.load_model} (step {ckpt.train_state.get('step', '?')})")
    if log is not None:
        say(f"Logging metrics to {log.path}")
        log.write({"event": "start", "command": "train", "argv": sys.argv[1:],
                   "settings": vars(args), "data": about,
                   "parameters": model.num_parameters()})
    if args.inference_only:
        model = quantized_for_eval(args, model, type(setup) is LocalSetup, say)
        record = {"event": "eval", "step": state.step, "epoch": 0,
                  **evaluate(model, test_ld, mlperf=args.mlperf_logging)}
        (with_extras(args, reporter, say) if setup.is_root else reporter).evaluate(record)
        save_onnx_at_end(args, model, say)
        return 0
    trainer = Trainer(model, optimizer, train_ld, test_ld, nepochs=args.nepochs,
                      num_batches=args.num_batches, print_freq=args.print_freq,
                      test_freq=args.test_freq, round_targets=args.round_targets,
                      save_path=args.save_model or None, reporter=reporter, state=state,
                      run_info=run_info, save_fn=setup.save,
                      grad_accum=args.mlperf_grad_accum_iter, mlperf=args.mlperf_logging,
                      stop_auc=args.mlperf_auc_threshold,
                      stop_accuracy=args.mlperf_acc_threshold,
                      best=ckpt.train_state.get("best") if args.load_model else None)
    if setup.is_root:  # TensorBoard files and MLPerf events: once, not per rank
        trainer.reporter = with_extras(args, reporter, say)
    debug = args.debug_mode and isinstance(model, DLRM)  # one process (MPI: not printed)
    if debug:
        debug_architecture(model, train_ld, args.num_batches, say)
        debug_parameters(model, "initial parameters (weights and bias):", say,
                         args.print_precision)
    profile = None
    if args.enable_profiling and hasattr(model, "profile"):
        profile = model.profile = StageTimes()
    say(f"npdlrm train: {about}; {model.config.num_tables} tables, "
        f"{model.num_parameters():,} parameters{setup.describe(model)}; "
        f"{trainer.total_steps - state.step:,} steps of "
        f"{args.mini_batch_size} ({args.nepochs} epochs of {trainer.batches_per_epoch} "
        f"batches), {args.optimizer} lr={args.learning_rate}")
    last = trainer.fit()
    if last is not None:
        say("Final held-out evaluation: " + format_eval(last, args.print_precision))
    if profile is not None:
        say(profile.format())
    if debug:
        debug_parameters(model, "updated parameters (weights and bias):", say,
                         args.print_precision)
    setup.finish(model, say)
    save_onnx_at_end(args, model, say)
    return 0

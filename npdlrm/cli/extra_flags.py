"""`npdlrm train` flag groups beyond the basics: inference (quantization, ONNX), the
reference's data (its random stream, traces, sub-sampling, processed files), and MLPerf,
TensorBoard, activations and debugging. `add_extra_flags` adds them to the parser and
`check_extra_flags` checks their values (train_flags.check_values calls it)."""


def add_extra_flags(p):
    """The three groups, on argparse parser `p`."""
    from .train_flags import _bool_flag  # train_flags imports this module
    q = p.add_argument_group("inference: quantization and ONNX export")
    q.add_argument("--quantize-emb-with-bit", type=int, choices=(4, 8, 16, 32), default=32,
                   help="with --inference-only: evaluate with the tables stored in 4 or 8 "
                        "bits (row-wise int4 / int8, a scale and bias per row) or 16 "
                        "(float16); 32: float32 (default)")
    q.add_argument("--quantize-mlp-with-bit", type=int, choices=(8, 16, 32), default=32,
                   help="with --inference-only: evaluate with the MLP weights stored in 8 "
                        "bits (int8 per output channel) or 16 (float16), multiplied in "
                        "float32; 32: float32 (default)")
    q.add_argument("--save-onnx", nargs="?", const="npdlrm.onnx", default="", metavar="FILE",
                   help="at the end of the run, write the model as an ONNX graph to FILE "
                        "(default npdlrm.onnx; needs the onnx package)")
    r = p.add_argument_group(
        "the reference's data: its random stream, traces, sub-sampling and processed files")
    r.add_argument("--rand-data-dist", choices=["uniform", "gaussian"], default=None,
                   help="random data: draw the reference's own stream (same batches, bit for "
                        "bit; random labels) with uniform rows or gaussian ones "
                        "(N(mu, sigma) clipped to [min, max]); not given: npdlrm's planted "
                        "generator")
    r.add_argument("--rand-data-min", type=float, default=0.0, metavar="X",
                   help="gaussian rows: the smallest row (default 0)")
    r.add_argument("--rand-data-max", type=float, default=1.0, metavar="X",
                   help="gaussian rows: the largest row (default 1)")
    r.add_argument("--rand-data-mu", type=float, default=-1.0, metavar="X",
                   help="gaussian rows: the mean (-1: the middle of [min, max])")
    r.add_argument("--rand-data-sigma", type=float, default=1.0, metavar="X",
                   help="gaussian rows: the standard deviation (default 1)")
    r.add_argument("--data-trace-file", default=None, metavar="FILE",
                   help="synthetic data: replay the reference's trace profiles (dist files; "
                        "each 'j' of the file name is replaced by the table number, e.g. "
                        "./input/dist_emb_j.log) in the reference's stream; not given: "
                        "npdlrm's power-law generator")
    _bool_flag(r, "--data-trace-enable-padding",
               "trace replay: once every stack distance is possible, draw no new rows")
    r.add_argument("--data-sub-sample-rate", type=float, default=0.0, metavar="RATE",
                   help="preprocessing: drop each negative row of the training days with "
                        "this probability (0: keep all); part of the processed file's "
                        "options")
    r.add_argument("--mlperf-bin-loader", action="store_true",
                   help="read the reference's MLPerf binary files <processed stem>_train.bin "
                        "and _test.bin (table sizes from <raw-data-file>_fea_count.npz), "
                        "one file block per batch")
    r.add_argument("--mlperf-bin-shuffle", action="store_true",
                   help="with --mlperf-bin-loader: read the training blocks in a new random "
                        "order each epoch")
    e = p.add_argument_group("MLPerf, TensorBoard, activations and debugging")
    e.add_argument("--mlperf-logging", action="store_true",
                   help="evaluations also print the reference's line: recall, precision, f1, "
                        "ap, auc and accuracy with the best auc and accuracy so far; with "
                        "the mlperf-logging package installed, MLPerf log events go to "
                        "dlrm.log")
    e.add_argument("--mlperf-acc-threshold", type=float, default=0.0, metavar="X",
                   help="stop after the evaluation whose best accuracy (0..1) exceeds X "
                        "(0: never)")
    e.add_argument("--mlperf-auc-threshold", type=float, default=0.0, metavar="X",
                   help="stop after the evaluation whose best AUC exceeds X (0: never)")
    e.add_argument("--mlperf-grad-accum-iter", type=int, default=1, metavar="K",
                   help="gradient accumulation: one optimizer (and learning-rate) step per "
                        "K batches with the mean of their gradients, as one batch of K x "
                        "--mini-batch-size; prints and tests still count batches")
    e.add_argument("--activation-function", choices=["relu", "sigmoid", "tanh"],
                   default="relu", help="activation of the MLP layers (default relu)")
    e.add_argument("--tensor-board-filename", default=None, metavar="DIR",
                   help="write TensorBoard event files into DIR (the reference's scalars: "
                        "Train/Loss, Test/Acc or mlperf-metrics-test/*); not given: none")
    e.add_argument("--debug-mode", action="store_true",
                   help="print the architecture, every training batch up to --num-batches, "
                        "the initial and the final parameters, as the reference does")


def check_extra_flags(args):
    """ValueError naming the first of these flags with a bad value."""
    for flag in ("quantize_emb_with_bit", "quantize_mlp_with_bit"):
        if getattr(args, flag) != 32 and not args.inference_only:
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(args, flag)} needs "
                             f"--inference-only (quantization is for evaluating a trained "
                             f"model)")
    if not 0.0 <= args.data_sub_sample_rate <= 1.0:
        raise ValueError(f"--data-sub-sample-rate must be in [0, 1], got "
                         f"{args.data_sub_sample_rate}")
    if args.rand_data_dist == "gaussian" and not (
            args.rand_data_sigma >= 0 and 0 <= args.rand_data_min <= args.rand_data_max):
        raise ValueError(f"--rand-data-dist gaussian needs 0 <= --rand-data-min <= "
                         f"--rand-data-max and --rand-data-sigma >= 0, got min "
                         f"{args.rand_data_min}, max {args.rand_data_max}, sigma "
                         f"{args.rand_data_sigma}")
    if args.mlperf_grad_accum_iter < 1:
        raise ValueError(f"--mlperf-grad-accum-iter must be >= 1, got "
                         f"{args.mlperf_grad_accum_iter}")
    for flag in ("mlperf_acc_threshold", "mlperf_auc_threshold"):
        if not 0 <= getattr(args, flag) <= 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be in [0, 1] (0: off), got "
                             f"{getattr(args, flag)}")

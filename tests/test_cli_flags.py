"""`npdlrm train` flags: the reference's names and meanings, a config file, refusals."""
import json

import pytest

from npdlrm.cli import main
from npdlrm.cli.train_flags import STORE_TRUE, UNSUPPORTED, parse_train_args

# the reference's run_kaggle_pt.sh command line, verbatim after the script name
KAGGLE = ("--arch-sparse-feature-size=16 --arch-mlp-bot=13-512-256-64-16 "
          "--arch-mlp-top=512-256-1 --data-generation=dataset --data-set=kaggle "
          "--raw-data-file=./input/train.txt "
          "--processed-data-file=./input/kaggleAdDisplayChallenge_processed.npz "
          "--loss-function=bce --round-targets=True --learning-rate=0.1 --mini-batch-size=128 "
          "--print-freq=1024 --print-time --test-mini-batch-size=16384 "
          "--test-num-workers=16").split()


def test_reference_kaggle_command_line_parses():
    a = parse_train_args(KAGGLE)
    assert a.arch_sparse_feature_size == 16
    assert a.arch_mlp_bot == "13-512-256-64-16" and a.arch_mlp_top == "512-256-1"
    assert a.data_generation == "dataset" and a.data_set == "kaggle"
    assert a.loss_function == "bce" and a.round_targets is True
    assert a.learning_rate == 0.1 and a.mini_batch_size == 128 and a.print_time


def test_reference_defaults():
    a = parse_train_args([])
    assert (a.arch_sparse_feature_size, a.arch_embedding_size, a.arch_mlp_bot,
            a.arch_mlp_top) == (2, "4-3-2", "4-3-2", "4-2-1")
    assert (a.loss_function, a.optimizer, a.learning_rate, a.mini_batch_size, a.nepochs,
            a.numpy_rand_seed, a.print_freq, a.test_freq) == ("mse", "sgd", 0.01, 1, 1, 123,
                                                               1, -1)


@pytest.mark.parametrize("text, value", [("False", False), ("false", False), ("0", False),
                                         ("True", True), ("1", True), ("yes", True)])
def test_bool_flags_read_false_as_false(text, value):
    # the reference's type=bool reads "False" as True; ours reads what it says
    a = parse_train_args(["--round-targets", text, "--num-indices-per-lookup-fixed", text])
    assert a.round_targets is value and a.num_indices_per_lookup_fixed is value


def test_bare_bool_flag_means_true():
    assert parse_train_args(["--round-targets"]).round_targets is True


def test_bool_flag_refuses_other_words():
    with pytest.raises(SystemExit):
        parse_train_args(["--round-targets", "maybe"])


@pytest.mark.parametrize("argv, name, why", [
    (["--sync-dense-params", "False"], "--sync-dense-params", "allreduce"),
    (["--plot-compute-graph"], "--plot-compute-graph", "autograd graph"),
    (["--data-generation", "internal"], "--data-generation internal", "not public"),
])
def test_refused_reference_flags_name_the_flag_and_the_reason(argv, name, why):
    with pytest.raises(ValueError, match=name) as e:
        parse_train_args(argv)
    assert why in str(e.value)


def test_use_gpu_without_a_gpu_names_the_reason():
    from npdlrm.backend import gpu_unavailable_reason
    why = gpu_unavailable_reason()
    if why is None:
        pytest.skip("a GPU is usable here: --use-gpu is accepted")
    with pytest.raises(ValueError, match="--use-gpu") as e:
        parse_train_args(["--use-gpu"])
    assert why in str(e.value)


def test_unsupported_flags_at_their_reference_default_pass():
    a = parse_train_args(["--activation-function", "relu", "--qr-collisions", "4",
                          "--sync-dense-params", "True"])
    assert a.activation_function == "relu"


@pytest.mark.parametrize("flag", sorted(UNSUPPORTED))
def test_every_unsupported_flag_is_refused_when_set(flag):
    default = UNSUPPORTED[flag][0]
    if flag in STORE_TRUE:
        argv = [flag]
    elif isinstance(default, bool):
        argv = [flag, str(not default)]
    elif isinstance(default, (int, float)):
        argv = [flag, "77"]
    else:
        argv = [flag, "something-else"]
    with pytest.raises(ValueError, match=flag):
        parse_train_args(argv)


def test_mlperf_tensorboard_activation_debug_flags_are_real_flags():
    a = parse_train_args(["--mlperf-logging", "--mlperf-acc-threshold", "0.79",
                          "--mlperf-auc-threshold", "0.8025", "--mlperf-grad-accum-iter", "4",
                          "--activation-function", "tanh", "--tensor-board-filename", "tb",
                          "--debug-mode"])
    assert (a.mlperf_logging, a.mlperf_acc_threshold, a.mlperf_auc_threshold,
            a.mlperf_grad_accum_iter, a.activation_function, a.tensor_board_filename,
            a.debug_mode) == (True, 0.79, 0.8025, 4, "tanh", "tb", True)
    a = parse_train_args([])
    assert (a.mlperf_logging, a.mlperf_grad_accum_iter, a.activation_function,
            a.tensor_board_filename, a.debug_mode) == (False, 1, "relu", None, False)
    with pytest.raises(SystemExit):  # the reference ignores the value; npdlrm names three
        parse_train_args(["--activation-function", "gelu"])


@pytest.mark.parametrize("argv, words", [
    (["--mlperf-grad-accum-iter", "0"], "--mlperf-grad-accum-iter must be >= 1"),
    (["--mlperf-auc-threshold", "1.5"], "--mlperf-auc-threshold must be in"),
    (["--mlperf-acc-threshold", "-0.1"], "--mlperf-acc-threshold must be in"),
])
def test_bad_mlperf_values_are_named(argv, words):
    with pytest.raises(ValueError, match=words):
        parse_train_args(argv)


def test_quantize_and_onnx_flags_are_real_flags():
    a = parse_train_args(["--load-model", "c.h5", "--inference-only",
                          "--quantize-emb-with-bit", "4", "--quantize-mlp-with-bit", "8"])
    assert (a.quantize_emb_with_bit, a.quantize_mlp_with_bit, a.save_onnx) == (4, 8, "")
    assert parse_train_args(["--save-onnx"]).save_onnx == "npdlrm.onnx"  # the reference's
    assert parse_train_args(["--save-onnx", "m.onnx"]).save_onnx == "m.onnx"
    for argv in (["--quantize-emb-with-bit", "2"], ["--quantize-mlp-with-bit", "4"]):
        with pytest.raises(SystemExit):
            parse_train_args(["--load-model", "c.h5", "--inference-only", *argv])


def test_unknown_flags_are_errors():
    with pytest.raises(SystemExit):
        parse_train_args(["--no-such-flag"])


@pytest.mark.parametrize("argv, words", [
    (["--mini-batch-size", "0"], "--mini-batch-size"),
    (["--learning-rate", "-1"], "--learning-rate"),
    (["--nepochs", "-2"], "--nepochs"),
    (["--inference-only"], "--load-model"),
    (["--quantize-emb-with-bit", "8"], "--quantize-emb-with-bit 8 needs --inference-only"),
    (["--quantize-mlp-with-bit", "16"], "--quantize-mlp-with-bit 16 needs --inference-only"),
    (["--data-generation", "dataset"], "--processed-data-file"),
])
def test_bad_values_are_named(argv, words):
    with pytest.raises(ValueError, match=words):
        parse_train_args(argv)


def test_config_file_toml_and_json(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('mini-batch-size = 64\narch_mlp_bot = "13-32-8"\nround-targets = true\n'
                    'optimizer = "adagrad"\n')
    a = parse_train_args(["--config", str(toml), "--learning-rate", "0.2"])
    assert (a.mini_batch_size, a.arch_mlp_bot, a.round_targets, a.optimizer,
            a.learning_rate) == (64, "13-32-8", True, "adagrad", 0.2)
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"mini_batch_size": 32, "nepochs": 3}))
    a = parse_train_args(["--config", str(js), "--mini-batch-size", "16"])
    assert (a.mini_batch_size, a.nepochs) == (16, 3)  # the command line wins


@pytest.mark.parametrize("text, words", [
    ('no-such-setting = 1\n', "no-such-setting"),
    ('optimizer = "lbfgs"\n', "optimizer"),
    ('arch-mlp-bot = "13-x"\n', "arch-mlp-bot"),
    ('mini-batch-size = \n', "run.toml"),
])
def test_bad_config_files_are_named(tmp_path, text, words):
    f = tmp_path / "run.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=words):
        parse_train_args(["--config", str(f)])


def test_cli_reports_errors_without_traceback(capsys):
    assert main(["train", "--qr-flag", "--md-flag"]) == 2
    err = capsys.readouterr().err
    assert "--qr-flag" in err and "Traceback" not in err


def test_help_explains_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--arch-mlp-bot", "--round-targets", "--save-model", "--load-model",
                 "--config", "--log-file", "npdlrm refuses unless left"):
        assert flag in out, flag


def test_reference_data_flags_are_real_flags():
    a = parse_train_args(["--rand-data-dist", "gaussian", "--rand-data-min", "2",
                          "--rand-data-max", "9", "--rand-data-mu", "4", "--rand-data-sigma",
                          "3", "--data-trace-file", "t_j.log", "--data-trace-enable-padding",
                          "False", "--data-sub-sample-rate", "0.875", "--mlperf-bin-loader",
                          "--mlperf-bin-shuffle"])
    assert (a.rand_data_dist, a.rand_data_min, a.rand_data_max, a.rand_data_mu,
            a.rand_data_sigma) == ("gaussian", 2.0, 9.0, 4.0, 3.0)
    assert a.data_trace_file == "t_j.log" and a.data_trace_enable_padding is False
    assert a.data_sub_sample_rate == 0.875 and a.mlperf_bin_loader and a.mlperf_bin_shuffle
    for flag in ("--rand-data-dist", "--data-trace-file", "--data-sub-sample-rate",
                 "--mlperf-bin-loader", "--mlperf-bin-shuffle"):
        assert flag not in UNSUPPORTED
    d = parse_train_args([])  # not given: npdlrm's own generators, nothing thinned
    assert d.rand_data_dist is None and d.data_trace_file is None
    assert d.data_sub_sample_rate == 0.0 and not d.mlperf_bin_loader


@pytest.mark.parametrize("argv, words", [
    (["--data-sub-sample-rate", "1.5"], "--data-sub-sample-rate"),
    (["--data-sub-sample-rate", "-0.1"], "--data-sub-sample-rate"),
    (["--rand-data-dist", "gaussian", "--rand-data-min", "5", "--rand-data-max", "2"],
     "--rand-data-min"),
    (["--rand-data-dist", "gaussian", "--rand-data-sigma", "-1"], "--rand-data-sigma"),
])
def test_bad_reference_data_values_are_named(argv, words):
    with pytest.raises(ValueError, match=words):
        parse_train_args(argv)


def test_rand_data_dist_refuses_other_distributions():
    with pytest.raises(SystemExit):
        parse_train_args(["--rand-data-dist", "zipf"])

"""`npdlrm quantize`, `predict` with serving files or quantize flags, and `train
--inference-only --quantize-*-with-bit`, on a model trained on the real Criteo sample."""
import pathlib

import numpy as np
import pytest

from npdlrm.cli import main
from npdlrm.metrics import evaluate

SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared/data/criteo_sample/train_10k.txt.gz"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(),
                                reason=f"the Criteo sample {SAMPLE} is absent")

ARCH = ["--arch-sparse-feature-size", "16", "--arch-mlp-bot", "13-64-16",
        "--arch-mlp-top", "64-1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder, processed data, float32 checkpoint) of one epoch on the sample."""
    from npdlrm.data.preprocess import preprocess_criteo
    tmp = tmp_path_factory.mktemp("quant")
    h5, ckpt = str(tmp / "criteo.h5"), str(tmp / "ckpt.h5")
    preprocess_criteo(str(SAMPLE), h5, dataset="kaggle")
    assert main(["train", "--data-generation", "dataset", "--processed-data-file", h5, *ARCH,
                 "--loss-function", "bce", "--round-targets", "True", "--optimizer",
                 "adagrad", "--learning-rate", "0.02", "--mini-batch-size", "128",
                 "--test-mini-batch-size", "1000", "--progress", "False", "--log-file", "",
                 "--save-model", ckpt]) == 0
    return tmp, h5, ckpt


def predict(h5, model, out, *flags):
    assert main(["predict", "--load-model", model, "--processed-data-file", h5, "-o", out,
                 *flags]) == 0
    return np.load(out)


def labels(h5):
    from npdlrm.data.h5data import open_processed
    with open_processed(h5) as data:
        return data.read(0, data.num_rows)[2]


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_serving_file_scores_like_predict_with_the_flag(trained, bits, capsys):
    tmp, h5, ckpt = trained
    serve = str(tmp / f"serve{bits}.h5")
    assert main(["quantize", "--load-model", ckpt, "--bits", str(bits), "-o", serve]) == 0
    assert f"Wrote {serve}" in capsys.readouterr().out
    p_serve = predict(h5, serve, str(tmp / "a.npy"))
    p_flag = predict(h5, ckpt, str(tmp / "b.npy"), "--quantize-emb-with-bit", str(bits))
    assert np.array_equal(p_serve, p_flag)
    p32 = predict(h5, ckpt, str(tmp / "c.npy"))
    y = labels(h5)
    auc32, aucq = evaluate(y, p32)["auc"], evaluate(y, p_serve)["auc"]
    # measured on these 10,000 rows: |dAUC| 1e-6 (float16), 7e-6 (int8), 5e-5 (int4);
    # largest |dp| 6e-5, 1e-3, 1e-2
    assert abs(aucq - auc32) < {16: 1e-4, 8: 1e-3, 4: 5e-3}[bits]
    assert 0 < np.abs(p_serve - p32).max() < {16: 1e-3, 8: 1e-2, 4: 0.1}[bits]


def test_int8_mlp_and_tables_and_the_file_is_small(trained):
    tmp, h5, ckpt = trained
    serve = str(tmp / "serve-8-8.h5")
    assert main(["quantize", "--load-model", ckpt, "--bits", "4", "--mlp-bits", "8",
                 "-o", serve]) == 0
    import h5py
    with h5py.File(ckpt, "r") as f:
        table_bytes = sum(f["params"][n].nbytes for n in f["params"] if "embeddings" in n)
    with h5py.File(serve, "r") as f:
        assert f.attrs["emb_format"] == "int4" and f.attrs["mlp_bits"] == 8
        assert sum(f["tables"][k].nbytes for k in f["tables"]) == table_bytes * 12 // 64
    p = predict(h5, serve, str(tmp / "d.npy"))
    assert ((p > 0) & (p < 1)).all()


def test_inference_only_with_quantize_flags(trained, capsys):
    tmp, h5, ckpt = trained
    capsys.readouterr()
    assert main(["train", "--data-generation", "dataset", "--processed-data-file", h5, *ARCH,
                 "--loss-function", "bce", "--load-model", ckpt, "--inference-only",
                 "--quantize-emb-with-bit", "8", "--quantize-mlp-with-bit", "16",
                 "--test-mini-batch-size", "1000", "--progress", "False",
                 "--log-file", ""]) == 0
    out = capsys.readouterr().out
    assert "Evaluating with tables int8" in out and "MLP weights float16" in out
    assert "auc 0.7" in out


def test_refusals_are_one_line(trained, capsys):
    tmp, h5, ckpt = trained
    assert main(["train", "--quantize-emb-with-bit", "8"]) == 2
    assert "needs --inference-only" in capsys.readouterr().err
    serve = str(tmp / "serve-r.h5")
    assert main(["quantize", "--load-model", ckpt, "--bits", "8", "-o", serve]) == 0
    assert main(["predict", "--load-model", serve, "--processed-data-file", h5,
                 "-o", str(tmp / "x.npy"), "--quantize-emb-with-bit", "4"]) == 2
    assert "quantize again from the training checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["quantize", "--load-model", ckpt, "--bits", "3", "-o", serve])
    assert main(["quantize", "--load-model", str(tmp / "none.h5"), "--bits", "8",
                 "-o", serve]) == 2
    assert "no checkpoint at" in capsys.readouterr().err

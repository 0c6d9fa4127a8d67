"""ONNX export (npdlrm/onnx_export.py) run in onnxruntime against predict, to 1e-5."""
import pathlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed "
                                          "(pip install 'npdlrm[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed "
                                                "(pip install 'npdlrm[onnx]')")

from npdlrm import DLRM  # noqa: E402
from npdlrm.checkpoint import load_checkpoint  # noqa: E402
from npdlrm.cli import main  # noqa: E402
from npdlrm.inference import InferenceModel  # noqa: E402
from npdlrm.onnx_export import build_onnx  # noqa: E402

TOL = 1e-5
SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared/data/criteo_sample/train_10k.txt.gz"


def session(model_or_path):
    src = model_or_path if isinstance(model_or_path, str) else \
        build_onnx(model_or_path).SerializeToString()
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def run(sess, dense, indices, offsets):
    """offsets: (B,) bag starts or (B + 1,) boundaries; the graph takes the starts."""
    B = dense.shape[0]
    feed = {"dense_x": np.asarray(dense, np.float32)}
    for k, (idx, off) in enumerate(zip(indices, offsets)):
        feed[f"indices_{k}"] = np.asarray(idx, np.int64)
        feed[f"offsets_{k}"] = np.asarray(off[:B], np.int64)
    return sess.run(["pred"], feed)[0]


def batch(rng, sizes, B, max_len=5, empty_table=None):
    dense = rng.standard_normal((B, 13)).astype(np.float32)
    idx, off = [], []
    for k, V in enumerate(sizes):
        lengths = rng.integers(0, max_len + 1, B)
        lengths[:2] = 0  # empty bags, the first one included
        if k == empty_table:
            lengths[:] = 0
        o = np.concatenate([[0], np.cumsum(lengths)])
        idx.append(rng.integers(0, V, o[-1]))
        off.append(o[:-1])
    return dense, idx, off


CONFIGS = [dict(), dict(arch_interaction_op="cat"), dict(pooling="mean"),
           dict(arch_interaction_itself=True, loss_threshold=0.02)]


@pytest.mark.parametrize("kw", CONFIGS)
def test_onnxruntime_matches_predict_on_multi_hot_bags(kw):
    model = DLRM.from_arch("13-32-8", "16-8-1", "50-1000-7-300", 8, seed=11, **kw)
    sess = session(model)
    rng = np.random.default_rng(0)
    for B, max_len, empty in ((1, 3, None), (64, 1, None), (257, 12, 2)):
        x = batch(rng, model.config.table_sizes, B, max_len, empty)
        p = model.predict(*x)
        q = run(sess, *x)
        assert q.shape == (B,) and q.dtype == np.float32
        assert np.abs(q - p).max() <= TOL, (kw, B)


@pytest.mark.parametrize("emb,mlp", [(4, 32), (8, 8)])
def test_a_quantized_model_exports_its_dequantized_weights(emb, mlp):
    model = DLRM.from_arch("13-16-8", "8-1", "400-30", 8, seed=2)
    q = InferenceModel.from_model(model, emb, mlp)
    x = batch(np.random.default_rng(1), model.config.table_sizes, 300)
    assert np.abs(run(session(q), *x) - q.predict(*x)).max() <= TOL


SMALL = ("--data-generation synthetic --arch-embedding-size 300-2000-50 "
         "--arch-sparse-feature-size 4 --arch-mlp-bot 13-8-4 --arch-mlp-top 8-1 "
         "--loss-function bce --mini-batch-size 32 --num-batches 9 --num-indices-per-lookup 4 "
         "--test-data-size 500 --test-mini-batch-size 100 --progress False "
         "--log-file").split() + [""]


def test_train_save_onnx_and_export_onnx_from_the_checkpoint(tmp_path, capsys):
    ckpt, a, b = tmp_path / "c.h5", tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert main(["train", *SMALL, "--save-model", str(ckpt), "--save-onnx", str(a)]) == 0
    assert f"Wrote the model as ONNX to {a}" in capsys.readouterr().out
    assert main(["export-onnx", "--load-model", str(ckpt), "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    model = load_checkpoint(str(ckpt)).model
    x = batch(np.random.default_rng(3), model.config.table_sizes, 500, 4)
    assert np.abs(run(session(str(b)), *x) - model.predict(*x)).max() <= TOL
    # the serving file of a quantized model exports too
    serve = tmp_path / "s.h5"
    assert main(["quantize", "--load-model", str(ckpt), "--bits", "4", "-o", str(serve)]) == 0
    assert main(["export-onnx", "--load-model", str(serve), "-o", str(tmp_path / "q.onnx")]) == 0
    q = InferenceModel.from_model(model, 4)
    assert np.abs(run(session(str(tmp_path / "q.onnx")), *x) - q.predict(*x)).max() <= TOL


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"the Criteo sample {SAMPLE} is absent")
def test_exported_criteo_model_matches_npdlrm_predict_on_the_same_batches(tmp_path):
    from npdlrm.data.h5data import open_processed
    from npdlrm.data.loader import BatchLoader
    from npdlrm.data.preprocess import preprocess_criteo
    h5, ckpt = str(tmp_path / "criteo.h5"), str(tmp_path / "ckpt.h5")
    preprocess_criteo(str(SAMPLE), h5, dataset="kaggle")
    assert main(["train", "--data-generation", "dataset", "--processed-data-file", h5,
                 "--arch-sparse-feature-size", "16", "--arch-mlp-bot", "13-64-16",
                 "--arch-mlp-top", "64-1", "--loss-function", "bce", "--optimizer", "adagrad",
                 "--learning-rate", "0.02", "--mini-batch-size", "128", "--num-batches", "30",
                 "--progress", "False", "--log-file", "", "--save-model", ckpt]) == 0
    assert main(["export-onnx", "--load-model", ckpt, "-o", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", "--load-model", ckpt, "--processed-data-file", h5,
                 "--test-mini-batch-size", "2048", "-o", str(tmp_path / "p.npy")]) == 0
    want = np.load(str(tmp_path / "p.npy"))
    sess = session(str(tmp_path / "m.onnx"))
    with open_processed(h5) as data:
        got = np.concatenate([run(sess, mb.dense, mb.indices, mb.offsets) for mb in
                              BatchLoader(data, 2048, "all", shuffle=False).epoch(0)])
    assert got.shape == want.shape == (10000,)
    assert np.abs(got - want).max() <= TOL


def test_export_refuses_without_a_whole_model():
    model = DLRM.from_arch("13-4", "4-1", "10", 4)
    model.embeddings.whole = False
    with pytest.raises(ValueError, match="whole model"):
        build_onnx(model)

"""Real Criteo rows: preprocess, train on the first 8,000, evaluate on the last 2,000;
and the README's walkthrough (preprocess -> train -> evaluate -> resume -> predict)."""
import pathlib

import numpy as np
import pytest

from npdlrm import DLRM, Optimizer
from npdlrm.cli import main
from npdlrm.data.arrays import ArrayData
from npdlrm.data.h5data import open_processed
from npdlrm.data.loader import BatchLoader
from npdlrm.data.preprocess import preprocess_criteo
from npdlrm.trainer import Trainer, evaluate

# ../shared beside the checkout (CI lays a copy of shared/ there too)
SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared/data/criteo_sample/train_10k.txt.gz"
needs_sample = pytest.mark.skipif(not SAMPLE.exists(),
                                  reason=f"the Criteo sample {SAMPLE} is absent")


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    out = tmp_path_factory.mktemp("criteo") / "sample.h5"
    preprocess_criteo(str(SAMPLE), str(out), dataset="kaggle")
    return out


@needs_sample
def test_train_first_8000_evaluate_last_2000(processed):
    with open_processed(str(processed)) as data:
        assert data.num_rows == 10000
        dense, sparse, labels = data.read(0, 10000)
        sizes = data.table_sizes
    first = ArrayData(dense[:8000], [s[:8000] for s in sparse], labels[:8000],
                      table_sizes=sizes)
    last = ArrayData(dense[8000:], [s[8000:] for s in sparse], labels[8000:],
                     table_sizes=sizes)
    model = DLRM.from_arch(arch_mlp_bot="13-64-16", arch_mlp_top="64-1",
                           arch_embedding_size=sizes, arch_sparse_feature_size=16, seed=1)
    opt = Optimizer("adagrad", lr=0.02)
    train_ld = BatchLoader(first, 128, "all", shuffle=True, seed=1)
    held_out = BatchLoader(last, 1000, "all", shuffle=False)
    Trainer(model, opt, train_ld, nepochs=1).fit()  # more epochs overfit 8,000 rows
    metrics = evaluate(model, held_out)
    assert metrics["count"] == 2000
    # a constant predictor scores AUC 0.5 and the log loss of the base rate (about 0.54)
    base = labels[8000:].mean()
    base_loss = -(base * np.log(base) + (1 - base) * np.log(1 - base))
    assert metrics["auc"] > 0.68, metrics  # measured 0.727
    assert metrics["log_loss"] < base_loss - 0.02, (metrics, base_loss)


@needs_sample
def test_readme_walkthrough(tmp_path, capsys):
    h5, ck = str(tmp_path / "criteo.h5"), str(tmp_path / "ckpt-{step}.h5")
    assert main(["preprocess", "--raw-data-file", str(SAMPLE),
                 "--processed-data-file", h5]) == 0
    flags = ["--data-generation", "dataset", "--data-set", "kaggle",
             "--processed-data-file", h5, "--arch-sparse-feature-size", "16",
             "--arch-mlp-bot", "13-64-16", "--arch-mlp-top", "64-1", "--loss-function", "bce",
             "--round-targets", "True", "--optimizer", "adagrad", "--learning-rate", "0.02",
             "--mini-batch-size", "128", "--print-freq", "20", "--test-freq", "40",
             "--test-mini-batch-size", "1000", "--nepochs", "2", "--progress", "False",
             "--log-file", str(tmp_path / "log.jsonl")]
    assert main(["train", *flags, "--save-model", ck]) == 0
    out = capsys.readouterr().out
    assert "Final held-out evaluation: auc 0." in out
    saved = sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("ckpt-*.h5"))
    assert saved[-1] == 2 * 67  # 8,572 training rows = 67 batches of 128 a epoch
    # resume from the first checkpoint: the same final weights as the straight run
    resumed = str(tmp_path / "resumed.h5")
    assert main(["train", *flags, "--load-model", str(tmp_path / f"ckpt-{saved[0]}.h5"),
                 "--save-model", resumed]) == 0
    import h5py
    with h5py.File(str(tmp_path / f"ckpt-{saved[-1]}.h5"), "r") as a, \
            h5py.File(resumed, "r") as b:
        for name in a["params"]:
            assert np.array_equal(a["params"][name][...], b["params"][name][...]), name
    # evaluate only, then predict every test row into a file
    assert main(["train", *flags, "--load-model", resumed, "--inference-only"]) == 0
    preds = str(tmp_path / "test.npy")
    assert main(["predict", "--load-model", resumed, "--processed-data-file", h5,
                 "--split", "test", "-o", preds]) == 0
    p = np.load(preds)
    with open_processed(h5) as data:
        (start, stop), = data.split_ranges("test")
    assert p.shape == (stop - start,) and ((p > 0) & (p < 1)).all()
    assert main(["plot", str(tmp_path / "log.jsonl"), "-o", str(tmp_path / "c.png")]) == 0


@needs_sample
def test_train_makes_the_processed_file_from_the_raw_one(tmp_path, capsys):
    h5 = str(tmp_path / "made.h5")
    assert main(["train", "--data-generation", "dataset", "--raw-data-file", str(SAMPLE),
                 "--processed-data-file", h5, "--arch-mlp-bot", "13-4-2",
                 "--num-batches", "3", "--mini-batch-size", "64", "--log-file", "",
                 "--progress", "False"]) == 0
    assert "Preprocessed 10,000 rows" in capsys.readouterr().out
    with open_processed(h5) as data:
        assert data.num_rows == 10000


def test_predict_refuses_data_of_another_shape(tmp_path, capsys):
    pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    from npdlrm.checkpoint import save_checkpoint
    model = DLRM.from_arch(arch_mlp_bot="13-4-2", arch_mlp_top="4-1",
                           arch_embedding_size=[5] * 26, arch_sparse_feature_size=2)
    save_checkpoint(str(tmp_path / "m.h5"), model)
    src = tmp_path / "raw.txt"
    rows = ["\t".join(["1"] + [str(i) for i in range(13)] +
                      [f"{rng.integers(0, 1 << 32):08x}" for _ in range(26)])
            for _ in range(20)]
    src.write_text("\n".join(rows) + "\n")
    h5 = str(tmp_path / "d.h5")
    assert main(["preprocess", "--raw-data-file", str(src), "--processed-data-file", h5]) == 0
    assert main(["predict", "--load-model", str(tmp_path / "m.h5"),
                 "--processed-data-file", h5, "-o", str(tmp_path / "p.txt")]) == 2
    assert "table sizes" in capsys.readouterr().err

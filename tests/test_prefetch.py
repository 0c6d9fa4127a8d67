"""`npdlrm predict` batch scoring: the prefetching reader (--prefetch) changes nothing
in the output, and the scoring path is forward only (nothing kept for a backward pass,
no buffer allocated per batch)."""
import numpy as np
import pytest

from npdlrm import DLRM
from npdlrm.checkpoint import save_checkpoint
from npdlrm.cli import main
from npdlrm.data import h5data
from npdlrm.inference import InferenceModel
from npdlrm.serve_file import save_serving

SIZES = tuple(range(3, 29))  # 26 small tables, as the processed format has
ROWS, CHUNK = 700, 128


def make_model():
    return DLRM.from_arch("13-16-8", "16-8-1", "-".join(map(str, SIZES)), 8, seed=5)


def write_data(path, rng):
    dense = np.log1p(rng.integers(0, 100, (ROWS, 13))).astype(np.float32)
    ids = (rng.random((ROWS, len(SIZES))) * np.array(SIZES)).astype(np.int64)
    labels = (rng.random(ROWS) < 0.3).astype(np.float32)
    with h5data.atomic_h5(path) as f:
        w = h5data.RowWriter(f, SIZES, CHUNK)
        w.append(dense, ids, labels)
        w.close()
        h5data.write_root_attrs(f, "kaggle", SIZES, [ROWS], CHUNK, [], {})
    return dense, ids


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefetch")
    model = make_model()
    ckpt, serve, data = str(tmp / "ckpt.h5"), str(tmp / "serve8.h5"), str(tmp / "data.h5")
    save_checkpoint(ckpt, model)
    save_serving(serve, InferenceModel.from_model(model, 8, 32))
    dense, ids = write_data(data, np.random.default_rng(0))
    return tmp, model, ckpt, serve, data, dense, ids


def bags(ids):
    return [ids[:, k].copy() for k in range(ids.shape[1])], [np.arange(ids.shape[0])] * 26


@pytest.mark.parametrize("which", ["ckpt", "serve"])
def test_prefetch_depth_does_not_change_the_probabilities(files, which):
    tmp, model, ckpt, serve, data, dense, ids = files
    path = ckpt if which == "ckpt" else serve
    outs = []
    # batch 300 over chunks of 128 rows: batches straddle the loader's reads
    for depth in ("0", "1", "2", "5"):
        out = str(tmp / f"p-{which}-{depth}.npy")
        assert main(["predict", "--load-model", path, "--processed-data-file", data,
                     "--test-mini-batch-size", "300", "--prefetch", depth, "-o", out]) == 0
        outs.append(np.load(out))
    for p in outs[1:]:
        assert np.array_equal(p, outs[0])
    scorer = model if which == "ckpt" else InferenceModel.from_model(model, 8, 32)
    idx, off = bags(ids)
    want = np.concatenate([scorer.predict(dense[s:s + 300], [i[s:s + 300] for i in idx],
                                          [o[:min(300, ROWS - s)] for o in off])
                           for s in range(0, ROWS, 300)])
    assert outs[0].shape == (ROWS,)
    assert np.array_equal(outs[0], want.astype(np.float32))


def test_negative_prefetch_is_refused_before_anything_is_read(files, tmp_path, capsys):
    _, _, ckpt, _, data, _, _ = files
    out = tmp_path / "p.npy"
    assert main(["predict", "--load-model", str(tmp_path / "absent.h5"),
                 "--processed-data-file", data, "--prefetch", "-1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--prefetch must be >= 0, got -1" in err and "absent.h5" not in err
    assert not out.exists()


def _arrays(model):
    """id() of every buffer the scoring path may hold, by owner."""
    found = {}
    for name, obj in (("model", model), ("bottom", getattr(model, "bottom", None)),
                      ("top", getattr(model, "top", None)),
                      ("interaction", model.interaction)):
        ws = getattr(obj, "ws", None)
        if ws is not None:
            found[name] = {k: id(a) for k, a in ws._arrays.items()}
    return found


@pytest.mark.parametrize("kind", ["dlrm", "inference"])
def test_predict_keeps_no_backward_state_and_reuses_its_buffers(files, kind):
    _, model, _, _, _, dense, ids = files
    scorer = make_model() if kind == "dlrm" else InferenceModel.from_model(model, 8, 32)
    idx, off = bags(ids[:64])
    first = scorer.predict(dense[:64], idx, off)
    held = _arrays(scorer)
    again = scorer.predict(dense[:64], idx, off)
    assert np.array_equal(first, again)
    assert _arrays(scorer) == held  # the same buffers, none allocated for the second batch
    keys = {k for ws in held.values() for k in ws}
    assert not {"dy", "dT", "dout"} & {k if isinstance(k, str) else k[0] for k in keys}
    assert getattr(scorer.interaction, "_T", None) is None
    if kind == "dlrm":
        assert scorer.bottom._inputs is None and scorer.top._inputs is None
        assert not scorer.params.grad.any()  # never written: no resident pages
        assert all(t.state is None for t in scorer.embeddings.tables)
    else:
        assert not hasattr(scorer, "params")


class FakeGovernor:
    """Thread counts from a script, one per tick."""

    def __init__(self, counts):
        self.counts, self.threads, self.ticks = list(counts), 2, 0
        self.others, self.cores = 1.0, 2

    def tick(self):
        self.ticks += 1
        self.threads = self.counts.pop(0)
        return self.threads


def test_governed_loader_ticks_once_per_batch_and_changes_nothing(files):
    from npdlrm.data.h5data import open_processed
    from npdlrm.data.loader import BatchLoader
    from npdlrm.governed import GovernedLoader
    from npdlrm.trainer import predict_all
    _, model, _, _, data, _, _ = files
    said = []
    with open_processed(data) as d:
        plain = BatchLoader(d, 100, "all", shuffle=False, prefetch=2)
        gov = FakeGovernor([2, 1, 1, 2, 2, 2, 2, 2])
        governed = GovernedLoader(plain, gov, said.append)
        assert len(governed) == len(plain) == 7
        y0, p0, _ = predict_all(model, plain)
        y1, p1, _ = predict_all(model, governed)
        # stopping early closes the loader's prefetch thread
        batches = governed.epoch(0)
        next(batches)
        batches.close()
    assert gov.ticks == 8
    assert np.array_equal(p0, p1) and np.array_equal(y0, y1)
    assert said == ["Threads 2 -> 1: other processes use 1.0 of 2 cores",
                    "Threads 1 -> 2: other processes use 1.0 of 2 cores"]


def test_thread_setting_does_not_change_the_probabilities(files):
    tmp, _, ckpt, _, data, _, _ = files
    outs = []
    for threads in ("1", "2", "auto"):
        out = str(tmp / f"t-{threads}.npy")
        assert main(["predict", "--load-model", ckpt, "--processed-data-file", data,
                     "--threads", threads, "-o", out]) == 0
        outs.append(np.load(out))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])

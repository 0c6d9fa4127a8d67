"""Checkpoints: round trips, bitwise exact resume for every optimizer, atomic saves,
architecture / optimizer / format mismatches refused before anything changes."""
import json
import os

import h5py
import numpy as np
import pytest

from gradcheck import csr, tiny_batch, tiny_model

import npdlrm
from npdlrm import atomic as atomic_mod
from npdlrm import checkpoint as ckpt_mod
from npdlrm.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint

SCHEDULE = dict(num_warmup_steps=3, decay_start_step=4, num_decay_steps=4)


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def make_batch(step, table_sizes=(5, 6, 7), B=6, num_dense=4):
    """A deterministic multi-hot batch (repeated rows, empty bags) for step `step`."""
    rng = np.random.RandomState(1000 + step)
    dense = rng.uniform(-1, 1, size=(B, num_dense))
    indices, offsets = [], []
    for V in table_sizes:
        bags = [list(rng.randint(0, V, size=rng.randint(0, 4))) for _ in range(B)]
        i, o = csr(bags)
        indices.append(i)
        offsets.append(o)
    labels = rng.randint(0, 2, size=B).astype(np.float64)
    return dense, indices, offsets, labels


def train(model, opt, steps):
    cfg = model.config
    for s in steps:
        model.train_step(*make_batch(s, cfg.table_sizes, num_dense=cfg.num_dense), opt)


def full_state(model):
    """Every parameter and every optimizer state array, copied, by name."""
    out = {f"param/{k}": v.copy() for k, v in model.state_dict().items()}
    out.update({f"dense/{k}": np.array(v) for k, v in model.params.state.items()})
    for k, t in enumerate(model.embeddings.tables):
        out[f"table/{k}"] = (t.state_kind, None if t.state is None else t.state.copy())
    return out


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("table/"):
            assert a[key][0] == b[key][0], key
            assert (a[key][1] is None) == (b[key][1] is None), key
            if a[key][1] is not None:
                assert same(a[key][1], b[key][1]), key
        else:
            assert same(a[key], b[key]), key


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "model.h5")


# ---- round trips ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_without_optimizer_gives_model_ready_for_predict(path, dtype):
    model = tiny_model(dtype, seed=3)
    save_checkpoint(path, model)
    ck = load_checkpoint(path)
    assert ck.optimizer is None and ck.train_state == {} and ck.path == path
    assert ck.config == model.config
    for k, v in model.state_dict().items():
        assert same(v, ck.model.state_dict()[k]), k
    dense, indices, offsets, _ = tiny_batch()
    assert same(ck.model.predict(dense, indices, offsets), model.predict(dense, indices, offsets))


def test_load_into_given_model_writes_in_place(path):
    src = tiny_model("float32", seed=3)
    save_checkpoint(path, src)
    dst = tiny_model("float32", seed=4)
    weights = [t.weight for t in dst.embeddings.tables]
    flat = dst.params.data
    ck = load_checkpoint(path, model=dst)
    assert ck.model is dst
    assert all(t.weight is w for t, w in zip(dst.embeddings.tables, weights))
    assert dst.params.data is flat
    for k, v in src.state_dict().items():
        assert same(v, dst.state_dict()[k]), k


def test_config_and_optimizer_dicts_round_trip():
    cfg = tiny_model("float64", arch_interaction_op="cat", arch_mlp_top="5-1",
                     pooling="mean", loss="wbce", loss_weights=(0.3, 0.7)).config
    d = json.loads(json.dumps(cfg.to_dict()))
    assert npdlrm.DLRMConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown DLRMConfig field 'layers'"):
        npdlrm.DLRMConfig.from_dict({**d, "layers": 3})
    opt = npdlrm.Optimizer("rwsadagrad", lr=0.3, dense="adam", eps=1e-9, adam_betas=(0.8, 0.9),
                           adam_eps=1e-7, **SCHEDULE)
    back = npdlrm.Optimizer.from_dict(json.loads(json.dumps(opt.to_dict())))
    assert back.to_dict() == opt.to_dict()
    assert [back.policy(s) for s in range(12)] == [opt.policy(s) for s in range(12)]
    with pytest.raises(ValueError, match="unknown optimizer hyper-parameter 'momentum'"):
        npdlrm.Optimizer.from_dict({**opt.to_dict(), "momentum": 0.9})


def test_train_state_comes_back_unchanged_with_rng_states(path):
    pcg = np.random.default_rng(7)
    mt = np.random.Generator(np.random.MT19937(8))
    pcg.random(3), mt.random(3)
    state = {"step": 12, "epoch": 1, "position": [3, 40], "samples_seen": 2 ** 40,
             "name": "run", "loss": 0.25, "nested": {"a": [1, {"b": None}]},
             "rng": pcg.bit_generator.state, "mt": mt.bit_generator.state,
             "np_int": np.int64(5)}
    save_checkpoint(path, tiny_model("float32"), train_state=state)
    back = load_checkpoint(path).train_state
    assert back["np_int"] == 5
    assert back["mt"]["state"]["key"] == mt.bit_generator.state["state"]["key"].tolist()
    assert {k: v for k, v in back.items() if k not in ("mt", "np_int")} == \
        {k: v for k, v in state.items() if k not in ("mt", "np_int")}
    for gen, key in ((pcg, "rng"), (mt, "mt")):
        again = np.random.Generator(type(gen.bit_generator)(0))
        again.bit_generator.state = back[key]
        assert same(again.random(5), gen.random(5)), key
    assert read_checkpoint_info(path)["train_state"] == back


def test_bad_train_state_is_refused_before_writing(path):
    model = tiny_model("float32")
    with pytest.raises(ValueError, match="train_state must be JSON-able.*object"):
        save_checkpoint(path, model, train_state={"f": object()})
    with pytest.raises(ValueError, match="train_state must be a dict, got list"):
        save_checkpoint(path, model, train_state=[1, 2])
    assert os.listdir(os.path.dirname(path)) == []


def test_save_into_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*nowhere does not exist"):
        save_checkpoint(str(tmp_path / "nowhere" / "ck.h5"), tiny_model("float32"))


def test_read_checkpoint_info(path):
    model = tiny_model("float32")
    opt = npdlrm.Optimizer("adagrad", lr=0.2, dense="adam", **SCHEDULE)
    train(model, opt, range(2))
    save_checkpoint(path, model, opt, {"step": 2})
    info = read_checkpoint_info(path)
    assert info["format"] == "npdlrm-checkpoint" and info["format_version"] == 1
    assert info["npdlrm_version"] == npdlrm.__version__ and info["created"]
    assert info["config"] == model.config.to_dict()
    assert info["optimizer"] == opt.to_dict() and info["step_count"] == 2
    assert info["train_state"] == {"step": 2}
    assert list(info["params"]) == list(model.state_dict())
    assert info["params"]["top_mlp.0.weight"] == {"shape": [3, 8], "dtype": "float32"}
    save_checkpoint(path, model)
    info = read_checkpoint_info(path)
    assert info["optimizer"] is None and info["step_count"] is None


def test_file_layout(path):
    model = tiny_model("float32")
    opt = npdlrm.Optimizer("rwsadagrad", lr=0.2, dense="adam")
    train(model, opt, range(1))
    save_checkpoint(path, model, opt)
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["config", "optimizer", "params", "train_state"]
        assert sorted(f["optimizer/dense"]) == ["adam.m", "adam.step", "adam.v"]
        assert f["optimizer/dense/adam.step"].shape == ()
        assert sorted(f["optimizer/tables"]) == ["0", "1", "2"]
        assert f["optimizer/tables/1"].shape == (6,)
        assert json.loads(f["optimizer/tables"].attrs["state_kinds"]) == ["rwsadagrad"] * 3
        assert f["params/embeddings.2.weight"].dtype == np.float32


# ---- exact resume -----------------------------------------------------------------
RESUME_CASES = [("sgd", None), ("adagrad", None), ("rwsadagrad", None), ("sgd", "adam"),
                ("adagrad", "adam"), ("rwsadagrad", "adam")]


@pytest.mark.parametrize("name,dense", RESUME_CASES)
@pytest.mark.parametrize("fresh_model", [True, False])
def test_resume_is_bitwise_exact(tmp_path, name, dense, fresh_model):
    N, k = 9, 4  # the schedule warms up, freezes, decays and freezes again within N
    hyper = dict(name=name, lr=0.3, dense=dense, **SCHEDULE)
    ref_model, ref_opt = tiny_model("float32", seed=1), npdlrm.Optimizer(**hyper)
    train(ref_model, ref_opt, range(N))

    model, opt = tiny_model("float32", seed=1), npdlrm.Optimizer(**hyper)
    train(model, opt, range(k))
    path = str(tmp_path / "ck.h5")
    save_checkpoint(path, model, opt, {"step": k})
    if fresh_model:
        ck = load_checkpoint(path, model=tiny_model("float32", seed=77),
                             optimizer=npdlrm.Optimizer(**hyper))
    else:
        ck = load_checkpoint(path)
        assert ck.optimizer.to_dict() == npdlrm.Optimizer(**hyper).to_dict()
    assert ck.model is not model and ck.optimizer is not opt
    assert ck.optimizer.step_count == k and ck.train_state == {"step": k}
    assert ck.optimizer.lr == opt.lr
    assert_same_state(full_state(ck.model), full_state(model))
    train(ck.model, ck.optimizer, range(k, N))
    assert ck.optimizer.step_count == ref_opt.step_count == N
    assert ck.optimizer.lr == ref_opt.lr
    assert_same_state(full_state(ck.model), full_state(ref_model))


def test_resume_at_step_zero_and_state_replaces_stale_state(path):
    model, opt = tiny_model("float32"), npdlrm.Optimizer("adagrad", lr=0.1, dense="adam")
    save_checkpoint(path, model, opt)  # nothing stepped yet: no state arrays
    busy = tiny_model("float32", seed=5)
    train(busy, npdlrm.Optimizer("adagrad", lr=0.1, dense="adam"), range(2))
    ck = load_checkpoint(path, model=busy, optimizer=npdlrm.Optimizer("adagrad", lr=0.1,
                                                                      dense="adam"))
    assert busy.params.state == {} and ck.optimizer.step_count == 0
    assert all(t.state is None and t.state_kind is None for t in busy.embeddings.tables)


def test_load_without_optimizer_state(path):
    model, opt = tiny_model("float32"), npdlrm.Optimizer("adagrad", lr=0.1)
    train(model, opt, range(2))
    save_checkpoint(path, model, opt)
    ck = load_checkpoint(path, with_optimizer=False)
    assert ck.optimizer is None and ck.model.params.state == {}
    assert all(t.state is None for t in ck.model.embeddings.tables)
    for k, v in model.state_dict().items():
        assert same(v, ck.model.state_dict()[k]), k
    busy = tiny_model("float32", seed=4)
    train(busy, npdlrm.Optimizer("rwsadagrad", lr=0.1, dense="adam"), range(2))
    assert load_checkpoint(path, model=busy, with_optimizer=False).model is busy
    assert busy.params.state == {}  # stale accumulators would not match the loaded weights
    assert all(t.state is None and t.state_kind is None for t in busy.embeddings.tables)
    with pytest.raises(ValueError, match="with_optimizer=False but an optimizer was given"):
        load_checkpoint(path, optimizer=npdlrm.Optimizer("adagrad"), with_optimizer=False)


# ---- atomic saves ---------------------------------------------------------------
def _fail_on_call(n, real):
    calls = []

    def patched(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)
    return patched


@pytest.mark.parametrize("module,target,n", [(ckpt_mod, "_write_array", 5),
                                             (ckpt_mod, "_write_array", 14),
                                             (atomic_mod, "fsync_path", 1)])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, module, target, n):
    path = str(tmp_path / "ck.h5")
    old, opt = tiny_model("float32", seed=1), npdlrm.Optimizer("adagrad", lr=0.1)
    train(old, opt, range(1))
    save_checkpoint(path, old, opt, {"which": "old"})
    new, new_opt = tiny_model("float32", seed=2), npdlrm.Optimizer("adagrad", lr=0.1)
    train(new, new_opt, range(3))
    monkeypatch.setattr(module, target, _fail_on_call(n, getattr(module, target)))
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, new, new_opt, {"which": "new"})
    assert os.listdir(tmp_path) == ["ck.h5"]  # the partial file is gone
    ck = load_checkpoint(path)
    assert ck.train_state == {"which": "old"} and ck.optimizer.step_count == 1
    for k, v in old.state_dict().items():
        assert same(v, ck.model.state_dict()[k]), k


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_mod, "_write_array",
                        _fail_on_call(2, ckpt_mod._write_array))
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(str(tmp_path / "ck.h5"), tiny_model("float32"))
    assert os.listdir(tmp_path) == []


def test_save_overwrites_and_uses_a_partial_file_beside_the_target(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.h5")
    save_checkpoint(path, tiny_model("float32", seed=1))
    seen = []
    real = os.replace
    monkeypatch.setattr(ckpt_mod.os, "replace", lambda a, b: (seen.append((a, b)), real(a, b)))
    model = tiny_model("float32", seed=2)
    save_checkpoint(path, model)
    assert seen == [(str(tmp_path / f".ck.h5.partial-{os.getpid()}"), path)]
    assert same(load_checkpoint(path).model.state_dict()["embeddings.0.weight"],
                model.state_dict()["embeddings.0.weight"])


# ---- refusals: nothing changes ----------------------------------------------------
def snapshot(model, opt):
    return full_state(model), None if opt is None else (opt.step_count, opt._model)


def assert_refused(path, model, opt, pattern):
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=pattern):
        load_checkpoint(path, model=model, optimizer=opt)
    after = snapshot(model, opt)
    assert_same_state(after[0], before[0])
    assert after[1] == before[1]


@pytest.fixture
def saved(path):
    model, opt = tiny_model("float32", seed=1), npdlrm.Optimizer("adagrad", lr=0.1)
    train(model, opt, range(2))
    save_checkpoint(path, model, opt)
    return path


def trained(**kw):
    """A model with optimizer state (one adagrad step) and a fresh adagrad optimizer."""
    model = tiny_model("float32", seed=9, **kw)
    train(model, npdlrm.Optimizer("adagrad", lr=0.05), range(1))
    return model, npdlrm.Optimizer("adagrad", lr=0.05)


@pytest.mark.parametrize("kw,pattern", [
    (dict(arch_embedding_size="5-9-7"),
     r"tensor embeddings\.1\.weight is \(6, 2\) float32 in the checkpoint, \(9, 2\) float32 "
     r"in the model"),
    (dict(arch_mlp_bot="4-5-2"),
     r"tensor bottom_mlp\.0\.weight is \(3, 4\) float32 in the checkpoint, \(5, 4\) float32"),
    (dict(arch_embedding_size="5-6-7-8", arch_mlp_top="3-1"),
     r"tensor top_mlp\.0\.weight is \(3, 8\) float32 in the checkpoint, \(3, 12\) float32"),
    (dict(arch_embedding_size="5-6"),
     r"tensor top_mlp\.0\.weight is \(3, 8\) float32 in the checkpoint, \(3, 5\)"),
    (dict(arch_mlp_top="3-1-1"),  # top_mlp.1 keeps its shape (1, 3)
     r"the model has tensor top_mlp\.2\.weight \(1, 1\), the checkpoint does not"),
    (dict(arch_mlp_top="1"),
     r"tensor top_mlp\.0\.weight is \(3, 8\) float32 in the checkpoint, \(1, 8\)"),
    (dict(pooling="mean"), r"config field pooling is 'sum' in the checkpoint, 'mean' in the model"),
    (dict(arch_interaction_op="cat"),  # F * D = 4 * 2 = 8 = pairs 6 + D 2: same shapes
     r"config field interaction is 'dot' in the checkpoint, 'cat' in the model"),
    (dict(loss="mse"), r"config field loss is 'bce' in the checkpoint, 'mse'"),
])
def test_architecture_mismatch_names_first_difference(saved, kw, pattern):
    model, opt = trained(**kw)
    assert_refused(saved, model, opt, pattern)
    assert_refused(saved, model, None, pattern)


def test_tensor_only_in_checkpoint_and_dtype_mismatch(path, tmp_path):
    big = tiny_model("float32", arch_mlp_top="3-1-1")
    save_checkpoint(path, big)
    assert_refused(path, tiny_model("float32"), None,
                   r"the checkpoint has tensor top_mlp\.2\.weight \(1, 1\), the model does not")
    other = str(tmp_path / "f64.h5")
    save_checkpoint(other, tiny_model("float64"))
    assert_refused(other, tiny_model("float32"), None,
                   r"tensor bottom_mlp\.0\.weight is \(3, 4\) float64 in the checkpoint, "
                   r"\(3, 4\) float32 in the model")


@pytest.mark.parametrize("given,pattern", [
    (dict(name="sgd"), r"sparse optimizer is 'adagrad', the given optimizer's 'sgd'"),
    (dict(name="rwsadagrad"), r"sparse optimizer is 'adagrad', the given optimizer's 'rwsadagrad'"),
    (dict(name="adagrad", dense="adam"), r"dense optimizer is 'adagrad', the given optimizer's 'adam'"),
])
def test_optimizer_mismatch_is_refused(saved, given, pattern):
    model = tiny_model("float32", seed=9)
    opt = npdlrm.Optimizer(lr=0.1, **given)
    train(model, opt, range(1))
    assert_refused(saved, model, opt, pattern)


def test_optimizer_given_but_none_saved_or_bound_elsewhere(path, saved):
    other = str(os.path.dirname(path)) + "/plain.h5"
    save_checkpoint(other, tiny_model("float32"))
    model = tiny_model("float32", seed=9)
    assert_refused(other, model, npdlrm.Optimizer("adagrad"), r"holds no optimizer state")
    elsewhere, other_model = npdlrm.Optimizer("adagrad", lr=0.1), tiny_model("float32", seed=2)
    train(other_model, elsewhere, range(1))
    assert_refused(saved, model, elsewhere, r"already steps another model")
    with pytest.raises(ValueError, match="already steps another model"):
        save_checkpoint(path, model, elsewhere)


def test_corrupt_optimizer_state_is_refused(saved):
    with h5py.File(saved, "a") as f:
        del f["optimizer/tables/1"]
        f["optimizer/tables"].create_dataset("1", data=np.zeros(6, np.float32))
    model, opt = trained()
    assert_refused(saved, model, opt, r"optimizer state of table 1 \(adagrad\) is \(6,\) "
                                      r"float32 in the checkpoint, expected \(6, 2\) float32")


def test_format_errors(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(str(tmp_path / "missing.h5"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt: not an HDF5 file"):
        load_checkpoint(str(text))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "keras"
    with pytest.raises(ValueError, match=r"not an npdlrm checkpoint \(format 'keras', expected "
                                         r"'npdlrm-checkpoint'\)"):
        read_checkpoint_info(str(tmp_path / "other.h5"))
    with h5py.File(saved, "a") as f:
        f.attrs["format_version"] = 2
    model, opt = trained()
    assert_refused(saved, model, opt, r"checkpoint format version 2; this npdlrm reads version 1")


def test_nonfinite_count_in_blocks_equals_the_whole_count(monkeypatch):
    from npdlrm import checkpoint_checks
    a = np.ones((1000, 16), np.float32)
    a[3, 2], a[500, 1], a[999, 0] = np.nan, -np.inf, np.inf
    whole = checkpoint_checks._nonfinite(a)
    monkeypatch.setattr(checkpoint_checks, "VERIFY_BLOCK_BYTES", 1000)  # 15 rows a block
    assert checkpoint_checks._nonfinite(a) == whole == 3
    assert checkpoint_checks._nonfinite(np.arange(5)) == 0

"""QR, MD and learned-weight models: config, initial weights, checkpoints, the CLI."""
import numpy as np
import pytest

from gradcheck import tiny_batch
from test_embedding_variants import VARIANTS, variant_model

import npdlrm
from npdlrm.checkpoint import load_checkpoint, save_checkpoint
from npdlrm.cli.train_flags import parse_train_args
from npdlrm.config import DLRMConfig
from npdlrm.embedding_layout import embedding_bytes, md_solver, table_specs


def steps(model, opt, n=3, seed=0):
    dense, indices, offsets, labels = tiny_batch(seed=seed)
    return [model.train_step(dense, indices, offsets, labels, opt) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_config_round_trips_and_a_plain_config_dict_is_unchanged(name):
    cfg = variant_model(name).config
    assert DLRMConfig.from_dict(cfg.to_dict()) == cfg
    plain = DLRMConfig.from_arch("4-3-2", "3-1", "5-6-7", 2).to_dict()
    assert not any(k.startswith(("qr_", "md_", "weighted")) for k in plain)


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rwsadagrad"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_checkpoint_reloads_and_resumes_exactly(tmp_path, name, kind):
    model, opt = variant_model(name, dtype="float32"), npdlrm.Optimizer(kind, lr=0.05)
    steps(model, opt)
    path = tmp_path / "m.h5"
    save_checkpoint(path, model, opt, {"step": 3})
    ck = load_checkpoint(path)
    assert ck.model.config == model.config
    for k, a in model.state_dict().items():
        np.testing.assert_array_equal(ck.model.state_dict()[k], a, k)
    dense, indices, offsets, _ = tiny_batch(seed=4)
    np.testing.assert_array_equal(ck.model.predict(dense, indices, offsets),
                                  model.predict(dense, indices, offsets))
    assert steps(ck.model, ck.optimizer, seed=5) == steps(model, opt, seed=5)


def test_checkpoint_of_another_variant_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    save_checkpoint(path, variant_model("qr-mult", dtype="float32"))
    other = npdlrm.DLRM(DLRMConfig.from_dict({**variant_model("qr-mult").config.to_dict(),
                                              "qr_operation": "add", "dtype": "float32"}))
    with pytest.raises(ValueError, match="qr_operation"):
        load_checkpoint(path, model=other)
    with pytest.raises(ValueError, match="not the same architecture"):
        load_checkpoint(path, model=npdlrm.DLRM.from_arch("4-3-4", "3-1", "5-6-7", 4))


def test_reference_stream_stays_the_references():
    """Plain and MD tables and the MLPs come from the reference's NumPy stream in its
    order (QR tables are not in it): the same values as a plain model without them."""
    md = variant_model("md", dtype="float32", seed=7)
    rng = np.random.RandomState(7)
    for spec, name in zip(table_specs(md.config), ("embeddings.0.weight",
                                                   "embeddings.1.weight",
                                                   "embeddings.2.weight")):
        b = np.sqrt(1 / spec.rows)
        want = rng.uniform(-b, b, size=(spec.rows, spec.dim)).astype(np.float32)
        np.testing.assert_array_equal(md.state_dict()[name], want)
    qr = variant_model("qr-mult", dtype="float32", seed=7)
    sd, rng = qr.state_dict(), np.random.RandomState(7)
    want = rng.uniform(-np.sqrt(1 / 5), np.sqrt(1 / 5), size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(sd["embeddings.0.weight"], want)  # the plain table
    for name in [n for n in qr.params.names if n.endswith(".weight")]:
        m, n = sd[name].shape
        w = rng.normal(0, np.sqrt(2 / (m + n)), size=(m, n)).astype(np.float32)
        b = rng.normal(0, np.sqrt(1 / m), size=m).astype(np.float32)
        np.testing.assert_array_equal(sd[name], w, name)
        np.testing.assert_array_equal(sd[name[:-len("weight")] + "bias"], b, name)


def test_qr_initial_distributions():
    for qr_init, lo, hi in (("symmetric", -np.sqrt(1 / 7), np.sqrt(1 / 7)),
                            ("reference", np.sqrt(1 / 7), 1.0)):
        model = npdlrm.DLRM.from_arch("4-3-4", "3-1", "5-6-700", 4, qr_flag=True,
                                      qr_threshold=6, qr_collisions=9, qr_init=qr_init)
        w = np.concatenate([model.state_dict()["embeddings.2.weight_q"].ravel(),
                            model.state_dict()["embeddings.2.weight_r"].ravel()])
        lo, hi = (-np.sqrt(1 / 700), np.sqrt(1 / 700)) if qr_init == "symmetric" else \
            (np.sqrt(1 / 700), 1.0)
        assert w.min() >= np.float32(lo) and w.max() <= np.float32(hi)
        assert w.max() - w.min() > 0.8 * (hi - lo)  # spread over the range
    with pytest.raises(ValueError, match="qr_init"):
        npdlrm.DLRM.from_arch("4-3-4", "3-1", "5-6-700", 4, qr_flag=True, qr_init="x")


@pytest.mark.parametrize("kw, words", [
    (dict(qr_flag=True, qr_operation="concat"), "every table above qr_threshold"),
    (dict(qr_flag=True, qr_threshold=1, qr_operation="concat"), r"dimension 4 x 2"),
    (dict(qr_flag=True, qr_collisions=0), "qr_collisions"),
    (dict(qr_flag=True, qr_operation="div"), "qr_operation"),
    (dict(qr_flag=True, weighted_pooling="learned"), "weighted_pooling"),
    (dict(md_flag=True, weighted_pooling="fixed"), "weighted_pooling"),
    (dict(qr_flag=True, md_flag=True), "choose one"),
    (dict(md_flag=True, md_temperature=-1), "md_temperature"),
    (dict(weighted_pooling="yes"), "weighted_pooling"),
])
def test_config_refusals(kw, words):
    with pytest.raises(ValueError, match=words):
        DLRMConfig.from_arch("4-3-4", "3-1", "5-6-7", 4, **kw)


def test_md_widths_above_d_are_clamped_and_small_tables_stay_plain():
    """D = 24 rounds to 32 in the solver (the reference then projects to 32 and fails);
    npdlrm keeps such tables at D. Tables at or under the threshold stay (n, D)."""
    assert md_solver((10, 300, 4000), 0.3, 24, True) == [32, 8, 4]
    cfg = DLRMConfig.from_arch("4-24", "3-1", "10-300-4000", 24, md_flag=True,
                               md_threshold=5, md_round_dims=True)
    assert [(s.kind, s.dim) for s in table_specs(cfg)] == [("plain", 24), ("md", 8),
                                                           ("md", 4)]
    cfg = DLRMConfig.from_arch("4-24", "3-1", "10-300-4000", 24, md_flag=True,
                               md_threshold=300, md_round_dims=True)
    assert [(s.kind, s.dim) for s in table_specs(cfg)] == [("plain", 24), ("plain", 24),
                                                           ("md", 4)]


def test_kaggle_table_bytes_shrink():
    kaggle = "1460-583-10131227-2202608-305-24-12517-633-3-93145-5683-8351593-3194-27-" \
             "14992-5461306-10-5652-2173-4-7046547-18-15-286181-105-142572"
    base = dict(arch_mlp_bot="13-512-256-64-16", arch_mlp_top="512-256-1",
                arch_embedding_size=kaggle, arch_sparse_feature_size=16)
    plain = embedding_bytes(DLRMConfig.from_arch(**base))
    assert plain == 33762577 * 16 * 4
    qr = embedding_bytes(DLRMConfig.from_arch(**base, qr_flag=True))
    md = embedding_bytes(DLRMConfig.from_arch(**base, md_flag=True))
    assert qr < plain / 3.9 and md < plain / 10


def test_cli_flags_reach_the_model():
    args = parse_train_args(["--qr-flag", "--qr-threshold", "5", "--qr-operation", "add",
                             "--qr-collisions", "3", "--qr-init", "reference"])
    from npdlrm.cli.train import build_model
    model = build_model(args, (5, 6, 7))
    cfg = model.config
    assert (cfg.qr_flag, cfg.qr_threshold, cfg.qr_operation, cfg.qr_collisions) == \
        (True, 5, "add", 3)
    assert model.state_dict()["embeddings.2.weight_q"].min() >= np.sqrt(1 / 7) - 1e-7
    args = parse_train_args(["--md-flag", "--md-threshold", "5", "--md-temperature", "3",
                             "--md-round-dims", "--arch-mlp-bot", "4-3-4",
                             "--arch-sparse-feature-size", "4"])
    cfg = build_model(args, (5, 6, 7)).config
    assert (cfg.md_flag, cfg.md_threshold, cfg.md_temperature, cfg.md_round_dims) == \
        (True, 5, 3.0, True)
    assert parse_train_args(["--weighted-pooling", "learned"]).weighted_pooling == "learned"


@pytest.mark.parametrize("argv, words", [
    (["--qr-flag", "--qr-collisions", "0"], "--qr-collisions"),
    (["--md-flag", "--md-temperature", "-0.5"], "--md-temperature"),
    (["--qr-flag", "--weighted-pooling", "fixed"], "--weighted-pooling"),
    (["--md-flag", "--qr-flag"], "--md-flag"),
])
def test_cli_refusals_name_the_flag(argv, words):
    with pytest.raises(ValueError, match=words):
        parse_train_args(argv)


def test_distributed_model_refuses_variants():
    from npdlrm.parallel.comm import LocalComm
    from npdlrm.parallel.model import DistributedDLRM
    cfg = variant_model("qr-mult").config
    with pytest.raises(ValueError, match="--qr-flag"):
        DistributedDLRM(cfg, LocalComm(), plan=None)


@pytest.mark.parametrize("flags", [
    "--qr-flag --qr-threshold 100 --qr-collisions 7",
    "--qr-flag --qr-threshold 40 --qr-operation concat --arch-mlp-bot 13-8-8",
    "--md-flag --md-threshold 100 --md-temperature 0.5",
    "--weighted-pooling learned",
])
def test_cli_trains_saves_and_resumes_a_variant_exactly(tmp_path, flags):
    """npdlrm train with the flags, checkpoint mid-way; the resumed run ends with the
    straight run's weights, and --inference-only of the end checkpoint evaluates."""
    from npdlrm.cli import main
    small = ("--data-generation synthetic --arch-embedding-size 300-2000-50 "
             "--arch-sparse-feature-size 4 --arch-mlp-bot 13-8-4 --arch-mlp-top 8-1 "
             "--loss-function bce --mini-batch-size 32 --num-batches 6 --print-freq 3 "
             "--test-data-size 200 --test-mini-batch-size 100 --progress False "
             "--optimizer adagrad --learning-rate 0.05 --test-freq 3").split()
    args = small + flags.split() + ["--log-file", ""]
    assert main(["train", *args, "--save-model", str(tmp_path / "a-{step}.h5")]) == 0
    assert main(["train", *args, "--load-model", str(tmp_path / "a-3.h5"),
                 "--save-model", str(tmp_path / "r.h5")]) == 0
    straight, resumed = load_checkpoint(tmp_path / "a-6.h5"), load_checkpoint(tmp_path / "r.h5")
    assert straight.config.has_embedding_variants
    for k, a in straight.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[k], a, k)
    assert main(["train", *args, "--load-model", str(tmp_path / "a-6.h5"),
                 "--inference-only"]) == 0

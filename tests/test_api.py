"""Public API: state_dict round trips, offsets forms, per-sample weights, predict, a NumPy
forward of the whole model, determinism, and the README-style example."""
import numba
import numpy as np
import pytest

from gradcheck import csr, tiny_batch, tiny_model

import npdlrm
from npdlrm.kernels.cpu import bias_relu as br_mod
from npdlrm.kernels.cpu import embedding_bag as eb_mod
from npdlrm.kernels.cpu import interaction as it_mod


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------
# state_dict / load_state_dict
# ----------------------------------------------------------------------------
def test_state_dict_keys_shapes_dtypes():
    model = tiny_model("float32")
    sd = model.state_dict()
    expect = [
        ("bottom_mlp.0.weight", (3, 4)), ("bottom_mlp.0.bias", (3,)),
        ("bottom_mlp.1.weight", (2, 3)), ("bottom_mlp.1.bias", (2,)),
        ("top_mlp.0.weight", (3, 8)), ("top_mlp.0.bias", (3,)),   # 8 = 4*3/2 pairs + D
        ("top_mlp.1.weight", (1, 3)), ("top_mlp.1.bias", (1,)),
        ("embeddings.0.weight", (5, 2)), ("embeddings.1.weight", (6, 2)),
        ("embeddings.2.weight", (7, 2)),
    ]
    assert [(k, v.shape) for k, v in sd.items()] == expect
    assert all(v.dtype == np.float32 for v in sd.values())
    assert model.num_parameters() == sum(v.size for v in sd.values())
    cat = tiny_model("float32", arch_interaction_op="cat", arch_mlp_top="5-1")
    assert cat.state_dict()["top_mlp.0.weight"].shape == (5, 8)  # F * D = 4 * 2
    itself = tiny_model("float64", arch_interaction_itself=True)
    assert itself.state_dict()["top_mlp.0.weight"].shape == (3, 12)  # 4*5/2 + 2
    assert itself.state_dict()["top_mlp.0.weight"].dtype == np.float64


def test_state_dict_views_are_live_and_read_only():
    model = tiny_model("float32")
    live = model.state_dict()
    snap = model.state_dict(copy=True)
    for name, v in live.items():
        with pytest.raises(ValueError):
            v[...] = 0
        assert not np.shares_memory(snap[name], v)
    dense, indices, offsets, labels = tiny_batch()
    model.train_step(dense, indices, offsets, labels, npdlrm.Optimizer("sgd", lr=0.5))
    changed = [k for k in live if not np.array_equal(live[k], snap[k])]
    assert "top_mlp.1.bias" in changed and "embeddings.0.weight" in changed
    # the model's own writes still work after handing out read-only views
    model.train_step(dense, indices, offsets, labels, npdlrm.Optimizer("sgd", lr=0.5))


def test_round_trip_into_other_model():
    dense, indices, offsets, labels = tiny_batch()
    a = tiny_model("float32", seed=1)
    a.train_step(dense, indices, offsets, labels, npdlrm.Optimizer("adagrad", lr=0.2))
    b = tiny_model("float32", seed=99)
    assert not same(a.predict(dense, indices, offsets), b.predict(dense, indices, offsets))
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        assert same(v, b.state_dict()[k]), k
    assert same(a.predict(dense, indices, offsets), b.predict(dense, indices, offsets))
    la, ga = a.loss_and_grad(dense, indices, offsets, labels)
    lb, gb = b.loss_and_grad(dense, indices, offsets, labels)
    assert la == lb
    for k in ga:
        assert same(npdlrm.densify(ga)[k], npdlrm.densify(gb)[k]), k
    # a copy is independent of the source afterwards
    a.load_state_dict(tiny_model("float32", seed=5).state_dict())
    assert not same(a.predict(dense, indices, offsets), b.predict(dense, indices, offsets))


def test_load_state_dict_wrong_shape_names_tensor_and_shapes():
    model = tiny_model("float32")
    before = model.state_dict(copy=True)
    sd = tiny_model("float32", seed=8).state_dict(copy=True)
    sd["top_mlp.0.weight"] = np.zeros((3, 9), np.float32)
    with pytest.raises(ValueError, match=r"top_mlp\.0\.weight: shape \(3, 9\) in the state "
                                         r"dict, \(3, 8\) in the model"):
        model.load_state_dict(sd)
    sd = tiny_model("float32", seed=8).state_dict(copy=True)
    sd["embeddings.2.weight"] = np.zeros((8, 2), np.float32)
    with pytest.raises(ValueError, match=r"embeddings\.2\.weight: shape \(8, 2\) .*\(7, 2\)"):
        model.load_state_dict(sd)
    # everything is checked before anything is copied
    for k, v in model.state_dict().items():
        assert same(v, before[k]), k


def test_load_state_dict_missing_and_unexpected_keys():
    model = tiny_model("float32")
    before = model.state_dict(copy=True)
    sd = tiny_model("float32", seed=8).state_dict(copy=True)
    del sd["embeddings.2.weight"]
    with pytest.raises(ValueError, match=r"missing \['embeddings\.2\.weight'\]"):
        model.load_state_dict(sd)
    sd = tiny_model("float32", seed=8).state_dict(copy=True)
    sd["top_mlp.2.weight"] = np.zeros((1, 1), np.float32)
    with pytest.raises(ValueError, match=r"unexpected \['top_mlp\.2\.weight'\]"):
        model.load_state_dict(sd)
    for k, v in model.state_dict().items():
        assert same(v, before[k]), k


# ----------------------------------------------------------------------------
# forward: a NumPy reference of the whole model; offsets forms; per-sample weights
# ----------------------------------------------------------------------------
def numpy_forward(model, dense, indices, offsets, psw=None):
    cfg, sd = model.config, model.state_dict()
    h = np.asarray(dense, np.float64)
    n_bot = len(cfg.bottom_mlp) - 1
    for i in range(n_bot):
        h = np.maximum(h @ sd[f"bottom_mlp.{i}.weight"].T + sd[f"bottom_mlp.{i}.bias"], 0)
    feats = [h]
    for k in range(cfg.num_tables):
        w = sd[f"embeddings.{k}.weight"].astype(np.float64)
        off = offsets[k]
        pooled = np.zeros((h.shape[0], cfg.embedding_dim))
        for b in range(h.shape[0]):
            s, e = off[b], off[b + 1]
            ww = np.ones(e - s) if psw is None or psw[k] is None else psw[k][s:e]
            pooled[b] = (ww[:, None] * w[indices[k][s:e]]).sum(axis=0)
            if cfg.pooling == "mean" and e > s:
                pooled[b] /= e - s
        feats.append(pooled)
    T = np.stack(feats, axis=1)  # (B, F, D)
    if cfg.interaction == "cat":
        R = T.reshape(T.shape[0], -1)
    else:
        Z = T @ T.transpose(0, 2, 1)
        off = 1 if cfg.self_interaction else 0
        li = [i for i in range(T.shape[1]) for j in range(i + off)]
        lj = [j for i in range(T.shape[1]) for j in range(i + off)]
        R = np.concatenate([h, Z[:, li, lj]], axis=1)
    n_top = len(cfg.top_mlp)
    for i in range(n_top):
        R = R @ sd[f"top_mlp.{i}.weight"].T + sd[f"top_mlp.{i}.bias"]
        if i < n_top - 1:
            R = np.maximum(R, 0)
    return 1 / (1 + np.exp(-R[:, 0]))


@pytest.mark.parametrize("itself", [False, True])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("op", ["dot", "cat"])
def test_predict_matches_numpy_forward(op, pooling, itself):
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="4-6-3", arch_mlp_top="5-4-1",
                                  arch_embedding_size="5-6-7", arch_sparse_feature_size=3,
                                  arch_interaction_op=op, arch_interaction_itself=itself,
                                  pooling=pooling, dtype="float64", seed=4)
    dense, indices, offsets, labels = tiny_batch()
    p = model.predict(dense, indices, offsets)
    assert p.shape == (4,) and p.dtype == np.float64
    np.testing.assert_allclose(p, numpy_forward(model, dense, indices, offsets), rtol=1e-12)
    assert same(model.forward(dense, indices, offsets), p)
    rng = np.random.RandomState(0)
    psw = [rng.uniform(0.5, 2, size=i.shape) for i in indices]
    np.testing.assert_allclose(model.predict(dense, indices, offsets, per_sample_weights=psw),
                               numpy_forward(model, dense, indices, offsets, psw), rtol=1e-12)
    # the loss is the mean BCE of those probabilities
    q = numpy_forward(model, dense, indices, offsets)
    loss, _ = model.loss_and_grad(dense, indices, offsets, labels)
    np.testing.assert_allclose(loss, -np.mean(labels * np.log(q) + (1 - labels) * np.log(1 - q)),
                               rtol=1e-12)


def test_predict_equals_forward_and_changes_nothing():
    model = tiny_model("float32")
    before = model.state_dict(copy=True)
    dense, indices, offsets, _ = tiny_batch()
    p = model.predict(dense, indices, offsets)
    assert p.dtype == np.float32 and p.shape == (4,)
    assert ((p > 0) & (p < 1)).all()
    assert same(p, model.forward(dense, indices, offsets))
    assert same(p, model.predict(dense, indices, offsets))
    for k, v in model.state_dict().items():
        assert same(v, before[k])


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_offsets_bag_starts_and_full_give_identical_results(pooling):
    dense, indices, offsets, labels = tiny_batch()
    starts = [o[:-1].copy() for o in offsets]
    mixed = [starts[0], offsets[1], starts[2]]
    results = []
    for offs in (offsets, starts, mixed, [o.astype(np.int32) for o in starts]):
        model = tiny_model("float32", pooling=pooling)
        p = model.predict(dense, indices, offs)
        loss, grads = model.loss_and_grad(dense, indices, offs, labels)
        model.train_step(dense, indices, offs, labels, npdlrm.Optimizer("adagrad", lr=0.1))
        results.append((p, loss, npdlrm.densify(grads), model.state_dict(copy=True)))
    for p, loss, grads, sd in results[1:]:
        assert same(p, results[0][0]) and loss == results[0][1]
        for k in grads:
            assert same(grads[k], results[0][2][k]), k
            assert same(sd[k], results[0][3][k]), k


def test_int32_and_int64_indices_give_identical_results():
    dense, indices, offsets, labels = tiny_batch()
    out = []
    for it in (np.int64, np.int32, np.uint8):
        model = tiny_model("float32")
        idx = [i.astype(it) for i in indices]
        model.train_step(dense, idx, offsets, labels, npdlrm.Optimizer("rwsadagrad", lr=0.1))
        out.append(model.state_dict(copy=True))
    for sd in out[1:]:
        for k in sd:
            assert same(sd[k], out[0][k]), k


def test_per_sample_weights():
    dense, indices, offsets, labels = tiny_batch()
    model = tiny_model("float32")
    plain = model.predict(dense, indices, offsets)
    ones = [np.ones(i.shape, np.float32) for i in indices]
    assert same(model.predict(dense, indices, offsets, per_sample_weights=ones), plain)
    assert same(model.predict(dense, indices, offsets, per_sample_weights=[None] * 3), plain)
    # weights of 2 on table 1 == table 1 doubled (exact in binary floating point)
    twos = [None, np.full(indices[1].shape, 2.0), None]
    weighted = model.predict(dense, indices, offsets, per_sample_weights=twos)
    assert not np.allclose(weighted, plain)
    doubled = tiny_model("float32")
    sd = doubled.state_dict(copy=True)
    sd["embeddings.1.weight"] *= 2
    doubled.load_state_dict(sd)
    assert same(doubled.predict(dense, indices, offsets), weighted)
    # and the gradient of table 1 is then twice the doubled model's
    _, g = model.loss_and_grad(dense, indices, offsets, labels, per_sample_weights=twos)
    _, gd = doubled.loss_and_grad(dense, indices, offsets, labels)
    np.testing.assert_array_equal(g["embeddings.1.weight"].values,
                                  2 * gd["embeddings.1.weight"].values)
    # train_step takes them too
    model.train_step(dense, indices, offsets, labels, npdlrm.Optimizer("sgd", lr=0.1),
                     per_sample_weights=twos)


def test_sparse_grad_and_densify():
    model = tiny_model("float64")
    dense, indices, offsets, labels = tiny_batch()
    _, grads = model.loss_and_grad(dense, indices, offsets, labels)
    g = grads["embeddings.1.weight"]
    assert isinstance(g, npdlrm.SparseGrad) and g.shape == (6, 2)
    np.testing.assert_array_equal(g.rows, [0, 3, 5])
    d = npdlrm.densify(grads)
    assert d["embeddings.1.weight"].shape == (6, 2)
    assert (d["embeddings.1.weight"][[1, 2, 4]] == 0).all()
    assert same(d["embeddings.1.weight"][g.rows], g.values)
    assert d["top_mlp.0.weight"] is grads["top_mlp.0.weight"]
    assert "3 of 6" in repr(g)


def test_empty_batch_and_all_empty_bags():
    model = tiny_model("float32", pooling="mean")
    dense = np.ones((3, 4), np.float32)
    empty = [np.zeros(0, np.int64)] * 3
    offs = [np.zeros(3, np.int64)] * 3
    p = model.predict(dense, empty, offs)
    assert p.shape == (3,) and np.isfinite(p).all()
    _, grads = model.loss_and_grad(dense, empty, offs, np.array([1.0, 0.0, 1.0]))
    for k in range(3):
        assert grads[f"embeddings.{k}.weight"].rows.size == 0


# ----------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------
def _train(model, batches, opt):
    losses = [model.train_step(*b, opt) for b in batches]
    return losses, model.state_dict(copy=True)


def _batches(rng, n, B, num_dense, tables, max_bag):
    out = []
    for _ in range(n):
        idx, off = [], []
        for V in tables:
            bags = [list(rng.randint(0, V, size=rng.randint(0, max_bag + 1))) for _ in range(B)]
            i, o = csr(bags)
            idx.append(i)
            off.append(o)
        out.append((rng.uniform(0, 1, (B, num_dense)).astype(np.float32), idx, off,
                    (rng.uniform(size=B) < 0.3).astype(np.float32)))
    return out


@pytest.mark.parametrize("sparse,dense_opt", [("sgd", None), ("adagrad", "adam"),
                                              ("rwsadagrad", None)])
def test_two_identical_models_train_bitwise_identically(sparse, dense_opt):
    batches = _batches(np.random.RandomState(0), 5, 8, 4, (5, 6, 7), 4)
    runs = [_train(tiny_model("float32"), batches, npdlrm.Optimizer(sparse, 0.1, dense_opt))
            for _ in range(2)]
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        assert same(runs[0][1][k], runs[1][1][k]), k


def test_thread_count_does_not_change_results():
    """Big enough to run the parallel kernels; 1 thread vs 2 threads, bitwise."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here: cannot compare thread counts")
    B, D, tables = 2048, 16, (200, 300, 50)
    batches = _batches(np.random.RandomState(1), 5, B, 8, tables, 10)
    nnz = batches[0][1][0].size
    # the work sizes are above the kernels' parallel thresholds
    assert nnz * D >= eb_mod.PARALLEL_MIN_WORK
    assert B * 6 * D >= it_mod.PARALLEL_MIN_WORK  # F = 4: 6 pairs
    assert B * 64 >= br_mod.PARALLEL_MIN_WORK

    def make():
        return npdlrm.DLRM.from_arch(arch_mlp_bot="8-64-16", arch_mlp_top="64-32-1",
                                     arch_embedding_size="200-300-50",
                                     arch_sparse_feature_size=D, seed=3)

    saved = numba.get_num_threads()
    results = []
    try:
        for n in (1, 2, 1):
            numba.set_num_threads(n)
            model = make()
            p = model.predict(*batches[0][:3])
            _, grads = model.loss_and_grad(*batches[0])
            results.append((p, npdlrm.densify(grads),
                            _train(model, batches, npdlrm.Optimizer("rwsadagrad", 0.05,
                                                                    dense="adam"))))
    finally:
        numba.set_num_threads(saved)
    assert numba.get_num_threads() == saved
    ref = results[0]
    for p, grads, (losses, sd) in results[1:]:
        assert same(p, ref[0])
        for k in grads:
            assert same(grads[k], ref[1][k]), k
        assert losses == ref[2][0]
        for k in sd:
            assert same(sd[k], ref[2][1][k]), k


# ----------------------------------------------------------------------------
# the README-style example
# ----------------------------------------------------------------------------
def test_package_docstring_example_runs():
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="13-64-16", arch_mlp_top="64-1",
                                  arch_embedding_size="1000-1000", arch_sparse_feature_size=16)
    opt = npdlrm.Optimizer("sgd", lr=0.1)
    rng = np.random.RandomState(0)
    B = 32
    dense = rng.uniform(size=(B, 13)).astype(np.float32)
    indices = [rng.randint(0, 1000, size=B) for _ in range(2)]
    offsets = [np.arange(B)] * 2
    labels = rng.randint(0, 2, size=B).astype(np.float32)
    first = model.train_step(dense, indices, offsets, labels, opt)
    for _ in range(20):
        loss = model.train_step(dense, indices, offsets, labels, opt)
    assert np.isfinite(first) and loss < first


def test_reference_architecture_example_runs():
    """The reference DLRM's Criteo Kaggle MLPs with its smaller table sizes."""
    sizes = "1460-583-305-24-12517-633-3-93145-5683-3194-27-14992-10-5652-2173-4-18-15-105"
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="13-512-256-64-16", arch_mlp_top="512-256-1",
                                  arch_embedding_size=sizes, arch_sparse_feature_size=16,
                                  arch_interaction_op="dot", arch_interaction_itself=False,
                                  seed=123)
    T = len(sizes.split("-"))
    assert model.config.top_sizes == ((T + 1) * T // 2 + 16, 512, 256, 1)
    rng = np.random.RandomState(0)
    B = 64
    dense = np.log1p(rng.exponential(size=(B, 13))).astype(np.float32)
    indices = [rng.randint(0, int(v), size=B) for v in sizes.split("-")]
    offsets = [np.arange(B)] * T
    labels = (rng.uniform(size=B) < 0.25).astype(np.float32)
    opt = npdlrm.Optimizer("sgd", lr=0.1)
    losses = [model.train_step(dense, indices, offsets, labels, opt) for _ in range(3)]
    assert np.isfinite(losses).all()
    p = model.predict(dense, indices, offsets)
    assert p.shape == (B,) and ((p > 0) & (p < 1)).all()

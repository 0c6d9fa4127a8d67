"""QR, MD and learned-weight tables: float64 gradient checks of the whole model, sparse
gradients of exactly the touched rows, and fused updates equal to the naive ones."""
import numpy as np
import pytest

from gradcheck import BAGS, assert_grad_close, tiny_batch
from naive_kernels import adagrad_apply, rowwise_adagrad_apply, sgd_apply

import npdlrm
from npdlrm.embedding_layout import md_solver, stored_tables, table_specs

SIZES = "5-6-7"  # BAGS' tables; thresholds below pick which of them are variants
PSW_SEED = 3

VARIANTS = {
    "qr-mult": dict(qr_flag=True, qr_threshold=5, qr_collisions=3),
    "qr-add": dict(qr_flag=True, qr_threshold=5, qr_collisions=2, qr_operation="add"),
    "qr-concat": dict(qr_flag=True, qr_threshold=4, qr_collisions=3, qr_operation="concat"),
    "md": dict(md_flag=True, md_threshold=5, md_temperature=3.0),
    "learned": dict(weighted_pooling="learned"),
}


def variant_model(name, pooling="sum", dtype="float64", seed=1, qr_init="symmetric"):
    kw = VARIANTS[name]
    D = 4
    W = 2 * D if kw.get("qr_operation") == "concat" else D
    return npdlrm.DLRM.from_arch(f"4-3-{W}", "3-1", SIZES, D, seed=seed, dtype=dtype,
                                 pooling=pooling, qr_init=qr_init, **kw)


def live_params(model):
    """name -> the live, writable array behind state_dict()[name]."""
    out = dict(model.params.views)
    out.update({t.name: t.weight for t in model.embeddings.tables})
    assert set(out) == set(model.state_dict())
    return out


def touched(model, name, indices):
    """The rows of stored tensor `name` that the batch's ids of its table reach."""
    k = int(name.split(".")[1])
    spec = table_specs(model.config)[k]
    idx = np.asarray(indices[k])
    if name.endswith("weight_q"):
        idx = idx // spec.collisions
    elif name.endswith("weight_r"):
        idx = idx % spec.collisions
    return np.unique(idx)


def sample_weights(indices):
    rng = np.random.RandomState(PSW_SEED)
    return [rng.uniform(0.5, 2.0, size=len(i)) for i in indices]


def test_the_variant_models_have_what_they_claim():
    """Each check below exercises its variant: QR tables, MD projections, learned weights."""
    kinds = {name: [s.kind for s in table_specs(variant_model(name).config)]
             for name in VARIANTS}
    assert kinds["qr-mult"] == ["plain", "qr", "qr"]
    assert kinds["qr-concat"] == ["qr", "qr", "qr"]
    assert kinds["md"] == ["plain", "md", "md"]
    md = variant_model("md")
    assert [s.dim for s in table_specs(md.config)] == [4, 2, 1]
    assert md.params.views["embeddings.2.projection"].shape == (4, 1)
    assert [s.learned for s in table_specs(variant_model("learned").config)] == [True] * 3


@pytest.mark.parametrize("with_psw", [False, True])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_gradients(name, pooling, with_psw):
    model = variant_model(name, pooling)
    params = live_params(model)
    if name == "learned":  # away from ones, so that the weights matter in the check
        for t in model.embeddings.tables[1::2]:
            t.weight[:] = np.random.RandomState(5).uniform(0.5, 1.5, t.weight.shape)
    dense, indices, offsets, labels = tiny_batch()
    psw = sample_weights(indices) if with_psw else None
    loss, grads = model.loss_and_grad(dense, indices, offsets, labels, per_sample_weights=psw)
    assert set(grads) == set(params)

    def f():
        return model.loss_and_grad(dense, indices, offsets, labels, per_sample_weights=psw)[0]

    for pname, x in params.items():
        g = grads[pname]
        if pname in model.params.views:
            assert isinstance(g, np.ndarray) and g.shape == x.shape, pname
            assert_grad_close(f, x, g, pname)
            continue
        assert isinstance(g, npdlrm.SparseGrad), pname
        rows = touched(model, pname, indices)
        np.testing.assert_array_equal(g.rows, rows)  # sparse: exactly the touched rows
        assert g.values.shape == (rows.size, x.shape[1])
        assert np.abs(g.values).max() > 1e-8, f"{pname}: vacuous check"
        num = assert_grad_close(f, x, g.to_dense(), pname)
        untouched = np.setdiff1d(np.arange(x.shape[0]), rows)
        assert (num[untouched] == 0).all(), f"{pname}: the loss depends on an untouched row"


def naive_update(kind, weight, state, g, rows, lr, eps=1e-10):
    """One optimizer step on the touched rows of weight from the dense gradient g."""
    if kind == "sgd":
        sgd_apply(weight, rows, g[rows], lr)
    elif kind == "adagrad":
        adagrad_apply(weight, state, rows, g[rows], lr, eps)
    else:
        rowwise_adagrad_apply(weight, state, rows, g[rows], lr, eps)


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rwsadagrad"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_fused_updates_equal_naive_steps_on_the_gradients(name, kind):
    """Two train steps: every stored table moves by its optimizer's naive step on its
    sparse gradient (touched rows only); the MD projections go through the dense one."""
    model, ref = variant_model(name), variant_model(name)
    opt, ref_opt = npdlrm.Optimizer(kind, lr=0.1), npdlrm.Optimizer(kind, lr=0.1)
    dense, indices, offsets, labels = tiny_batch()
    states = {t.name: (np.zeros_like(t.weight) if kind == "adagrad" else
                       np.zeros(t.weight.shape[0])) for t in ref.embeddings.tables}
    for step in range(2):
        _, grads = ref.loss_and_grad(dense, indices, offsets, labels)
        ref.params.grad[...] = np.concatenate([grads[n].ravel() for n in ref.params.names])
        ref_opt.step_dense(ref.params, ref_opt.lr)
        for t in ref.embeddings.tables:
            g = grads[t.name]
            naive_update(kind, t.weight, states[t.name], g.to_dense(), g.rows, 0.1)
        ref_opt.finish_step()
        model.train_step(dense, indices, offsets, labels, opt)
        for pname, a in model.state_dict().items():
            np.testing.assert_allclose(a, ref.state_dict()[pname], rtol=1e-12, atol=1e-14,
                                       err_msg=f"{pname} after step {step}")
    for t in model.embeddings.tables:  # untouched rows never change
        k = int(t.name.split(".")[1])
        rows = touched(model, t.name, indices)
        fresh = {n: a for n, a in variant_model(name).state_dict().items()}
        untouched = np.setdiff1d(np.arange(t.weight.shape[0]), rows)
        np.testing.assert_array_equal(t.weight[untouched], fresh[t.name][untouched], str(k))


def test_fixed_weighted_pooling_is_the_plain_model():
    plain = npdlrm.DLRM.from_arch("4-3-2", "3-1", SIZES, 2)
    fixed = npdlrm.DLRM.from_arch("4-3-2", "3-1", SIZES, 2, weighted_pooling="fixed")
    assert list(fixed.state_dict()) == list(plain.state_dict())
    dense, indices, offsets, labels = tiny_batch()
    dense = dense.astype(np.float32)
    o1, o2 = npdlrm.Optimizer("adagrad", lr=0.1), npdlrm.Optimizer("adagrad", lr=0.1)
    for _ in range(3):
        assert plain.train_step(dense, indices, offsets, labels, o1) == \
            fixed.train_step(dense, indices, offsets, labels, o2)


def test_learned_weights_start_at_one_and_learn():
    model = variant_model("learned", dtype="float32")
    w = model.state_dict()["embeddings.1.pooling_weight"]
    assert w.shape == (6, 1) and (w == 1).all()
    dense, indices, offsets, labels = tiny_batch()
    opt = npdlrm.Optimizer("sgd", lr=0.5)
    model.train_step(dense.astype(np.float32), indices, offsets, labels, opt)
    w = model.state_dict()["embeddings.1.pooling_weight"][:, 0]
    moved = np.flatnonzero(w != 1)
    np.testing.assert_array_equal(moved, np.unique(indices[1]))


def test_qr_forward_composes_quotient_and_remainder_rows():
    """A one-id bag pools to q[i // c] (op) r[i % c], the reference's QREmbeddingBag."""
    for op, combine in (("mult", np.multiply), ("add", np.add),
                        ("concat", lambda a, b: np.concatenate([a, b]))):
        model = variant_model({"mult": "qr-mult", "add": "qr-add", "concat": "qr-concat"}[op])
        k = 2
        c = table_specs(model.config)[k].collisions
        sd = model.state_dict()
        batch = [np.array([i]) for i in (0, 0, 6)]
        T = model.interaction_input(1)
        model.lookup(model.check_batch(np.zeros((1, 4)), batch,
                                       [np.array([0, 1])] * 3), T)
        q, r = sd[f"embeddings.{k}.weight_q"][6 // c], sd[f"embeddings.{k}.weight_r"][6 % c]
        np.testing.assert_array_equal(T[0, 1 + k], combine(q, r))


def test_md_solver_gives_the_reference_widths():
    """Widths md_solver of the reference (torch 2.13) gives for the Criteo Kaggle tables."""
    kaggle = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
              3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105,
              142572)
    assert md_solver(kaggle, 0.3, 16) == [3, 3, 1, 1, 4, 9, 1, 3, 16, 1, 2, 1, 2, 8, 1, 1,
                                          11, 2, 2, 15, 1, 9, 10, 1, 6, 1]
    assert md_solver(kaggle, 0.1, 16, True) == [8, 8, 4, 4, 8, 16, 8, 8, 16, 8, 8, 4, 8, 16,
                                                8, 4, 16, 8, 8, 16, 4, 16, 16, 4, 8, 4]
    assert md_solver(kaggle, 0.5, 16, True) == [1, 1, 1, 1, 2, 8, 1, 1, 16, 1, 1, 1, 1, 4,
                                                1, 1, 8, 1, 1, 16, 1, 8, 8, 1, 4, 1]


def test_stored_tables_of_a_plain_model_are_its_tables():
    model = npdlrm.DLRM.from_arch("4-3-2", "3-1", SIZES, 2)
    assert stored_tables(model.config) == [(f"embeddings.{k}.weight", (v, 2))
                                           for k, v in enumerate((5, 6, 7))]
    assert BAGS  # the batch the checks above use


@pytest.mark.parametrize("name", sorted(VARIANTS) + ["plain"])
def test_joined_jobs_of_two_batches_sum_their_gradients(name):
    """embedding.join_jobs (for gradient accumulation): the joined job's gradient is the
    sum of each batch's, its update that of one step on the summed gradient."""
    from npdlrm.embedding import join_jobs
    model = variant_model(name) if name != "plain" else \
        npdlrm.DLRM.from_arch("4-3-4", "3-1", SIZES, 4, dtype="float64")
    windows, sums = [], {}
    for seed in (0, 1):
        dense, indices, offsets, labels = tiny_batch(seed=seed)
        if seed:
            indices = [np.asarray(i)[::-1].copy() for i in indices]
        batch = model.check_batch(dense, indices, offsets, labels, need_labels=True)
        _, dT = model.forward_backward(batch)
        jobs = [job.detach() for job in model.embedding_backward(dT, batch)]
        windows.append(jobs)
        for t, job in zip(model.embeddings.tables, jobs):
            sums[t.name] = sums.get(t.name, 0) + job.grad().to_dense()
        if name != "plain":  # the bags' contexts are the last forward's
            with pytest.raises(ValueError, match="join_jobs"):
                model.embeddings.backward(dT[:, 1:], model.check_batch(
                    dense, indices, offsets, labels, need_labels=True))
    for t, job in zip(model.embeddings.tables, join_jobs(windows, scale=0.5)):
        np.testing.assert_allclose(job.grad().to_dense(), 0.5 * sums[t.name], rtol=1e-12,
                                   atol=1e-15, err_msg=t.name)

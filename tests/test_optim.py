"""Optimizer steps against a NumPy reimplementation; the LR policy against the reference
scheduler simulated step by step."""
import numpy as np
import pytest

from gradcheck import csr, tiny_model

import npdlrm

TABLES = (5, 6, 7)


def random_batch(rng, B=4, num_dense=4):
    """Multi-hot bags of 0..3 rows (empty bags included) over the tiny model's tables."""
    indices, offsets = [], []
    for V in TABLES:
        bags = [list(rng.randint(0, V, size=rng.randint(0, 4))) for _ in range(B)]
        bags[rng.randint(B)] = []
        i, o = csr(bags)
        indices.append(i)
        offsets.append(o)
    dense = rng.uniform(0, 1.5, size=(B, num_dense))
    labels = (rng.uniform(size=B) < 0.5).astype(np.float64)
    return dense, indices, offsets, labels


# ----------------------------------------------------------------------------
# the reference scheduler, simulated (torch _step_count: step index k uses s = k + 1)
# ----------------------------------------------------------------------------
def simulate_reference_lr(base, W, S, N, steps):
    out, last = [], None
    for k in range(steps):
        s = k + 1
        if s < W:
            lr = base * (1 - (W - s) / W)
            last = lr
        elif S <= s < S + N:
            lr = max(1e-7, base * ((N - (s - S)) / N) ** 2)
            last = lr
        else:
            # npdlrm uses base where the reference would have no `last` yet
            lr = (last if last is not None else base) if N > 0 else base
        out.append(lr)
    return out


SCHEDULES = [(W, S, N) for W in (0, 1, 2, 3, 7) for S in (0, 1, 2, 4, 7, 10)
             for N in (0, 1, 2, 5, 13) if S >= W]


@pytest.mark.parametrize("base", [0.1, 1.0, 3e-3])
def test_lr_policy_matches_reference_scheduler(base):
    for W, S, N in SCHEDULES:
        policy = npdlrm.LRPolicy(base, W, S, N)
        steps = S + N + W + 6
        expect = simulate_reference_lr(base, W, S, N, steps)
        got = [policy(k) for k in range(steps)]
        np.testing.assert_allclose(got, expect, rtol=1e-13, atol=0,
                                   err_msg=f"W={W} S={S} N={N}")


def test_lr_policy_spot_values():
    p = npdlrm.LRPolicy(1.0, num_warmup_steps=4, decay_start_step=6, num_decay_steps=3)
    # s = 1, 2, 3 warm up; s = 4, 5 frozen at s=3's value; s = 6, 7, 8 decay; then frozen
    expect = [0.25, 0.5, 0.75, 0.75, 0.75, 1.0, (2 / 3) ** 2, (1 / 3) ** 2, (1 / 3) ** 2,
              (1 / 3) ** 2]
    np.testing.assert_allclose([p(k) for k in range(10)], expect, rtol=1e-15)
    assert npdlrm.LRPolicy(0.5)(0) == 0.5 and npdlrm.LRPolicy(0.5)(10 ** 6) == 0.5
    # the 1e-7 floor of the decay
    p = npdlrm.LRPolicy(1e-3, 0, 1, 10 ** 4)
    assert p(10 ** 4 - 2) == 1e-7


def test_lr_policy_refuses_decay_before_warmup_ends():
    with pytest.raises(ValueError, match=r"warm-up \(5 steps\) must finish before the decay "
                                         r"starts \(step 3\)"):
        npdlrm.LRPolicy(0.1, num_warmup_steps=5, decay_start_step=3, num_decay_steps=2)
    with pytest.raises(ValueError, match=r"warm-up \(5 steps\) must finish"):
        npdlrm.Optimizer("sgd", lr=0.1, num_warmup_steps=5, decay_start_step=3)
    for bad in (dict(base_lr=-1.0), dict(num_warmup_steps=-1), dict(num_decay_steps=-2)):
        args = dict(base_lr=0.1, num_warmup_steps=0, decay_start_step=0, num_decay_steps=0)
        args.update(bad)
        with pytest.raises(ValueError, match=r"must be >= 0"):
            npdlrm.LRPolicy(**args)


def test_optimizer_refuses_bad_names():
    with pytest.raises(ValueError, match=r"optimizer must be one of .*got 'adam'"):
        npdlrm.Optimizer("adam")
    with pytest.raises(ValueError, match=r"dense optimizer must be one of .*got 'rmsprop'"):
        npdlrm.Optimizer("sgd", dense="rmsprop")
    with pytest.raises(ValueError, match=r"eps must be positive"):
        npdlrm.Optimizer("adagrad", eps=0.0)


def test_optimizer_defaults():
    assert npdlrm.Optimizer("sgd").dense == "sgd"
    assert npdlrm.Optimizer("adagrad").dense == "adagrad"
    assert npdlrm.Optimizer("rwsadagrad").dense == "adagrad"
    o = npdlrm.Optimizer("sgd", dense="adam")
    assert o.adam_betas == (0.9, 0.999) and o.adam_eps == 1e-8 and o.eps == 1e-10


# ----------------------------------------------------------------------------
# one and several steps against NumPy
# ----------------------------------------------------------------------------
class NumpyOptimizer:
    """The update rules written out, applied to loss_and_grad's gradients."""

    def __init__(self, params, sparse, dense, lrs, eps=1e-10, betas=(0.9, 0.999),
                 adam_eps=1e-8):
        self.p = {k: v.copy() for k, v in params.items()}
        self.sparse, self.dense, self.lrs, self.eps = sparse, dense, lrs, eps
        self.betas, self.adam_eps = betas, adam_eps
        self.state = {}
        self.t = 0

    def step(self, grads):
        lr, eps = self.lrs[self.t], self.eps
        self.t += 1
        for name, g in grads.items():
            w = self.p[name]
            if isinstance(g, npdlrm.SparseGrad):
                r, v = g.rows, g.values
                if self.sparse == "sgd":
                    w[r] -= lr * v
                elif self.sparse == "adagrad":
                    s = self.state.setdefault(name, np.zeros_like(w))
                    s[r] += v * v
                    w[r] -= lr * (v / (np.sqrt(s[r]) + eps))
                else:
                    s = self.state.setdefault(name, np.zeros(w.shape[0]))
                    s[r] += np.mean(v * v, axis=1)
                    w[r] -= lr * (v / (np.sqrt(s[r])[:, None] + eps))
            elif self.dense == "sgd":
                w -= lr * g
            elif self.dense == "adagrad":
                s = self.state.setdefault(name, np.zeros_like(w))
                s += g * g
                w -= lr * (g / (np.sqrt(s) + eps))
            else:  # torch.optim.Adam, defaults, bias-corrected
                b1, b2 = self.betas
                m = self.state.setdefault(name + ".m", np.zeros_like(w))
                v = self.state.setdefault(name + ".v", np.zeros_like(w))
                m[...] = b1 * m + (1 - b1) * g
                v[...] = b2 * v + (1 - b2) * g * g
                m_hat = m / (1 - b1 ** self.t)
                v_hat = v / (1 - b2 ** self.t)
                w -= lr * m_hat / (np.sqrt(v_hat) + self.adam_eps)


SCHEDULE_KW = [dict(), dict(num_warmup_steps=2, decay_start_step=2, num_decay_steps=3)]


@pytest.mark.parametrize("schedule", SCHEDULE_KW, ids=["const", "warmup+decay"])
@pytest.mark.parametrize("dense_opt", [None, "sgd", "adagrad", "adam"])
@pytest.mark.parametrize("sparse", ["sgd", "adagrad", "rwsadagrad"])
def test_steps_match_numpy(sparse, dense_opt, schedule):
    steps, base = 4, 0.3
    model = tiny_model("float64", pooling="mean" if sparse == "adagrad" else "sum")
    opt = npdlrm.Optimizer(sparse, lr=base, dense=dense_opt, **schedule)
    lrs = simulate_reference_lr(base, schedule.get("num_warmup_steps", 0),
                                schedule.get("decay_start_step", 0),
                                schedule.get("num_decay_steps", 0), steps)
    dense_kind = dense_opt or {"sgd": "sgd", "adagrad": "adagrad", "rwsadagrad": "adagrad"}[sparse]
    ref = NumpyOptimizer(model.state_dict(copy=True), sparse, dense_kind, lrs)
    rng = np.random.RandomState(42)
    for k in range(steps):
        dense, indices, offsets, labels = random_batch(rng)
        before = model.state_dict(copy=True)
        state_before = [None if t.state is None else t.state.copy()
                        for t in model.embeddings.tables]
        loss, grads = model.loss_and_grad(dense, indices, offsets, labels)
        assert opt.step_count == k
        np.testing.assert_allclose(opt.lr, lrs[k], rtol=1e-13)
        ref.step(grads)
        got_loss = model.train_step(dense, indices, offsets, labels, opt)
        assert got_loss == loss
        assert opt.step_count == k + 1
        after = model.state_dict()
        for name, expect in ref.p.items():
            np.testing.assert_allclose(after[name], expect, rtol=1e-12, atol=1e-14,
                                       err_msg=f"step {k}: {name}")
        for t, table in enumerate(model.embeddings.tables):
            name = f"embeddings.{t}.weight"
            untouched = np.setdiff1d(np.arange(table.num_rows), indices[t])
            touched = np.unique(indices[t])
            # untouched rows (and their optimizer state) bitwise unchanged
            assert after[name][untouched].tobytes() == before[name][untouched].tobytes()
            assert not np.array_equal(after[name][touched], before[name][touched])
            if sparse == "sgd":
                assert table.state is None
            else:
                expect_shape = (table.num_rows,) if sparse == "rwsadagrad" else table.weight.shape
                assert table.state.shape == expect_shape
                np.testing.assert_allclose(table.state, ref.state[name], rtol=1e-12, atol=0)
                if state_before[t] is not None:
                    assert (table.state[untouched].tobytes()
                            == state_before[t][untouched].tobytes())
                else:
                    assert (table.state[untouched] == 0).all()
        # dense optimizer state
        if dense_kind == "adagrad":
            acc = model.params.state["adagrad.sum"]
            for name, sl in model.params.slices.items():
                np.testing.assert_allclose(acc[sl].reshape(ref.p[name].shape), ref.state[name],
                                           rtol=1e-12)


def test_adagrad_eps_is_used():
    """A large eps visibly damps the first step (torch semantics: lr * g / (sqrt(s) + eps))."""
    dense, indices, offsets, labels = random_batch(np.random.RandomState(1))
    out = {}
    for eps in (1e-10, 1.0):
        model = tiny_model("float64")
        _, g = model.loss_and_grad(dense, indices, offsets, labels)
        w0 = model.state_dict(copy=True)
        model.train_step(dense, indices, offsets, labels, npdlrm.Optimizer("adagrad", 0.1, eps=eps))
        out[eps] = model.state_dict(copy=True)
        gb = g["top_mlp.1.bias"]
        np.testing.assert_allclose(out[eps]["top_mlp.1.bias"],
                                   w0["top_mlp.1.bias"] - 0.1 * gb / (np.abs(gb) + eps),
                                   rtol=1e-13)
    assert not np.allclose(out[1e-10]["top_mlp.1.bias"], out[1.0]["top_mlp.1.bias"])


def test_float32_sgd_step_matches_numpy():
    model = tiny_model("float32")
    dense, indices, offsets, labels = random_batch(np.random.RandomState(3))
    _, grads = model.loss_and_grad(dense, indices, offsets, labels)
    before = model.state_dict(copy=True)
    model.train_step(dense, indices, offsets, labels, npdlrm.Optimizer("sgd", lr=0.5))
    after = model.state_dict()
    for name, g in npdlrm.densify(grads).items():
        assert after[name].dtype == np.float32
        np.testing.assert_allclose(after[name], before[name] - np.float32(0.5) * g,
                                   rtol=1e-6, atol=1e-7, err_msg=name)


def test_zero_lr_changes_no_parameter():
    model = tiny_model("float64")
    before = model.state_dict(copy=True)
    opt = npdlrm.Optimizer("rwsadagrad", lr=0.0, dense="adam")
    dense, indices, offsets, labels = random_batch(np.random.RandomState(5))
    model.train_step(dense, indices, offsets, labels, opt)
    for k, v in model.state_dict().items():
        assert v.tobytes() == before[k].tobytes(), k
    assert opt.step_count == 1


@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("sparse", ["sgd", "adagrad", "rwsadagrad"])
def test_fused_sparse_update_with_per_sample_weights(sparse, pooling):
    """The fused backward+update of the tables sees the same weighted gradient rows."""
    model = tiny_model("float64", pooling=pooling)
    rng = np.random.RandomState(9)
    opt = npdlrm.Optimizer(sparse, lr=0.2)
    ref = NumpyOptimizer(model.state_dict(copy=True), sparse, opt.dense, [0.2] * 2)
    for _ in range(2):
        dense, indices, offsets, labels = random_batch(rng)
        psw = [rng.uniform(0.2, 3.0, size=i.shape) for i in indices]
        _, grads = model.loss_and_grad(dense, indices, offsets, labels, per_sample_weights=psw)
        ref.step(grads)
        model.train_step(dense, indices, offsets, labels, opt, per_sample_weights=psw)
        for name, expect in ref.p.items():
            np.testing.assert_allclose(model.state_dict()[name], expect, rtol=1e-12,
                                       atol=1e-14, err_msg=name)


def test_one_optimizer_steps_one_model():
    rng = np.random.RandomState(5)
    a, b = tiny_model("float64"), tiny_model("float64")
    opt = npdlrm.Optimizer("sgd", lr=0.1)
    a.train_step(*random_batch(rng), opt)
    before = b.state_dict(copy=True)
    with pytest.raises(ValueError, match="already steps another model"):
        b.train_step(*random_batch(rng), opt)
    for k, v in b.state_dict().items():
        assert np.array_equal(v, before[k]), k
    assert opt.step_count == 1


def test_adam_bias_correction_counts_its_own_steps():
    """A fresh Optimizer on a model with Adam state continues Adam's step count."""
    rng = np.random.RandomState(6)
    model = tiny_model("float64")
    for _ in range(3):
        model.train_step(*random_batch(rng), npdlrm.Optimizer("sgd", lr=0.01, dense="adam"))
    assert int(model.params.state["adam.step"]) == 3

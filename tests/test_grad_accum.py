"""--mlperf-grad-accum-iter K: K batches of B step as one batch of K*B; the optimizer and
its learning-rate schedule advance once per K batches; a resume mid-window is exact."""
import numpy as np
import pytest

from test_trainer import TABLES, FakeLoader, Recorder, make

from npdlrm import DLRM, Optimizer
from npdlrm.checkpoint import load_checkpoint
from npdlrm.grad_accum import GradientAccumulator
from npdlrm.trainer import Trainer, TrainState


def model64(opt, seed=3):
    model = DLRM.from_arch(arch_mlp_bot="4-8-4", arch_mlp_top="8-1", arch_embedding_size=TABLES,
                           arch_sparse_feature_size=4, seed=seed, dtype="float64")
    return model, Optimizer(opt, lr=0.05, num_warmup_steps=3, decay_start_step=3,
                            num_decay_steps=5)


def batches(n, B=8, seed=0, bag=3):
    """n multi-hot batches whose bags repeat rows within and across batches."""
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        dense = r.random((B, 4))
        lengths = [r.integers(0, bag + 1, B) for _ in TABLES]
        idx = [r.integers(0, 5, int(n_.sum())) for n_ in lengths]  # few rows: repeats
        off = [np.r_[0, np.cumsum(n_)] for n_ in lengths]
        y = (r.random(B) < 0.4).astype(np.float64)
        out.append((dense, idx, off, y))
    return out


def join(parts):
    dense = np.concatenate([p[0] for p in parts])
    idx, off = [], []
    for t in range(len(TABLES)):
        idx.append(np.concatenate([p[1][t] for p in parts]))
        starts = np.cumsum([0] + [p[1][t].size for p in parts[:-1]])
        off.append(np.concatenate([p[2][t][:-1] + s for p, s in zip(parts, starts)]
                                  + [[idx[-1].size]]))
    return dense, idx, off, np.concatenate([p[3] for p in parts])


def assert_models_close(a, b, rtol=1e-12):
    sa, sb = a.state_dict(), b.state_dict()
    for name in sa:
        np.testing.assert_allclose(sa[name], sb[name], rtol=rtol, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("opt_name", ["sgd", "adagrad", "rwsadagrad"])
@pytest.mark.parametrize("k", [2, 3])
def test_k_batches_step_as_one_batch_of_k_times_b(opt_name, k):
    data = batches(2 * k)
    big, big_opt = model64(opt_name)
    acc_model, acc_opt = model64(opt_name)
    acc = GradientAccumulator(acc_model, k)
    for w in range(2):  # two windows: the second starts from the first's update
        window = data[w * k:(w + 1) * k]
        big_loss = big.train_step(*join(window), big_opt)
        losses = [acc.train_step(*b, acc_opt) for b in window]
        assert acc.pending == 0
        assert np.mean(losses) == pytest.approx(big_loss, rel=1e-12)
        assert_models_close(big, acc_model)
    assert acc_opt.step_count == big_opt.step_count == 2


def test_parameters_do_not_change_inside_a_window():
    model, opt = model64("adagrad")
    before = model.state_dict(copy=True)
    acc = GradientAccumulator(model, 3)
    for b in batches(2):
        acc.train_step(*b, opt)
    assert acc.pending == 2 and opt.step_count == 0
    for name, value in before.items():
        assert np.array_equal(value, model.state_dict()[name]), name


def test_a_short_window_steps_with_the_mean_of_its_batches():
    (b,) = batches(1)
    plain, plain_opt = model64("adagrad")
    plain.train_step(*b, plain_opt)
    model, opt = model64("adagrad")
    acc = GradientAccumulator(model, 4)
    acc.add(*b)
    acc.step(opt)
    assert_models_close(plain, model)


def test_a_refused_batch_drops_the_window():
    model, opt = model64("sgd")
    acc = GradientAccumulator(model, 2)
    dense, idx, off, y = batches(1)[0]
    acc.add(dense, idx, off, y)
    bad = [i.copy() for i in idx]
    bad[0][0] = 99
    with pytest.raises(ValueError, match="out of range"):
        acc.add(dense, bad, off, y)
    assert acc.pending == 0 and not model.params.grad.any()
    with pytest.raises(ValueError, match="whole number of batches"):
        GradientAccumulator(model, 0)


def test_trainer_steps_once_per_k_batches_and_at_the_end_of_each_epoch():
    model, opt = make("sgd")
    rec = Recorder()
    tr = Trainer(model, opt, FakeLoader(7), FakeLoader(2), nepochs=2, print_freq=2,
                 test_freq=3, grad_accum=3, reporter=rec)
    tr.fit()
    # 7 batches per epoch: steps after batches 3, 6 and 7 (the one left), twice
    assert opt.step_count == 6
    assert tr.state == TrainState(epoch=2, batch=0, step=14, samples=14 * 16)
    # batches still set the cadence of prints and evaluations
    assert [(r["epoch"], r["iter"]) for r in rec.train_records] == [
        (0, 2), (0, 3), (0, 4), (0, 6), (0, 7), (1, 2), (1, 3), (1, 4), (1, 6), (1, 7)]
    assert [r["step"] for r in rec.evals] == [3, 6, 7, 10, 13, 14]
    # the printed lr is that of the last optimizer step: warm-up over 4 steps
    lrs = [r["lr"] for r in rec.train_records]
    assert lrs[:4] == [opt.policy(0)] * 3 + [opt.policy(1)]  # iters 2, 3, 4, 6


def test_trainer_with_k_equals_the_accumulator_by_hand():
    model, opt = make("adagrad")
    Trainer(model, opt, FakeLoader(5), nepochs=1, grad_accum=2, reporter=Recorder()).fit()
    ref, ref_opt = make("adagrad")
    acc = GradientAccumulator(ref, 2)
    for mb in FakeLoader(5).epoch(0):
        acc.train_step(mb.dense, mb.indices, mb.offsets, mb.labels, ref_opt)
    acc.step(ref_opt)
    for name, value in ref.state_dict().items():
        assert np.array_equal(value, model.state_dict()[name]), name


@pytest.mark.parametrize("opt_name", ["sgd", "rwsadagrad"])
def test_resume_inside_a_window_equals_the_straight_run(tmp_path, opt_name):
    kw = dict(nepochs=2, num_batches=7, test_freq=5, grad_accum=3)
    model, opt = make(opt_name)
    Trainer(model, opt, FakeLoader(9), FakeLoader(2), reporter=Recorder(), **kw).fit()
    straight = model.state_dict(copy=True)
    # crash right after the checkpoint at step 12: epoch 1, batch 5, inside the window 3..5
    model, opt = make(opt_name)
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, opt, FakeLoader(9), FakeLoader(2), save_path=str(tmp_path / "c-{step}.h5"),
                reporter=Recorder(fail_after_checkpoint_at=12), **kw).fit()
    model, opt = make(opt_name)
    ck = load_checkpoint(str(tmp_path / "c-12.h5"), model=model, optimizer=opt)
    state = TrainState.from_dict(ck.train_state)
    assert state == TrainState(epoch=1, batch=5, step=12, samples=192)
    loader = FakeLoader(9)
    Trainer(model, opt, loader, FakeLoader(2), state=state, reporter=Recorder(), **kw).fit()
    assert loader.opened == [(1, 3)]  # batches 3 and 4 replayed
    for name, value in straight.items():
        assert np.array_equal(value, model.state_dict()[name]), name
    assert opt.step_count == 6


def test_grad_accum_one_is_the_plain_step():
    a, a_opt = make("adagrad")
    b, b_opt = make("adagrad")
    Trainer(a, a_opt, FakeLoader(4), reporter=Recorder()).fit()
    Trainer(b, b_opt, FakeLoader(4), grad_accum=1, reporter=Recorder()).fit()
    for name, value in a.state_dict().items():
        assert np.array_equal(value, b.state_dict()[name]), name


@pytest.mark.parametrize("variant", [dict(qr_flag=True, qr_threshold=10, qr_collisions=3),
                                     dict(qr_flag=True, qr_threshold=10, qr_operation="add"),
                                     dict(md_flag=True, md_threshold=10),
                                     dict(weighted_pooling="learned")])
@pytest.mark.parametrize("opt_name", ["sgd", "adagrad", "rwsadagrad"])
def test_embedding_variants_accumulate_as_one_batch(variant, opt_name):
    def build():
        model = DLRM.from_arch(arch_mlp_bot="4-8-4", arch_mlp_top="8-1",
                               arch_embedding_size=TABLES, arch_sparse_feature_size=4, seed=3,
                               dtype="float64", **variant)
        return model, Optimizer(opt_name, lr=0.05)
    data = batches(5)  # a window of 3, then a short one of 2
    big, big_opt = build()
    acc_model, acc_opt = build()
    acc = GradientAccumulator(acc_model, 3)
    for window in (data[:3], data[3:]):
        big.train_step(*join(window), big_opt)
        for b in window:
            acc.train_step(*b, acc_opt)
        acc.step(acc_opt)  # the short window: the mean of its 2 batches
        assert_models_close(big, acc_model)

"""Bad input is refused with a ValueError that says what is wrong, and changes nothing."""
import warnings

import numpy as np
import pytest

from gradcheck import tiny_batch, tiny_model

import npdlrm

# tiny model: dense width 4, tables of 5, 6, 7 rows; batch of 4 with nnz 6, 7, 9
ENTRY_POINTS = ["predict", "forward", "loss_and_grad", "train_step"]


def call(model, entry, dense, indices, offsets, labels=None, psw=None, opt=None):
    if entry in ("predict", "forward"):
        return getattr(model, entry)(dense, indices, offsets, per_sample_weights=psw)
    if labels is None:
        labels = np.array([1.0, 0.0, 1.0, 0.0])
    if entry == "loss_and_grad":
        return model.loss_and_grad(dense, indices, offsets, labels, per_sample_weights=psw)
    opt = opt or npdlrm.Optimizer("adagrad", lr=0.1)
    return model.train_step(dense, indices, offsets, labels, opt, per_sample_weights=psw)


def batch():
    dense, indices, offsets, labels = tiny_batch()
    return dense.astype(np.float32), [i.copy() for i in indices], [o.copy() for o in offsets], labels


def _replace(seq, k, value):
    seq = list(seq)
    seq[k] = value
    return seq


# each case: (name, function batch -> (dense, indices, offsets), regex)
def _index_eq_v(d, i, o):
    return d, _replace(i, 1, np.array([5, 0, 3, 3, 6, 5, 0])), o


def _index_negative(d, i, o):
    return d, _replace(i, 2, np.array([1, 2, 3, 4, 5, -1, 2, 1, 1])), o


def _index_huge(d, i, o):
    return d, _replace(i, 0, np.array([1, 2, 2, 0, 0, 2 ** 40])), o


def _offsets_decreasing(d, i, o):
    return d, i, _replace(o, 0, np.array([0, 4, 1, 4, 6]))


def _offsets_decreasing_starts(d, i, o):
    return d, i, _replace(o, 2, np.array([0, 3, 2, 6]))


def _offsets_past_end_starts(d, i, o):
    return d, i, _replace(o, 1, np.array([0, 2, 9, 6]))


def _offsets_past_end_full(d, i, o):
    return d, i, _replace(o, 1, np.array([0, 2, 2, 6, 9]))


def _offsets_not_zero_first(d, i, o):
    return d, i, _replace(o, 2, np.array([1, 3, 4, 6]))


def _offsets_not_zero_first_full(d, i, o):
    return d, i, _replace(o, 2, np.array([2, 3, 4, 6, 9]))


def _offsets_wrong_length(d, i, o):
    return d, i, _replace(o, 2, np.array([0, 3, 4]))


def _offsets_wrong_length_long(d, i, o):
    return d, i, _replace(o, 0, np.array([0, 1, 4, 4, 6, 6]))


def _too_few_tables(d, i, o):
    return d, i[:2], o


def _too_many_offsets_tables(d, i, o):
    return d, i, o + [o[0]]


def _dense_width(d, i, o):
    return np.ones((4, 5), np.float32), i, o


def _dense_nan(d, i, o):
    d = d.copy()
    d[1, 2] = np.nan
    return d, i, o


def _dense_inf(d, i, o):
    d = d.copy()
    d[3, 0] = -np.inf
    return d, i, o


def _dense_overflows_dtype(d, i, o):
    d = d.astype(np.float64)
    d[2, 1] = 1e300  # finite in float64, inf in the float32 model
    return d, i, o


def _float_indices(d, i, o):
    return d, _replace(i, 1, i[1].astype(np.float64)), o


def _float_offsets(d, i, o):
    return d, i, _replace(o, 0, o[0].astype(np.float32))


CASES = [
    ("index == V", _index_eq_v, r"table 1: index 6 at position 4 is out of range \[0, 6\)"),
    ("negative index", _index_negative,
     r"table 2: index -1 at position 5 is out of range \[0, 7\)"),
    ("huge index", _index_huge,
     r"table 0: index 1099511627776 at position 5 is out of range \[0, 5\)"),
    ("offsets decreasing", _offsets_decreasing,
     r"table 0: offsets must be non-decreasing, got 4 then 1 at position 2"),
    ("offsets decreasing (bag starts)", _offsets_decreasing_starts,
     r"table 2: offsets must be non-decreasing, got 3 then 2 at position 2"),
    ("offsets past the end (bag starts)", _offsets_past_end_starts,
     r"table 1: offset 9 at position 2 is past the end of the 7 indices"),
    ("offsets past the end (B+1)", _offsets_past_end_full,
     r"table 1: offset 9 at position 4 is past the end of the 7 indices"),
    ("offsets[0] != 0", _offsets_not_zero_first, r"table 2: offsets must start at 0, got 1"),
    ("offsets[0] != 0 (B+1)", _offsets_not_zero_first_full,
     r"table 2: offsets must start at 0, got 2"),
    ("offsets length B-1", _offsets_wrong_length,
     r"table 2: expected 4 offsets \(bag starts\) or 5, got 3 for a batch of 4"),
    ("offsets length B+2", _offsets_wrong_length_long,
     r"table 0: expected 4 offsets \(bag starts\) or 5, got 6 for a batch of 4"),
    ("too few tables", _too_few_tables,
     r"indices: expected one array per table \(3 tables\), got 2"),
    ("too many tables", _too_many_offsets_tables,
     r"offsets: expected one array per table \(3 tables\), got 4"),
    ("dense width", _dense_width, r"dense features have width 5, the bottom MLP expects 4"),
    ("dense NaN", _dense_nan, r"dense features hold a non-finite value nan at row 1, column 2"),
    ("dense inf", _dense_inf, r"dense features hold a non-finite value -inf at row 3, column 0"),
    ("dense overflows float32", _dense_overflows_dtype,
     r"dense features hold a non-finite value inf at row 2, column 1"),
    ("float indices", _float_indices, r"table 1: indices must hold integers, got dtype float64"),
    ("float offsets", _float_offsets, r"table 0: offsets must hold integers, got dtype float32"),
]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("name,make,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_batch_refused(name, make, pattern, entry):
    model = tiny_model("float32")
    dense, indices, offsets = make(*batch()[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the float64 -> float32 overflow
        with pytest.raises(ValueError, match=pattern):
            call(model, entry, dense, indices, offsets)


@pytest.mark.parametrize("entry", ["loss_and_grad", "train_step"])
@pytest.mark.parametrize("bad,pos", [(2.0, 1), (-0.5, 2), (np.nan, 3), (np.inf, 0)])
def test_labels_outside_unit_interval_refused(bad, pos, entry):
    model = tiny_model("float32", loss="bce")
    dense, indices, offsets, labels = batch()
    labels = np.array([1.0, 0.0, 0.5, 0.25])  # soft labels are fine for bce ...
    call(model, entry, dense, indices, offsets, labels)
    labels[pos] = bad  # ... values outside [0, 1] are not
    with pytest.raises(ValueError, match=rf"label {bad} at position {pos} must be in \[0, 1\]"):
        call(model, entry, dense, indices, offsets, labels)


@pytest.mark.parametrize("entry", ["loss_and_grad", "train_step"])
@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, np.nan])
def test_wbce_labels_must_be_binary(bad, entry):
    model = tiny_model("float32", loss="wbce", loss_weights=(0.5, 2.0))
    dense, indices, offsets, _ = batch()
    labels = np.array([1.0, 0.0, 1.0, 0.0])
    call(model, entry, dense, indices, offsets, labels)
    labels[2] = bad
    with pytest.raises(ValueError, match=rf"label {bad} at position 2 must be 0 or 1"):
        call(model, entry, dense, indices, offsets, labels)


def test_labels_wrong_shape_refused():
    model = tiny_model("float32")
    dense, indices, offsets, _ = batch()
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\) for a batch of 4, got \(3,\)"):
        model.loss_and_grad(dense, indices, offsets, np.ones(3))
    # a (B, 1) column is accepted
    model.loss_and_grad(dense, indices, offsets, np.ones((4, 1)))


@pytest.mark.parametrize("entry", ["loss_and_grad", "train_step"])
def test_missing_labels_refused(entry):
    """loss_and_grad / train_step need labels: a ValueError, like every other bad batch."""
    model = tiny_model("float32")
    opt = npdlrm.Optimizer("adagrad", lr=0.1)
    dense, indices, offsets, _ = batch()
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"labels"):
        if entry == "loss_and_grad":
            model.loss_and_grad(dense, indices, offsets, None)
        else:
            model.train_step(dense, indices, offsets, None, opt)
    _assert_same(before, _snapshot(model, opt))


def test_per_sample_weights_refused():
    model = tiny_model("float32")
    dense, indices, offsets, labels = batch()
    good = [np.ones(i.shape) for i in indices]
    model.loss_and_grad(dense, indices, offsets, labels, per_sample_weights=good)
    with pytest.raises(ValueError, match=r"one entry per table \(3\), got 2"):
        model.predict(dense, indices, offsets, per_sample_weights=good[:2])
    bad = list(good)
    bad[1] = np.ones(3)
    with pytest.raises(ValueError, match=r"table 1: per_sample_weights shape \(3,\) does not "
                                         r"match indices shape \(7,\)"):
        model.predict(dense, indices, offsets, per_sample_weights=bad)
    bad[1] = np.r_[np.ones(6), np.nan]
    with pytest.raises(ValueError, match=r"table 1: per_sample_weights hold a non-finite value"):
        model.predict(dense, indices, offsets, per_sample_weights=bad)


def test_indices_not_a_sequence_of_arrays():
    model = tiny_model("float32")
    dense, indices, offsets, _ = batch()
    with pytest.raises(ValueError, match=r"indices must be a sequence with one array per table"):
        model.predict(dense, np.concatenate(indices), offsets)
    with pytest.raises(ValueError, match=r"dense features must be 2-D"):
        model.predict(dense[0], indices, offsets)


# ----------------------------------------------------------------------------
# bad architectures, at construction
# ----------------------------------------------------------------------------
def test_bottom_mlp_must_end_in_embedding_dim():
    with pytest.raises(ValueError, match=r"bottom MLP output width 3 must equal the embedding "
                                         r"dimension 2"):
        npdlrm.DLRM.from_arch(arch_mlp_bot="4-3", arch_mlp_top="3-1",
                              arch_embedding_size="5-6", arch_sparse_feature_size=2)


def test_top_mlp_must_end_in_one():
    with pytest.raises(ValueError, match=r"top MLP must end in 1 \(the logit\), got 2"):
        npdlrm.DLRM.from_arch(arch_mlp_bot="4-2", arch_mlp_top="3-2",
                              arch_embedding_size="5-6", arch_sparse_feature_size=2)


@pytest.mark.parametrize("kw,pattern", [
    (dict(arch_embedding_size="5-0"), r"table sizes: every size must be positive, got 0"),
    (dict(arch_embedding_size="5-x"), r"table sizes: expected integers separated by '-'"),
    (dict(arch_interaction_op="sum"), r"interaction must be one of \('dot', 'cat'\)"),
    (dict(pooling="max"), r"pooling must be one of"),
    (dict(loss="hinge"), r"loss must be one of"),
    (dict(dtype="float16"), r"dtype must be one of"),
    (dict(loss_weights=(1.0, -1.0)), r"loss_weights must be two non-negative numbers"),
    (dict(init="xavier"), r"init must be 'reference' or 'fast', got 'xavier'"),
])
def test_bad_config_refused(kw, pattern):
    args = dict(arch_mlp_bot="4-2", arch_mlp_top="3-1", arch_embedding_size="5-6",
                arch_sparse_feature_size=2)
    args.update(kw)
    with pytest.raises(ValueError, match=pattern):
        npdlrm.DLRM.from_arch(**args)


# ----------------------------------------------------------------------------
# a refused step changes nothing
# ----------------------------------------------------------------------------
def _snapshot(model, opt):
    return dict(params=model.state_dict(copy=True),
                step=opt.step_count, lr=opt.lr,
                table_state=[None if t.state is None else t.state.copy()
                             for t in model.embeddings.tables],
                table_kind=[t.state_kind for t in model.embeddings.tables],
                dense_state={k: v.copy() for k, v in model.params.state.items()})


def _assert_same(a, b):
    assert a["step"] == b["step"] and a["lr"] == b["lr"]
    assert a["table_kind"] == b["table_kind"]
    assert set(a["params"]) == set(b["params"])
    for k in a["params"]:
        assert a["params"][k].tobytes() == b["params"][k].tobytes(), k
    for x, y in zip(a["table_state"], b["table_state"]):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.tobytes() == y.tobytes()
    assert set(a["dense_state"]) == set(b["dense_state"])
    for k in a["dense_state"]:
        assert a["dense_state"][k].tobytes() == b["dense_state"][k].tobytes(), k


def _bad_labels(d, i, o):
    return d, i, o, np.array([1.0, 2.0, 0.0, 1.0])


BAD_STEPS = [(c[0], c[1]) for c in CASES] + [("labels", None)]


@pytest.mark.parametrize("sparse,dense_opt", [("adagrad", "adam"), ("rwsadagrad", None),
                                              ("sgd", "adagrad")])
def test_refused_step_changes_nothing(sparse, dense_opt):
    model = tiny_model("float32")
    opt = npdlrm.Optimizer(sparse, lr=0.05, dense=dense_opt, num_warmup_steps=3,
                           decay_start_step=5, num_decay_steps=4)
    dense, indices, offsets, labels = batch()
    model.train_step(dense, indices, offsets, labels, opt)  # state exists now
    model.train_step(dense, indices, offsets, labels, opt)
    before = _snapshot(model, opt)
    for name, make in BAD_STEPS:
        if make is None:
            d, i, o, y = _bad_labels(dense, indices, offsets)
        else:
            d, i, o = make(dense, indices, offsets)
            y = labels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with pytest.raises(ValueError):
                model.train_step(d, i, o, y, opt)
        _assert_same(before, _snapshot(model, opt))
    # and the model still trains afterwards, exactly as an untouched twin does
    twin = tiny_model("float32")
    twin_opt = npdlrm.Optimizer(sparse, lr=0.05, dense=dense_opt, num_warmup_steps=3,
                                decay_start_step=5, num_decay_steps=4)
    for _ in range(3):
        twin.train_step(dense, indices, offsets, labels, twin_opt)
    model.train_step(dense, indices, offsets, labels, opt)
    for k, v in twin.state_dict().items():
        assert v.tobytes() == model.state_dict()[k].tobytes(), k


def test_non_finite_loss_refused_and_changes_nothing():
    """A finite batch whose loss is not finite (huge parameters): FloatingPointError, no change."""
    model = tiny_model("float32")
    sd = model.state_dict(copy=True)
    sd["top_mlp.1.bias"][...] = np.inf
    model.load_state_dict(sd)
    opt = npdlrm.Optimizer("adagrad", lr=0.1)
    dense, indices, offsets, labels = batch()
    before = _snapshot(model, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(FloatingPointError):
            model.train_step(dense, indices, offsets, labels, opt)
    _assert_same(before, _snapshot(model, opt))


@pytest.mark.parametrize("dtype,big", [("float32", 3e38), ("float64", 1.7e308)])
def test_step_never_leaves_non_finite_parameters(dtype, big):
    """Finite dense features large enough to overflow the first layer: the step must either
    be refused (and change nothing) or leave every parameter finite.  (With a ReLU that
    propagates NaN, as np.maximum and torch.relu do, the loss is NaN and the step refused.)"""
    model = tiny_model(dtype)
    opt = npdlrm.Optimizer("sgd", lr=0.1)
    dense, indices, offsets, labels = batch()
    before = _snapshot(model, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            model.train_step(np.full((4, 4), big), indices, offsets, labels, opt)
        except (FloatingPointError, ValueError):
            _assert_same(before, _snapshot(model, opt))
            return
    bad = [k for k, v in model.state_dict().items() if not np.isfinite(v).all()]
    assert not bad, f"an accepted step wrote non-finite values into {bad}"

"""Synthetic planted-model data: index distributions, bags, the planted model, addressability."""
import math

import numpy as np
import pytest

from npdlrm.data.synthetic import (SyntheticData, SyntheticLoader, _scramble_params,
                                   hashed_normal, power_law_probs, power_law_ranks)
from npdlrm.metrics import roc_auc


def continuous_rank_probs(V, s):
    """P(rank r) = integral_{r+1}^{r+2} x^-s dx / integral_1^{V+1} x^-s dx, written out."""
    def antiderivative(x):
        return math.log(x) if s == 1.0 else x ** (1.0 - s) / (1.0 - s)
    total = antiderivative(V + 1.0) - antiderivative(1.0)
    return np.array([(antiderivative(r + 2.0) - antiderivative(r + 1.0)) / total
                     for r in range(V)])


def planted_logit_reference(data, mb):
    """The planted logit recomputed bag by bag with plain loops (uniform dense features)."""
    B = mb.labels.shape[0]
    z = (mb.dense.astype(np.float64) - 0.5) * math.sqrt(12.0)
    logit = np.zeros(B)
    for b in range(B):
        logit[b] = float(z[b] @ data.w_dense) + data.bias
        for k in range(len(data.table_sizes)):
            bag = mb.indices[k][mb.offsets[k][b]:mb.offsets[k][b + 1]]
            logit[b] += np.mean([data.row_effects(k, [row])[0] for row in bag])
    return logit


# ----------------------------------------------------------------------------
# power law
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("s", [0.0, 0.5, 0.9, 1.0, 1.1, 1.3, 2.0])
def test_power_law_probs_match_written_out_law(s):
    np.testing.assert_allclose(power_law_probs(50, s), continuous_rank_probs(50, s),
                               rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("s", [0.9, 1.0, 1.1, 1.3])
def test_power_law_rank_frequencies_follow_exponent(s):
    V, n = 1000, 400_000
    u = np.random.default_rng(7).random(n)
    ranks = power_law_ranks(u, V, s)
    assert ranks.min() >= 0 and ranks.max() < V
    freq = np.bincount(ranks, minlength=V) / n
    expected = continuous_rank_probs(V, s)
    assert 0.5 * np.abs(freq - expected).sum() < 0.02  # total variation distance
    # Zipf-like: log-frequency falls with slope -s over ranks 5..100
    r = np.arange(5, 100)
    slope = np.polyfit(np.log(r + 1.5), np.log(freq[r]), 1)[0]
    assert abs(slope + s) < 0.15, slope


def test_exponent_one_is_the_limit_of_nearby_exponents():
    u = np.linspace(0, 1, 10_001, endpoint=False)
    at_one = power_law_ranks(u, 10_000_000, 1.0)  # the log form
    for s in (1.0 - 2e-9, 1.0 + 2e-9):  # the general form, just outside the log form's band
        near = power_law_ranks(u, 10_000_000, s)
        assert np.mean(at_one != near) < 0.01
        assert np.all(np.abs(at_one - near) <= np.maximum(1, 1e-6 * at_one))
    assert power_law_ranks(np.array([0.0]), 10, 1.0)[0] == 0


def test_power_law_ranks_in_range_at_the_edges():
    u = np.array([0.0, 1e-300, 0.5, 1 - 2.0 ** -53])
    for V in (1, 2, 3, 10_131_227):
        for s in (0.0, 1.0, 1.1, 5.0):
            r = power_law_ranks(u, V, s)
            assert r.min() >= 0 and r.max() <= V - 1, (V, s, r)


@pytest.mark.parametrize("V", [1, 2, 3, 7, 64, 97, 1000, 4096])
def test_scramble_is_a_bijection(V):
    rng = np.random.default_rng(V)
    for _ in range(5):
        a, c = _scramble_params(rng, V)
        assert math.gcd(a, V) == 1
        rows = (a * np.arange(V) + c) % V
        assert np.array_equal(np.sort(rows), np.arange(V))


def test_power_law_data_has_hot_rows_spread_over_the_table():
    V = 10_000
    d = SyntheticData(1, [V, V, V], 100_000, distribution="power-law", exponents=[0.9, 1.1, 1.3])
    mb = d.batch(0, 100_000)
    heads = []
    for k, s in enumerate([0.9, 1.1, 1.3]):
        freq = np.sort(np.bincount(mb.indices[k], minlength=V))[::-1] / 100_000
        expected = continuous_rank_probs(V, s)
        assert abs(freq[:10].sum() - expected[:10].sum()) < 0.02, k
        hot = np.argsort(np.bincount(mb.indices[k], minlength=V))[::-1][:10]
        heads.append(freq[:10].sum())
        assert hot.max() > 100  # scrambled: the hot rows are not all the low ids
    assert heads[0] < heads[1] < heads[2]  # a larger exponent concentrates more mass


def test_random_indices_are_uniform():
    mb = SyntheticData(1, [10, 3], 60_000).batch(0, 60_000)
    for idx, V in zip(mb.indices, (10, 3)):
        counts = np.bincount(idx, minlength=V)
        assert counts.size == V
        np.testing.assert_allclose(counts / 60_000, 1 / V, rtol=0.05)


@pytest.mark.parametrize("distribution", ["random", "power-law"])
def test_table_of_size_one(distribution):
    d = SyntheticData(2, [1, 5], 100, distribution=distribution, exponents=1.0, bag_size=3,
                      fixed_bag_size=False)
    mb = d.batch(0, 100)
    assert np.all(mb.indices[0] == 0) and mb.indices[0].size == mb.offsets[0][-1]
    assert np.all(np.isfinite(mb.truth))


def test_hashed_normal_is_standard_and_deterministic():
    keys = np.arange(200_000, dtype=np.uint64) * np.uint64(3)
    z = hashed_normal(keys)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 0.005
    assert np.array_equal(z, hashed_normal(keys))
    assert np.corrcoef(z[:-1], z[1:])[0, 1] < 0.01


# ----------------------------------------------------------------------------
# bags and the planted model
# ----------------------------------------------------------------------------
def test_fixed_bag_size():
    mb = SyntheticData(3, [20, 30], 50, bag_size=4).batch(0, 50)
    for idx, off in zip(mb.indices, mb.offsets):
        assert np.array_equal(off, np.arange(51) * 4) and idx.shape == (200,)
        assert off.dtype == np.int64 and idx.dtype == np.int64


def test_variable_bag_sizes_uniform_in_one_to_bag_size():
    mb = SyntheticData(1, [100] * 3, 20_000, bag_size=5, fixed_bag_size=False).batch(0, 20_000)
    for idx, off in zip(mb.indices, mb.offsets):
        sizes = np.diff(off)
        assert off[0] == 0 and off[-1] == idx.size and off.shape == (20_001,)
        assert sizes.min() == 1 and sizes.max() == 5
        np.testing.assert_allclose(np.bincount(sizes)[1:] / 20_000, 0.2, atol=0.015)
    assert not np.array_equal(np.diff(mb.offsets[0]), np.diff(mb.offsets[1]))


@pytest.mark.parametrize("bag,fixed,dist", [(1, True, "random"), (3, True, "power-law"),
                                            (4, False, "random"), (2, False, "power-law")])
def test_truth_is_the_planted_model(bag, fixed, dist):
    d = SyntheticData(4, [7, 1, 50], 40, distribution=dist, bag_size=bag, fixed_bag_size=fixed,
                      signal=1.5, bias=-0.3, seed=5)
    mb = d.batch(1, 16)
    np.testing.assert_allclose(mb.truth, 1 / (1 + np.exp(-planted_logit_reference(d, mb))),
                               rtol=1e-12)
    assert set(np.unique(mb.labels)) <= {0.0, 1.0} and mb.labels.dtype == np.float32


def test_row_effects_are_shared_by_splits_and_differ_by_table_and_seed():
    d = SyntheticData(2, [10**7, 10**7], 10)
    rows = np.array([0, 1, 9_999_999])
    assert np.array_equal(d.row_effects(0, rows), SyntheticData(2, [10**7, 10**7], 99)
                          .row_effects(0, rows))
    assert not np.allclose(d.row_effects(0, rows), d.row_effects(1, rows))
    assert not np.allclose(d.row_effects(0, rows), SyntheticData(2, [10**7] * 2, 10, seed=1)
                           .row_effects(0, rows))


@pytest.mark.parametrize("distribution", ["random", "power-law"])
@pytest.mark.parametrize("dense_distribution", ["uniform", "lognormal"])
def test_default_planted_auc_is_clearly_above_half(distribution, dense_distribution):
    d = SyntheticData(13, [1000] * 26, 50_000, distribution=distribution,
                      dense_distribution=dense_distribution)
    mb = d.batch(0, 50_000, "test")
    auc = roc_auc(mb.labels, mb.truth)
    assert 0.72 < auc < 0.88, auc
    assert 0.1 < mb.labels.mean() < 0.6


def test_lognormal_dense_features_look_like_log_counts():
    mb = SyntheticData(13, [10], 20_000, dense_distribution="lognormal").batch(0, 20_000)
    assert mb.dense.dtype == np.float32 and mb.dense.shape == (20_000, 13)
    assert mb.dense.min() > 0 and np.median(mb.dense) == pytest.approx(math.log(2), abs=0.02)
    assert np.mean(mb.dense) > np.median(mb.dense)  # right-skewed


def test_uniform_dense_features():
    mb = SyntheticData(5, [10], 20_000).batch(0, 20_000)
    assert mb.dense.dtype == np.float32 and 0 <= mb.dense.min() and mb.dense.max() < 1
    np.testing.assert_allclose(mb.dense.mean(axis=0), 0.5, atol=0.01)


# ----------------------------------------------------------------------------
# determinism, addressability, sizes
# ----------------------------------------------------------------------------
def assert_same_batch(a, b):
    for x, y in zip(a, b):
        if isinstance(x, list):
            assert len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y))
        else:
            assert np.array_equal(x, y)


def kwargs():
    return dict(num_dense=3, table_sizes=[5, 1000, 10**7], num_samples=1000,
                distribution="power-law", exponents=[0.9, 1.0, 1.2], bag_size=3,
                fixed_bag_size=False, seed=11)


def test_batch_regenerated_alone_equals_batch_in_sequence():
    sequence = [SyntheticData(**kwargs()).batch(i, 64) for i in range(16)]
    alone = SyntheticData(**kwargs())
    for i in (9, 0, 15, 3):
        assert_same_batch(alone.batch(i, 64), sequence[i])
    assert not np.array_equal(sequence[0].dense, sequence[1].dense)


def test_splits_and_seeds_are_independent_streams():
    d = SyntheticData(**kwargs())
    train, test, val = (d.batch(0, 64, s) for s in ("train", "test", "val"))
    assert not np.array_equal(train.dense, test.dense)
    assert not np.array_equal(test.dense, val.dense)
    other = SyntheticData(**{**kwargs(), "seed": 12}).batch(0, 64)
    assert not np.array_equal(train.dense, other.dense)


def test_num_batches_and_partial_last_batch():
    d = SyntheticData(2, [4], 10)
    assert d.num_batches(3) == 4 and d.num_batches(10) == 1 and d.num_batches(11) == 1
    last = d.batch(3, 3)
    assert last.labels.shape == (1,) and last.dense.shape == (1, 2)
    assert last.offsets[0].shape == (2,) and last.truth.shape == (1,)
    assert SyntheticData(2, [4], 0).num_batches(5) == 0
    assert d.num_dense == 2 and d.table_sizes == (4,)


@pytest.mark.parametrize("bad", [
    dict(table_sizes=[0]), dict(table_sizes=[2 ** 32 + 1]), dict(distribution="zipf"), dict(dense_distribution="normal"),
    dict(bag_size=0), dict(exponents=[1.1, 1.2]), dict(exponents=-1.0),
    dict(exponents=float("nan")), dict(num_samples=-1), dict(seed=-1)])
def test_bad_arguments_raise(bad):
    args = dict(num_dense=2, table_sizes=[4], num_samples=10)
    with pytest.raises(ValueError):
        SyntheticData(**{**args, **bad})


def test_bad_batch_requests_raise():
    d = SyntheticData(2, [4], 10)
    for index, size, split in ((4, 3, "train"), (-1, 3, "train"), (0, 0, "train"),
                               (0, 3, "all")):
        with pytest.raises(ValueError):
            d.batch(index, size, split)


# ----------------------------------------------------------------------------
# SyntheticLoader
# ----------------------------------------------------------------------------
def test_synthetic_loader_resume_and_len():
    d = SyntheticData(**kwargs())
    ld = SyntheticLoader(d, 96, "val")
    full = list(ld.epoch(0))
    assert len(ld) == len(full) == 11 and full[-1].labels.shape == (40,)
    assert_same_batch(full[5], d.batch(5, 96, "val"))
    for start in (0, 4, 10, 11):
        tail = list(ld.epoch(1, start))
        assert len(tail) == 11 - start
        for a, b in zip(tail, full[start:]):
            assert_same_batch(a, b)
    with pytest.raises(ValueError):
        ld.epoch(0, 12)


@pytest.mark.parametrize("W", [2, 3, 5])
def test_synthetic_loader_rank_slices_concatenate_to_the_global_batch(W):
    d = SyntheticData(**kwargs())
    whole = list(SyntheticLoader(d, 13, "train").epoch(0))
    parts = [list(SyntheticLoader(d, 13, "train", rank=r, world_size=W).epoch(0))
             for r in range(W)]
    for i, mb in enumerate(whole[:5] + whole[-1:]):
        i = i if i < 5 else len(whole) - 1
        pieces = [p[i] for p in parts]
        assert [p.size for p in pieces] == [len(a) for a in np.array_split(range(mb.size), W)]
        assert np.array_equal(np.concatenate([p.dense for p in pieces]), mb.dense)
        assert np.array_equal(np.concatenate([p.truth for p in pieces]), mb.truth)
        for k in range(3):
            assert np.array_equal(np.concatenate([p.indices[k] for p in pieces]), mb.indices[k])
            sizes = np.concatenate([np.diff(p.offsets[k]) for p in pieces])
            assert np.array_equal(sizes, np.diff(mb.offsets[k]))
            assert all(p.offsets[k][0] == 0 for p in pieces)
    with pytest.raises(ValueError):
        SyntheticLoader(d, 13, rank=W, world_size=W)

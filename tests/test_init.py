"""Initialisation is bit for bit the reference DLRM's NumPy draws."""
import numpy as np
import pytest

import npdlrm
import npdlrm.init


def reference_draws(rng, table_sizes, D, bottom, top_in_width, top, dtype=np.float32):
    """The reference DLRM's order: tables, then bottom MLP, then top MLP; W then b."""
    out = {}
    for k, n in enumerate(table_sizes):
        out[f"embeddings.{k}.weight"] = rng.uniform(
            -np.sqrt(1 / n), np.sqrt(1 / n), size=(n, D)).astype(dtype)
    for prefix, sizes in (("bottom_mlp", bottom), ("top_mlp", (top_in_width,) + tuple(top))):
        for i in range(len(sizes) - 1):
            n, m = sizes[i], sizes[i + 1]
            out[f"{prefix}.{i}.weight"] = rng.normal(0, np.sqrt(2 / (m + n)),
                                                     size=(m, n)).astype(dtype)
            out[f"{prefix}.{i}.bias"] = rng.normal(0, np.sqrt(1 / m), size=m).astype(dtype)
    return out


def assert_bitwise(model, expect):
    sd = model.state_dict()
    assert set(sd) == set(expect)
    for name, a in expect.items():
        assert sd[name].dtype == a.dtype, name
        assert sd[name].shape == a.shape, name
        assert np.array_equal(sd[name], a), name
        assert sd[name].tobytes() == a.tobytes(), name  # bitwise, -0.0 included


ARCHS = [
    # bottom, top, tables, D, interaction, itself -> top input width
    ("4-3-2", "3-1", (5, 6, 7), 2, "dot", False, 6 + 2),
    ("13-16-8", "16-4-1", (20, 3, 11, 40), 8, "dot", False, 10 + 8),
    ("13-16-8", "16-4-1", (20, 3, 11, 40), 8, "dot", True, 15 + 8),
    ("5-4", "7-1", (9, 2), 4, "cat", False, 3 * 4),
]


@pytest.mark.parametrize("seed", [0, 123, 2 ** 31 - 1])
@pytest.mark.parametrize("bot,top,tables,D,op,itself,width", ARCHS)
def test_reference_init_bitwise(bot, top, tables, D, op, itself, width, seed):
    model = npdlrm.DLRM.from_arch(arch_mlp_bot=bot, arch_mlp_top=top,
                                  arch_embedding_size="-".join(map(str, tables)),
                                  arch_sparse_feature_size=D, arch_interaction_op=op,
                                  arch_interaction_itself=itself, seed=seed)
    assert model.config.top_sizes[0] == width
    bottom = tuple(int(v) for v in bot.split("-"))
    topw = tuple(int(v) for v in top.split("-"))
    expect = reference_draws(np.random.RandomState(seed), tables, D, bottom, width, topw)
    assert_bitwise(model, expect)


def test_default_seed_is_123():
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="4-3-2", arch_mlp_top="3-1",
                                  arch_embedding_size="5-6-7", arch_sparse_feature_size=2)
    expect = reference_draws(np.random.RandomState(123), (5, 6, 7), 2, (4, 3, 2), 8, (3, 1))
    assert_bitwise(model, expect)


def test_global_seed_stream_is_the_same():
    """The reference calls np.random.seed(s) and draws from the global stream."""
    seed = 2024
    np.random.seed(seed)
    expect = reference_draws(np.random, (5, 6, 7), 2, (4, 3, 2), 8, (3, 1))
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="4-3-2", arch_mlp_top="3-1",
                                  arch_embedding_size="5-6-7", arch_sparse_feature_size=2,
                                  seed=seed)
    assert_bitwise(model, expect)


def test_float64_model_keeps_the_float64_draws():
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="4-3-2", arch_mlp_top="3-1",
                                  arch_embedding_size="5-6-7", arch_sparse_feature_size=2,
                                  seed=5, dtype="float64")
    expect = reference_draws(np.random.RandomState(5), (5, 6, 7), 2, (4, 3, 2), 8, (3, 1),
                             dtype=np.float64)
    assert_bitwise(model, expect)


@pytest.mark.parametrize("chunk", [1, 3, 4, 7, 1000])
def test_chunked_table_draws_are_identical(monkeypatch, chunk):
    """Tables larger than ROWS_PER_CHUNK are drawn in chunks: same values as one draw."""
    monkeypatch.setattr(npdlrm.init, "ROWS_PER_CHUNK", chunk)
    assert npdlrm.init.ROWS_PER_CHUNK == chunk
    tables = (10, 3, 23)  # tables smaller, equal to and larger than the chunk, with tails
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="4-3", arch_mlp_top="5-1",
                                  arch_embedding_size="10-3-23", arch_sparse_feature_size=3,
                                  seed=77)
    expect = reference_draws(np.random.RandomState(77), tables, 3, (4, 3), 6 + 3, (5, 1))
    assert_bitwise(model, expect)


def test_chunking_is_actually_used(monkeypatch):
    """Guard against the monkeypatch above being a no-op: with a chunk of 4 rows, a table of
    10 rows is filled by 3 draws."""
    monkeypatch.setattr(npdlrm.init, "ROWS_PER_CHUNK", 4)
    calls = []

    class Spy(np.random.RandomState):
        def uniform(self, *a, **kw):
            calls.append(kw.get("size", a[2] if len(a) > 2 else None))
            return super().uniform(*a, **kw)

    w = np.empty((10, 2), np.float32)
    npdlrm.init.fill_table_reference(w, Spy(1))
    assert [tuple(c) for c in calls] == [(4, 2), (4, 2), (2, 2)]
    assert np.array_equal(w, np.random.RandomState(1).uniform(
        -np.sqrt(0.1), np.sqrt(0.1), size=(10, 2)).astype(np.float32))


def test_different_seeds_differ_and_same_seed_repeats():
    kw = dict(arch_mlp_bot="4-3-2", arch_mlp_top="3-1", arch_embedding_size="5-6-7",
              arch_sparse_feature_size=2)
    a = npdlrm.DLRM.from_arch(seed=1, **kw).state_dict()
    b = npdlrm.DLRM.from_arch(seed=1, **kw).state_dict()
    c = npdlrm.DLRM.from_arch(seed=2, **kw).state_dict()
    for k in a:
        assert np.array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k])


def test_fast_init_tables_in_range_and_deterministic():
    kw = dict(arch_mlp_bot="4-3-2", arch_mlp_top="3-1", arch_embedding_size="50-60-70",
              arch_sparse_feature_size=2, init="fast")
    a = npdlrm.DLRM.from_arch(seed=9, **kw).state_dict()
    b = npdlrm.DLRM.from_arch(seed=9, **kw).state_dict()
    ref = npdlrm.DLRM.from_arch(seed=9, **dict(kw, init="reference")).state_dict()
    for k in a:
        assert np.array_equal(a[k], b[k]) and a[k].dtype == np.float32
    for k, n in enumerate((50, 60, 70)):
        w = a[f"embeddings.{k}.weight"]
        bound = np.float32(np.sqrt(1 / n))
        assert np.abs(w).max() <= bound and np.unique(w).size == w.size
        assert not np.array_equal(w, ref[f"embeddings.{k}.weight"])

"""The quantized embedding-bag forward equals dequantize-then-lookup, bit for bit."""
import numpy as np
import pytest

from naive_quant import decode_rows, quant_embedding_bag_forward
from npdlrm.kernels.cpu import embedding_bag as eb
from npdlrm.kernels.embedding_bag_quant import POW2, half_to_float
from npdlrm.quantize import QuantizedTable, dequantize_table

NAMES = ["float32", "float16", "int8", "int4"]


def bags(rng, B, V, max_len):
    lengths = rng.integers(0, max_len + 1, B)
    lengths[: min(3, B)] = 0  # empty bags, first ones included
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = rng.integers(0, V, offsets[-1])
    return indices, offsets


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("D", [1, 3, 4, 7, 16])
@pytest.mark.parametrize("weighted,mean", [(False, False), (True, False), (False, True)])
def test_forward_equals_naive_dequantize_then_lookup(name, D, weighted, mean):
    rng = np.random.default_rng(D)
    V = 50
    w = (rng.standard_normal((V, D)) * rng.uniform(0.01, 3, (V, 1))).astype(np.float32)
    w[0] = 0.25  # a constant row
    table = QuantizedTable.from_weight(w, name)
    for B, max_len, idx_dtype in ((13, 6, np.int64), (300, 40, np.int32)):  # serial, parallel
        indices, offsets = bags(rng, B, V, max_len)
        indices = indices.astype(idx_dtype)
        psw = rng.standard_normal(indices.shape[0]).astype(np.float32) if weighted else None
        out = np.full((B, D), np.nan, np.float32)
        table.lookup(out, indices, offsets, psw, mean)
        ref = quant_embedding_bag_forward(table.rows, D, name, indices, offsets, psw, mean)
        assert np.array_equal(out, ref), (name, D, B)


def test_the_parallel_kernel_runs_and_equals_the_serial_one(monkeypatch):
    rng = np.random.default_rng(0)
    table = QuantizedTable.from_weight(rng.standard_normal((1000, 16)), "int4")
    indices, offsets = bags(rng, 512, 1000, 60)
    outs = []
    for threshold in (0, 1 << 60):
        monkeypatch.setattr(eb, "FORWARD_PARALLEL_MIN_WORK", threshold)
        import npdlrm.kernels.embedding_bag_quant as ebq
        monkeypatch.setattr(ebq, "FORWARD_PARALLEL_MIN_WORK", threshold)
        out = np.empty((512, 16), np.float32)
        table.lookup(out, indices, offsets)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])


def test_a_strided_output_view():
    rng = np.random.default_rng(1)
    table = QuantizedTable.from_weight(rng.standard_normal((40, 8)), "int8")
    indices, offsets = bags(rng, 20, 40, 5)
    T = np.zeros((20, 3, 8), np.float32)
    table.lookup(T[:, 1, :], indices, offsets)
    ref = quant_embedding_bag_forward(table.rows, 8, "int8", indices, offsets, None, False)
    assert np.array_equal(T[:, 1, :], ref) and not T[:, [0, 2]].any()


def test_half_decoding_is_exact_for_every_finite_half():
    bits = np.arange(1 << 16, dtype=np.uint16)
    halves = bits.view(np.float16)
    finite = np.isfinite(halves)
    got = np.array([half_to_float(b, POW2) for b in bits[finite]], np.float32)
    want = halves[finite].astype(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # signed zeros too


@pytest.mark.parametrize("name", NAMES)
def test_dequantize_table_follows_the_documented_layout(name):
    rng = np.random.default_rng(2)
    for D in (1, 2, 5, 8, 13):
        w = rng.standard_normal((9, D)).astype(np.float32) * 4
        table = QuantizedTable.from_weight(w, name)
        assert np.array_equal(table.dequantize(), decode_rows(table.rows, D, name))
        assert np.array_equal(dequantize_table(table.rows, D, name), table.dequantize())

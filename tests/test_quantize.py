"""Storage formats of inference weights (npdlrm/quantize.py): bytes, errors, refusals."""
import numpy as np
import pytest

from npdlrm.quantize import (QuantizedTable, dequantize_mlp_weight, mlp_weight_bytes,
                             quantize_mlp_weight, quantize_table, table_format)


def test_row_bytes_are_fbgemms_fused_rows_when_D_is_a_multiple_of_4():
    for D in (4, 16, 64, 128):
        assert table_format(8).row_bytes(D) == D + 8  # D bytes, float32 scale and bias
        assert table_format(4).row_bytes(D) == D // 2 + 4  # D/2 bytes, float16 scale, bias
        assert table_format(16).row_bytes(D) == 2 * D
        assert table_format(32).row_bytes(D) == 4 * D
    # other widths are padded so that the scale and bias stay aligned
    assert table_format(8).row_bytes(5) == 8 + 8
    assert table_format(4).row_bytes(5) == 4 + 4
    assert table_format("int4").table_bytes(1000, 16) == 12000


@pytest.mark.parametrize("bits,levels", [(8, 255), (4, 15)])
def test_rowwise_error_is_at_most_half_a_step(bits, levels):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((200, 16)) * rng.uniform(0.001, 10, (200, 1))).astype(np.float32)
    t = QuantizedTable.from_weight(w, bits)
    err = np.abs(t.dequantize() - w)
    step = (w.max(1) - w.min(1)) / levels
    # int4: the float16 scale and bias add a relative error of 2^-11 each
    slack = 1e-6 if bits == 8 else 2.0 ** -10 * (np.abs(w).max(1) + step * levels)
    assert (err.max(1) <= step / 2 * (1 + 1e-5) + slack).all()
    # the extremes of each row are (nearly) exact
    assert np.allclose(t.dequantize().min(1), w.min(1), rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("bits", [4, 8, 16, 32])
def test_constant_and_zero_rows_come_back_exactly(bits):
    w = np.zeros((3, 6), np.float32)
    w[1] = 0.5
    w[2] = -3.0
    assert np.array_equal(QuantizedTable.from_weight(w, bits).dequantize(), w)


def test_float16_and_float32_tables():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((10, 7)).astype(np.float32)
    assert np.array_equal(QuantizedTable.from_weight(w, 32).dequantize(), w)
    assert np.array_equal(QuantizedTable.from_weight(w, 16).dequantize(),
                          w.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_refusals_name_the_table(bits):
    w = np.ones((2, 4), np.float32)
    w[1, 2] = np.nan
    with pytest.raises(ValueError, match="table 3: holds non-finite"):
        quantize_table(w, table_format(bits), "table 3")
    if bits != 8:
        with pytest.raises(ValueError, match="table 1.*overflow"):
            quantize_table(np.full((1, 2), 1e5, np.float32), table_format(bits), "table 1")
    with pytest.raises(ValueError, match="got 3"):
        table_format(3)
    with pytest.raises(ValueError, match=r"\(V, 12\) uint8"):
        QuantizedTable(np.zeros((2, 11), np.uint8), 4, "int8")


def test_int8_mlp_weights_per_output_channel():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((5, 9)) * np.arange(1, 6)[:, None]).astype(np.float32)
    w[3] = 0
    stored = quantize_mlp_weight(w, 8)
    assert stored["weight"].dtype == np.int8 and stored["scale"].shape == (5,)
    back = dequantize_mlp_weight(stored, 8)
    assert (np.abs(back - w).max(1) <= stored["scale"] / 2 * (1 + 1e-6)).all()
    assert np.abs(stored["weight"]).max(1)[[0, 1, 2, 4]].tolist() == [127] * 4
    assert not back[3].any()
    assert np.array_equal(dequantize_mlp_weight(quantize_mlp_weight(w, 16), 16),
                          w.astype(np.float16).astype(np.float32))
    assert np.array_equal(dequantize_mlp_weight(quantize_mlp_weight(w, 32), 32), w)
    assert mlp_weight_bytes((5, 9), 8) == 45 + 20
    with pytest.raises(ValueError, match="got 4"):
        quantize_mlp_weight(w, 4)


# ---- the inference model and its serving file ---------------------------------------
from npdlrm import DLRM  # noqa: E402
from npdlrm.inference import InferenceModel  # noqa: E402
from npdlrm.serve_file import load_for_inference, load_serving, save_serving  # noqa: E402


def small_model(**kw):
    return DLRM.from_arch("13-16-8", "16-1", "40-300-9-1000", 8, seed=5, **kw)


def batch(rng, sizes, B=100):
    dense = rng.standard_normal((B, 13)).astype(np.float32)
    idx, off = [], []
    for V in sizes:
        lengths = rng.integers(0, 4, B)
        o = np.concatenate([[0], np.cumsum(lengths)])
        idx.append(rng.integers(0, V, o[-1]))
        off.append(o[:-1])
    return dense, idx, off


@pytest.mark.parametrize("kw", [{}, {"arch_interaction_op": "cat", "pooling": "mean",
                                     "loss_threshold": 0.01}])
def test_float32_inference_equals_dlrm_predict_bitwise(kw):
    model = small_model(**kw)
    rng = np.random.default_rng(3)
    for B in (1, 100, 700):
        x = batch(rng, model.config.table_sizes, B)
        assert np.array_equal(InferenceModel.from_model(model).predict(*x), model.predict(*x))


@pytest.mark.parametrize("emb,mlp,tol", [(16, 32, 1e-3), (8, 32, 1e-2), (4, 32, 0.1),
                                         (32, 8, 1e-2), (32, 16, 1e-3), (8, 8, 2e-2)])
def test_quantized_predictions_stay_close_to_float32(emb, mlp, tol):
    model = small_model()
    x = batch(np.random.default_rng(4), model.config.table_sizes, 500)
    p32 = model.predict(*x)
    q = InferenceModel.from_model(model, emb, mlp)
    diff = np.abs(q.predict(*x) - p32).max()
    assert 0 < diff < tol
    assert q.table_bytes == sum(table_format(emb).table_bytes(V, 8)
                                for V in model.config.table_sizes)


@pytest.mark.parametrize("emb,mlp", [(4, 8), (8, 16), (16, 32), (32, 32)])
def test_serving_file_round_trip(tmp_path, emb, mlp):
    model = small_model()
    q = InferenceModel.from_model(model, emb, mlp)
    path = tmp_path / "serve.h5"
    save_serving(path, q, source="ckpt.h5")
    back = load_serving(path)
    assert (back.emb_bits, back.mlp_bits) == (emb, mlp)
    x = batch(np.random.default_rng(5), model.config.table_sizes)
    assert np.array_equal(back.predict(*x), q.predict(*x))
    assert load_for_inference(path, emb, mlp).emb_bits == emb
    with pytest.raises(ValueError, match="quantize again"):
        load_for_inference(path, 4 if emb != 4 else 8)
    assert not list(tmp_path.glob(".*partial*"))  # the atomic write left nothing behind


def test_a_corrupted_serving_file_is_refused(tmp_path):
    import h5py
    path = tmp_path / "serve.h5"
    save_serving(path, InferenceModel.from_model(small_model(), 8))
    with h5py.File(path, "r+") as f:
        f["tables/1"][5, 0] ^= 1
    with pytest.raises(ValueError, match="tables/1.*CRC-32"):
        load_serving(path)
    load_serving(path, verify=False)  # uint8 rows: nothing non-finite to find
    with pytest.raises(ValueError, match="not an npdlrm serving file"):
        load_serving(_plain_h5(tmp_path))


def _plain_h5(tmp_path):
    import h5py
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "something"
    return path


def test_sharded_or_variant_models_are_refused_with_a_reason():
    model = small_model()
    model.embeddings.whole = False
    with pytest.raises(ValueError, match="whole model"):
        InferenceModel.from_model(model, 8)


def test_quotient_remainder_models_are_refused_with_a_reason():
    from npdlrm.config import DLRMConfig
    from npdlrm.inference import check_plain
    if not hasattr(DLRMConfig, "has_embedding_variants"):
        pytest.skip("this build has no embedding variants")
    cfg = DLRMConfig(table_sizes=(500, 10), embedding_dim=4, bottom_mlp=(13, 4),
                     top_mlp=(1,), qr_flag=True, qr_threshold=100)
    with pytest.raises(ValueError, match="plain tables only"):
        check_plain(cfg)

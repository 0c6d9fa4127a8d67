"""The reference's --loss-threshold: p clamped to [t, 1-t] in forward, loss and gradient."""
import numpy as np
import pytest

from gradcheck import tiny_batch, tiny_model
from test_model_grad import check_model_grads

import npdlrm


def shifted_model(t, shift):
    model = tiny_model(loss_threshold=t)
    bias = [n for n in model.params.names if n.startswith("top_mlp.")][-1]
    model.params.views[bias][...] += shift  # moves every logit by `shift`
    return model


@pytest.mark.parametrize("shift", [0.0, 3.8])  # probabilities near 0.13, then near 0.87
def test_clamped_probabilities_loss_and_grads(shift):
    dense, idx, off, y = tiny_batch(labels="binary")
    p_plain = shifted_model(0.0, shift).predict(dense, idx, off).astype(np.float64)
    q = np.sort(np.minimum(p_plain, 1 - p_plain))
    t = (q[0] + q[1]) / 2  # clamps exactly one sample, on the side the shift chose
    clamped = (p_plain < t) | (p_plain > 1 - t)
    assert clamped.sum() == 1
    model = shifted_model(t, shift)
    pc = np.clip(p_plain, t, 1 - t)
    np.testing.assert_allclose(model.predict(dense, idx, off), pc, rtol=1e-12, atol=1e-15)
    expect = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    loss, grads = model.loss_and_grad(dense, idx, off, y)
    assert loss == pytest.approx(expect, rel=1e-12)
    check_model_grads(model, dense, idx, off, y)
    # the clamped sample contributes no gradient, so the gradient differs from unclamped
    plain_grads = shifted_model(0.0, shift).loss_and_grad(dense, idx, off, y)[1]
    name = "top_mlp.0.weight" if "top_mlp.0.weight" in grads else sorted(grads)[-1]
    assert not np.allclose(grads[name], plain_grads[name])


def test_zero_threshold_changes_nothing():
    dense, idx, off, y = tiny_batch(labels="binary")
    a, b = tiny_model(), tiny_model(loss_threshold=0.0)
    assert a.loss_and_grad(dense, idx, off, y)[0] == b.loss_and_grad(dense, idx, off, y)[0]


@pytest.mark.parametrize("t", [-0.1, 1.0, 2.0])
def test_bad_threshold_is_refused(t):
    with pytest.raises(ValueError, match="loss_threshold"):
        npdlrm.DLRMConfig(table_sizes=(5,), embedding_dim=2, bottom_mlp=(3, 2), top_mlp=(1,),
                          loss_threshold=t)

"""Issue 9, the smaller input faults: a batch-size mismatch read as B+1 offsets, string
labels, and a learning rate so high that an update overflows before the loss does."""
import numpy as np
import pytest

import npdlrm


def model():
    return npdlrm.DLRM.from_arch(arch_mlp_bot="3-4-2", arch_mlp_top="4-1",
                                 arch_embedding_size="10-10", arch_sparse_feature_size=2)


def batch(B=3):
    rng = np.random.default_rng(0)
    return (rng.random((B, 3), dtype=np.float32), [np.arange(B) % 10, np.arange(B) % 10],
            [np.arange(B), np.arange(B)], (np.arange(B) % 2).astype(np.float32))


def test_offsets_for_another_batch_size_say_so():
    dense, _, _, labels = batch(3)
    indices = [np.arange(4), np.arange(4)]  # 4 bags of one index
    offsets = [np.arange(4), np.arange(4)]  # their starts: 4, for a dense batch of 3
    with pytest.raises(ValueError, match=r"table 0: 4 offsets for a batch of 3 samples .* "
                                         r"the batch sizes differ"):
        model().predict(dense, indices, offsets)


@pytest.mark.parametrize("labels", [["1", "0", "1"], np.array(["1", "0", "1"]),
                                    np.array([b"1", b"0", b"1"])])
def test_string_labels_are_refused(labels):
    dense, indices, offsets, _ = batch(3)
    with pytest.raises(ValueError, match="labels must be numbers"):
        model().train_step(dense, indices, offsets, labels, npdlrm.Optimizer("sgd"))


@pytest.mark.parametrize("lr,what", [(1e38, "huge values"), (1e39, "non-finite values")])
def test_an_overflowing_update_is_named_when_the_next_loss_is_refused(lr, what):
    m = model()
    opt = npdlrm.Optimizer("sgd", lr=lr)  # 1e39 is inf in float32
    dense, indices, offsets, labels = batch(3)
    losses = []
    with pytest.raises(FloatingPointError) as refused, np.errstate(all="ignore"):
        for _ in range(5):
            losses.append(m.train_step(dense, indices, offsets, labels, opt))
    assert losses and all(np.isfinite(losses))  # the first step's loss was finite...
    text = str(refused.value)
    # ...but its update wrote inf: the refusal says where, and what to do
    assert f"the parameters already hold {what}" in text
    assert "lower the learning rate and resume from a checkpoint" in text
    assert any(name in text for name in m.state_dict())

"""Where a step's time goes: each stage of the engine's training step timed on its own.

Uses the engine's stage objects (model.bottom/top/interaction/embeddings/params) and
npdlrm.inputs.make_batch / npdlrm.loss.compute_loss, on inputs of the right shapes.
Gradients fed to the backward stages are random, of the size a real step sees.
"""
import numpy as np
from npdlrm.inputs import make_batch
from npdlrm.loss import compute_loss


class StageInputs:
    """Checked batches and random activations/gradients for one (model, batch size)."""

    def __init__(self, model, batches, seed=1):
        cfg = model.config
        dtype = model.params.dtype
        rng = np.random.default_rng(seed)
        B = batches[0][0].shape[0]
        F, D = cfg.num_features, cfg.embedding_dim

        def rand(*shape, scale=1.0):
            return (rng.standard_normal(shape) * scale).astype(dtype)

        self.batches = batches
        self.checked = [make_batch(cfg, *b) for b in batches]
        self.T = rand(B, F, D, scale=0.1)  # interaction input (B, F, D)
        self.R = rand(B, cfg.top_input_width, scale=0.1)  # top MLP input (B, D + P)
        self.dR = rand(B, cfg.top_input_width, scale=1e-3 / B)  # interaction grad
        self.dT = rand(B, F, D, scale=1e-2 / B)  # embedding grads: dT[:, 1:]
        self.dbot = rand(B, D, scale=1e-2 / B)  # bottom MLP output grad
        self.dlogit = rand(B, 1, scale=1.0 / B)  # top MLP output grad
        self.z = rand(B)  # logits for the loss


def mlp_forward(model, dense, R, keep):
    model.bottom.forward(dense, keep)
    model.top.forward(R, keep)


def mlp_step(model, opt, lr, dense, R, dlogit, dbot):
    """The MLP part of a step: zero grads, both MLPs forward and backward, dense SGD."""
    model.params.zero_grad()
    mlp_forward(model, dense, R, keep=True)
    model.top.backward(dlogit.copy())  # backward consumes its input
    model.bottom.backward(dbot.copy(), need_dx=False)
    opt.step_dense(model.params, lr)


def time_stages(model, opt, lr, inputs, timer):
    """{stage: timing dict}; timer(fn) times fn(i) for i = 0, 1, ..."""
    cfg, s = model.config, inputs
    n = len(s.batches)
    emb = model.embeddings

    def interaction(i):
        model.interaction.forward(s.T, keep=True)
        model.interaction.backward(s.dR)

    return {
        "check batch": timer(lambda i: make_batch(cfg, *s.batches[i % n])),
        "embedding lookup": timer(lambda i: emb.forward(s.T[:, 1:, :], s.checked[i % n])),
        "MLP forward": timer(lambda i: mlp_forward(model, s.batches[i % n][0], s.R, False)),
        "MLP fwd+bwd+step": timer(lambda i: mlp_step(model, opt, lr, s.batches[i % n][0], s.R,
                                                     s.dlogit, s.dbot)),
        "dense SGD step": timer(lambda i: opt.step_dense(model.params, lr)),
        "interaction fwd+bwd": timer(interaction),
        "loss": timer(lambda i: compute_loss(cfg.loss, s.z, s.batches[i % n][3],
                                             cfg.loss_weights)),
        "embedding update": timer(lambda i: emb.update(opt.sparse, lr, opt.eps, s.dT[:, 1:, :],
                                                       s.checked[i % n])),
    }


# Stages that add up to a step (the others are contained in these).
STEP_STAGES = ("check batch", "embedding lookup", "MLP fwd+bwd+step", "interaction fwd+bwd",
               "loss", "embedding update")

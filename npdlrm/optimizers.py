"""Optimizers: sparse (embedding tables) and dense (MLPs), with the LR policy.

The Optimizer holds hyper-parameters and the step counter; the state arrays live
with what they update (FlatParams.state for dense, EmbeddingTable.state for rows).
"""
import weakref

import numpy as np

from .backend import get_array_module
from .lr_policy import LRPolicy

SPARSE_KINDS = ("sgd", "adagrad", "rwsadagrad")
DENSE_KINDS = ("sgd", "adagrad", "adam")
DENSE_DEFAULT = {"sgd": "sgd", "adagrad": "adagrad", "rwsadagrad": "adagrad"}


class Optimizer:
    """name: 'sgd' | 'adagrad' | 'rwsadagrad' for the tables (and, as in the reference,
    the MLPs: row-wise Adagrad's dense counterpart is Adagrad); dense: override the
    MLPs' optimizer ('sgd' | 'adagrad' | 'adam').
    """

    def __init__(self, name="sgd", lr=0.01, dense=None, eps=1e-10,
                 adam_betas=(0.9, 0.999), adam_eps=1e-8,
                 num_warmup_steps=0, decay_start_step=0, num_decay_steps=0):
        if name not in SPARSE_KINDS:
            raise ValueError(f"optimizer must be one of {SPARSE_KINDS}, got {name!r}")
        dense = dense or DENSE_DEFAULT[name]
        if dense not in DENSE_KINDS:
            raise ValueError(f"dense optimizer must be one of {DENSE_KINDS}, got {dense!r}")
        if not eps > 0 or not adam_eps > 0:
            raise ValueError(f"eps must be positive, got {eps} / {adam_eps}")
        self.sparse, self.dense = name, dense
        self.eps, self.adam_betas, self.adam_eps = float(eps), tuple(adam_betas), float(adam_eps)
        self.policy = LRPolicy(lr, num_warmup_steps, decay_start_step, num_decay_steps)
        self.step_count = 0  # completed steps
        self._model = None  # weak reference to the one model this optimizer steps

    def to_dict(self):
        """The hyper-parameters (JSON-able): `Optimizer.from_dict` rebuilds an equal one."""
        p = self.policy
        return {"name": self.sparse, "dense": self.dense, "lr": p.base_lr, "eps": self.eps,
                "adam_betas": list(self.adam_betas), "adam_eps": self.adam_eps,
                "num_warmup_steps": p.W, "decay_start_step": p.S, "num_decay_steps": p.N}

    @classmethod
    def from_dict(cls, hyper):
        """A new Optimizer (step count 0) from `to_dict`'s hyper-parameters."""
        known = set(cls().to_dict())
        unknown = sorted(set(hyper) - known)
        if unknown:
            raise ValueError(f"unknown optimizer hyper-parameter {unknown[0]!r}; expected some "
                             f"of {sorted(known)}")
        return cls(**hyper)

    def check_bind(self, model):
        """Raise ValueError if this optimizer already steps a model other than `model`."""
        bound = self._model() if self._model is not None else None
        if bound is not None and bound is not model:
            raise ValueError("this Optimizer already steps another model (its step count and "
                             "learning-rate schedule belong to that model): make one per model")

    def bind(self, model):
        """Tie this optimizer (its step count and LR schedule) to one model."""
        self.check_bind(model)
        if self._model is None or self._model() is None:
            self._model = weakref.ref(model)

    @property
    def lr(self):
        """The learning rate of the next step."""
        return self.policy(self.step_count)

    def step_dense(self, params, lr):
        """Update FlatParams `params` from its grad buffer (one flat op each)."""
        p, g, state = params.data, params.grad, params.state
        xp = get_array_module(p)
        if self.dense == "sgd":
            p -= lr * g
        elif self.dense == "adagrad":
            acc = _state(state, "adagrad.sum", p)
            acc += g * g
            p -= lr * (g / (xp.sqrt(acc) + self.eps))  # torch's rounding: lr * (g / std)
        else:
            b1, b2 = self.adam_betas
            m, v = _state(state, "adam.m", p), _state(state, "adam.v", p)
            steps = state.setdefault("adam.step", np.zeros((), np.int64))  # kept with m, v
            steps += 1
            t = int(steps)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            denom = xp.sqrt(v) / np.sqrt(1 - b2 ** t) + self.adam_eps
            p -= (lr / (1 - b1 ** t)) * m / denom

    def finish_step(self):
        self.step_count += 1


def _state(state, key, like):
    if key not in state:
        state[key] = get_array_module(like).zeros_like(like)
    return state[key]

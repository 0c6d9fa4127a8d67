"""Feature interaction: pairwise dot products ('dot') or concatenation ('cat')."""
from . import backend
from .backend import get_array_module
from .kernels.pairs import num_pairs
from .workspace import Workspace


class DotInteraction:
    """T: (B, F, D) = [bottom_out, e_0, ...] -> (B, D + P): bottom_out, then the
    dot products of the pairs `for i in range(F): for j in range(i (+1))`."""

    def __init__(self, F, D, self_interaction=False):
        self.F, self.D, self.self_interaction = F, D, self_interaction
        self.out_width = D + num_pairs(F, self_interaction)
        self._T = None
        self.ws = None

    def forward(self, T, keep=True):
        """T: (B, F, D) contiguous; returns (B, D + P)."""
        xp = get_array_module(T)
        if self.ws is None or self.ws.dtype != T.dtype or self.ws.xp is not xp:
            self.ws = Workspace(T.dtype, xp)
        out = self.ws.get("out", (T.shape[0], self.out_width))
        backend.kernels(T).dot_interaction_forward(out, T, self.self_interaction)
        self._T = T if keep else None
        return out

    def backward(self, dout):
        """dout: (B, D + P); returns dT: (B, F, D)."""
        T = self._T
        dT = self.ws.get("dT", T.shape)
        backend.kernels(T).dot_interaction_backward(
            dT, self.ws.contiguous("dout", dout), T, self.self_interaction)
        self._T = None
        return dT


class CatInteraction:
    """T: (B, F, D) -> (B, F * D): bottom_out then every pooled embedding."""

    def __init__(self, F, D):
        self.F, self.D = F, D
        self.out_width = F * D

    def forward(self, T, keep=True):
        return T.reshape(T.shape[0], self.F * self.D)

    def backward(self, dout):
        xp = get_array_module(dout)
        return xp.ascontiguousarray(dout).reshape(dout.shape[0], self.F, self.D)


def make_interaction(kind, F, D, self_interaction=False):
    if kind == "dot":
        return DotInteraction(F, D, self_interaction)
    if kind == "cat":
        return CatInteraction(F, D)
    raise ValueError(f"interaction must be 'dot' or 'cat', got {kind!r}")

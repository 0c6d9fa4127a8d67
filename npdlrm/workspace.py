"""Scratch arrays reused from step to step.

Large temporaries allocated afresh each step come back from the OS as new pages
(thousands of page faults per step at batch 2048); keeping them avoids that.
A model is therefore not safe to call from two threads at once.
"""
import numpy as np


class Workspace:
    """Arrays by key, reallocated only when the requested shape changes."""

    def __init__(self, dtype, xp=np):
        self.dtype = np.dtype(dtype)
        self.xp = xp  # numpy, or cupy for a model on the GPU
        self._arrays = {}

    def get(self, key, shape):
        shape = tuple(shape)
        a = self._arrays.get(key)
        if a is None or a.shape != shape:
            a = self._arrays[key] = self.xp.empty(shape, dtype=self.dtype)
        return a

    def contiguous(self, key, a):
        """`a` itself if C-contiguous, else a copy of it in the buffer `key`."""
        if a.flags.c_contiguous:
            return a
        out = self.get(key, a.shape)
        out[...] = a
        return out

    def nbytes(self):
        return sum(a.nbytes for a in self._arrays.values())

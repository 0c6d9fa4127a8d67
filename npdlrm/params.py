"""Dense parameters in one flat buffer (one allreduce per step later)."""
import numpy as np


class FlatParams:
    """Named dense tensors stored as views into one flat array, with a twin for grads.

    specs: sequence of (name, shape). `data`/`grad` are the flat buffers;
    `views[name]` and `grads[name]` are the shaped views.
    """

    def __init__(self, specs, dtype):
        self.dtype = np.dtype(dtype)
        self.xp = np  # the array module of data, grad and state (model.to moves them)
        self.names = [name for name, _ in specs]
        self.shapes = {name: tuple(shape) for name, shape in specs}
        total = sum(int(np.prod(s)) for s in self.shapes.values())
        self.data = np.zeros(total, dtype=self.dtype)
        self.grad = np.zeros(total, dtype=self.dtype)
        self.state = {}  # dense optimizer state: name -> flat array like data
        self.slices = {}
        start = 0
        for name in self.names:
            stop = start + int(np.prod(self.shapes[name]))
            self.slices[name] = slice(start, stop)
            start = stop
        self._make_views()

    def _make_views(self):
        self.views = {n: self.data[s].reshape(self.shapes[n]) for n, s in self.slices.items()}
        self.grads = {n: self.grad[s].reshape(self.shapes[n]) for n, s in self.slices.items()}

    def to(self, xp, move):
        """Move data, grad and state with `move` (an array -> array on xp's device)."""
        self.data, self.grad = move(self.data), move(self.grad)
        self.state = {k: v if k == "adam.step" else move(v) for k, v in self.state.items()}
        self.xp = xp
        self._make_views()

    @property
    def size(self):
        return self.data.size

    def zero_grad(self):
        self.grad.fill(0)

    def use_grad_buffer(self, buf):
        """Keep the gradients in `buf` (P,), e.g. the front of a larger buffer that is
        reduced in one call; the current gradient values are copied into it."""
        if buf.shape != self.grad.shape or buf.dtype != self.dtype:
            raise ValueError(f"gradient buffer must be {self.grad.shape} {self.dtype}, got "
                             f"{buf.shape} {buf.dtype}")
        buf[...] = self.grad
        self.grad = buf
        for name in self.names:
            self.grads[name] = buf[self.slices[name]].reshape(self.shapes[name])

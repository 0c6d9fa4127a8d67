"""A stack of Linear layers with an activation (ReLU: fused with the bias on the hot path)."""
from .activations import activation_backward, activation_forward, check_activation
from .linear import linear_backward, linear_forward
from .workspace import Workspace


class MLP:
    """Linear layers sized by `sizes`; the activation (relu, sigmoid or tanh) after every
    layer, or all but the last (relu_last False).

    Parameters live in a FlatParams under `{prefix}.{i}.weight` ([out, in]) and
    `{prefix}.{i}.bias`; gradients are added into its grad buffer.
    """

    def __init__(self, sizes, relu_last, params, prefix, activation="relu"):
        self.sizes = tuple(sizes)
        self.relu_last = relu_last
        self.activation = check_activation(activation)
        self.params = params
        n = len(self.sizes) - 1
        self.names = [(f"{prefix}.{i}.weight", f"{prefix}.{i}.bias") for i in range(n)]
        self.relu = [i < n - 1 or relu_last for i in range(n)]  # activated layers
        self.ws = Workspace(params.dtype, params.xp)  # activations and gradients, reused
        self._inputs = None  # per layer: its input (B, in)
        self._outputs = None  # per layer: its output (B, out)

    @staticmethod
    def param_specs(sizes, prefix):
        specs = []
        for i in range(len(sizes) - 1):
            specs.append((f"{prefix}.{i}.weight", (sizes[i + 1], sizes[i])))
            specs.append((f"{prefix}.{i}.bias", (sizes[i + 1],)))
        return specs

    def layers(self):
        """[(weight, bias)] views, in order."""
        v = self.params.views
        return [(v[w], v[b]) for w, b in self.names]

    def forward(self, x, keep=True):
        """x: (B, sizes[0]); returns (B, sizes[-1]). keep: remember what backward needs."""
        inputs, outputs = [], []
        h = x
        for i, ((wname, bname), relu) in enumerate(zip(self.names, self.relu)):
            w, b = self.params.views[wname], self.params.views[bname]
            out = self.ws.get(("y", i), (h.shape[0], w.shape[0]))
            fused = relu and self.activation == "relu"
            y = linear_forward(h, w, b, fused, out=out)
            if relu and not fused:
                activation_forward(self.activation, y)
            inputs.append(h)
            outputs.append(y)
            h = y
        if keep:
            self._inputs, self._outputs = inputs, outputs
        return h

    def backward(self, dy, need_dx=True):
        """dy: (B, sizes[-1]), consumed (modified in place); adds parameter grads.

        Returns dx: (B, sizes[0]), or None when need_dx is False.
        """
        if self._inputs is None:
            raise RuntimeError("MLP.backward called without a kept forward pass")
        dy = self.ws.contiguous("dy", dy)
        v, g = self.params.views, self.params.grads
        for i in range(len(self.names) - 1, -1, -1):
            wname, bname = self.names[i]
            y = self._outputs[i] if self.relu[i] else None
            if y is not None and self.activation != "relu":
                activation_backward(self.activation, dy, y)
                y = None  # the activation is done; linear_backward sees a plain layer
            x, w = self._inputs[i], v[wname]
            need = i > 0 or need_dx
            dy = linear_backward(g[wname], g[bname], dy, x, w, y=y, need_dx=need,
                                 dx_out=self.ws.get(("dx", i), x.shape) if need else None,
                                 dw_tmp=self.ws.get(("dw", i), w.shape))
        self._inputs = self._outputs = None
        return dy if need_dx else None

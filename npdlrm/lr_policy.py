"""The reference DLRM's learning-rate policy: linear warm-up, then degree-2 decay."""

MIN_DECAY_LR = 1e-7


class LRPolicy:
    """lr(step) for step = number of completed optimizer steps (0 for the first).

    As the reference scheduler (whose counter s = step + 1): s < W warms up as
    base * s / W; S <= s < S + N decays as max(1e-7, base * ((N - (s - S)) / N)^2);
    otherwise, when N > 0, the last warm-up or decay value is kept (the reference's
    freeze, also between warm-up and decay), else base.
    """

    def __init__(self, base_lr, num_warmup_steps=0, decay_start_step=0, num_decay_steps=0):
        W, S, N = int(num_warmup_steps), int(decay_start_step), int(num_decay_steps)
        if base_lr < 0 or W < 0 or S < 0 or N < 0:
            raise ValueError(f"learning rate and step counts must be >= 0, got lr={base_lr}, "
                             f"warmup={W}, decay start={S}, decay steps={N}")
        if S < W:
            raise ValueError(f"learning rate warm-up ({W} steps) must finish before the "
                             f"decay starts (step {S})")
        self.base_lr, self.W, self.S, self.N = float(base_lr), W, S, N

    def _warmup(self, s):
        return self.base_lr * (1.0 - (self.W - s) / self.W)

    def _decay(self, s):
        scale = ((self.N - (s - self.S)) / self.N) ** 2
        return max(MIN_DECAY_LR, self.base_lr * scale)

    def __call__(self, step):
        s = step + 1
        W, S, N = self.W, self.S, self.N
        if s < W:
            return self._warmup(s)
        if S <= s < S + N:
            return self._decay(s)
        if N == 0:
            return self.base_lr
        last = S + N - 1 if s >= S + N else W - 1  # the last step that set a value
        if s >= S + N and last >= max(S, 1):
            return self._decay(last)
        if W - 1 >= 1:
            return self._warmup(W - 1)
        return self.base_lr

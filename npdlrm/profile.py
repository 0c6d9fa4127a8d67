"""Per-stage wall time of the real training step (`npdlrm train --enable-profiling`).

The stages are timed inside `DLRM.train_step` as it runs, not alone: what a stage leaves
in the caches for the next is part of the numbers, and "between steps" is the time the
training loop spends outside `train_step` (the next batch, the loop's bookkeeping).
"""
import time


class StageTimes:
    """Accumulates seconds per stage; `model.profile = StageTimes()` turns it on.

    The first `warmup` steps are timed apart (`warmup_seconds`): the first call of each
    kernel loads its compiled code (~0.35 s for the batch check alone), which would
    otherwise be spread over the stages of a short run.
    """

    BETWEEN = "between steps (data, loop)"

    def __init__(self, warmup=1):
        self.totals, self.steps = {}, 0
        self.warmup, self.warmup_seconds = warmup, 0.0
        self._t = self._last_end = self._step_start = None
        self._in_step = False  # laps outside train_step (e.g. an evaluation) do not count

    def start(self):
        """A step begins (the gap since the previous step's end is counted apart)."""
        now = time.perf_counter()
        if self._last_end is not None and self.warmup == 0:
            self._add(self.BETWEEN, now - self._last_end)
        self._t = self._step_start = now
        self._in_step = True

    def lap(self, stage):
        """`stage` just ended."""
        if not self._in_step:
            return
        now = time.perf_counter()
        self._add(stage, now - self._t)
        self._t = now

    def end(self):
        """The step ended."""
        self._in_step = False
        self._last_end = time.perf_counter()
        if self.warmup > 0:
            self.warmup -= 1
            self.warmup_seconds += self._last_end - self._step_start
            self.totals = dict.fromkeys(self.totals, 0.0)  # keeps the stages' order
        else:
            self.steps += 1

    def _add(self, stage, seconds):
        self.totals[stage] = self.totals.get(stage, 0.0) + seconds

    def rows(self):
        """[(stage, ms per step, share of the total)] in the order the stages ran."""
        steps = max(self.steps, 1)
        total = sum(self.totals.values()) or 1.0
        return [(name, 1000 * s / steps, s / total) for name, s in self.totals.items()]

    def format(self):
        """The table printed at the end of a profiled run."""
        warm = (f", after the first step ({1000 * self.warmup_seconds:.0f} ms: it loads "
                f"the compiled kernels)" if self.warmup_seconds else "")
        lines = [f"Profile of {self.steps} training steps (wall time per stage, inside the "
                 f"real step{warm}):", f"  {'stage':28s} {'ms/step':>9s} {'share':>7s}"]
        lines += [f"  {name:28s} {ms:9.3f} {100 * share:6.1f} %" for name, ms, share
                  in self.rows()]
        total = 1000 * sum(self.totals.values()) / max(self.steps, 1)
        lines.append(f"  {'total':28s} {total:9.3f}")
        return "\n".join(lines)

"""What `npdlrm train` shows and logs: a tqdm bar, the reference's lines, a JSONL log."""
import json
import math
import os
import sys
import time

from tqdm import tqdm

from ..metrics import format_metric
from ..trainer import Reporter

EVAL_KEYS = (("auc", "auc"), ("log_loss", "log loss"), ("accuracy", "accuracy"),
             ("ne", "NE"), ("calibration", "calibration"))


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: an undefined metric is null
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


class JsonlLog:
    """Appends one JSON object per line, flushed as written."""

    def __init__(self, path):
        self.path = path
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")

    def write(self, record):
        record = {"time": round(time.time(), 3), **record}
        self.file.write(json.dumps(_jsonable(record)) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def format_eval(record, precision=5):
    parts = []
    for key, name in EVAL_KEYS:
        if key in record:
            parts.append(f"{name} {format_metric(key, record[key], precision)}")
    line = ", ".join(parts) + f" ({record.get('count', 0)} samples)"
    if "planted_auc" in record:
        line += (f"; planted model: auc {format_metric('auc', record['planted_auc'], precision)}"
                 f", log loss {format_metric('log_loss', record['planted_log_loss'], precision)}")
    return line


class ConsoleReporter(Reporter):
    """Progress bar (loss, samples/s, ETA) and the reference's lines on stdout."""

    def __init__(self, progress=None, print_time=False, print_wall_time=False, precision=5,
                 log=None, out=None):
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.print_time, self.print_wall_time = print_time, print_wall_time
        self.precision, self.log, self.out = precision, log, out or sys.stdout
        self.bar = None
        self._samples, self._t0 = 0, 0.0

    def say(self, text):
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def record(self, record):
        if self.log is not None:
            self.log.write(record)

    def start(self, trainer):
        st = trainer.state
        if self.progress:
            self.bar = tqdm(total=trainer.total_steps, initial=st.step, unit="it",
                            dynamic_ncols=True, file=sys.stderr, desc="training")
            self._samples, self._t0 = 0, time.perf_counter()
        if st.step:
            self.say(f"Resuming at step {st.step}: batch {st.batch} of epoch {st.epoch}")

    def step(self, trainer, loss, batch_size):
        if self.bar is None:
            return
        self.bar.update(1)
        self._samples += batch_size
        if self.bar.n % 10 == 0 or self.bar.n == self.bar.total:
            seconds = max(time.perf_counter() - self._t0, 1e-9)
            self.bar.set_postfix({"loss": f"{loss:.4f}",
                                  "samples/s": f"{self._samples / seconds:,.0f}"},
                                 refresh=False)

    def train(self, record):
        self.record(record)
        ms = record["ms_per_it"] if self.print_time else -1
        line = (f"Finished training it {record['iter']}/{record['iters']} of epoch "
                f"{record['epoch']}, {ms:.2f} ms/it, loss {record['loss']:.6f}")
        if self.print_time:
            line += f", {record['samples_per_s']:,.0f} samples/s"
        if self.print_wall_time:
            line += time.strftime(" (%H:%M)")
        self.say(line)

    def evaluate(self, record):
        self.record(record)
        self.say(f"Testing at step {record['step']} (epoch {record['epoch']}): "
                 + format_eval(record, self.precision))

    def checkpoint(self, path, record):
        self.record(record)
        self.say(f"Saved checkpoint {path} (step {record['step']})")

    def end(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class GovernedReporter:
    """Ticks a `threads.ThreadGovernor` at every step, says when it changes the thread
    count, and adds the count in use to each train record; the rest goes to `inner`."""

    def __init__(self, inner, governor):
        self.inner, self.governor = inner, governor

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, trainer, loss, batch_size):
        before = self.governor.threads
        after = self.governor.tick()
        if after != before:
            self.inner.say(f"Threads {before} -> {after}: other processes use "
                           f"{self.governor.others:.1f} of {self.governor.cores} cores")
        self.inner.step(trainer, loss, batch_size)

    def train(self, record):
        record["threads"] = self.governor.threads
        self.inner.train(record)

"""The training loop: batches from a loader, periodic evaluation, checkpoints.

A loader is anything with `len(loader)` (batches per epoch) and
`loader.epoch(epoch, start_batch)` yielding `npdlrm.data.minibatch.Minibatch`es that
depend on (epoch, batch index) only: that is what makes a resumed run exact.
The loop never prints; it hands records to a `Reporter` (the CLI's draws a progress bar).
"""
import time
from contextlib import closing
from dataclasses import asdict, dataclass

import numpy as np

from .checkpoint import save_checkpoint
from .grad_accum import GradientAccumulator
from .metrics import evaluate as evaluate_metrics
from .metrics import mlperf_metrics


@dataclass
class TrainState:
    """Where a run stands: the next batch is `batch` of `epoch`; `step` steps taken."""
    epoch: int = 0
    batch: int = 0
    step: int = 0
    samples: int = 0

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: int(d[k]) for k in ("epoch", "batch", "step", "samples") if k in d})


class Reporter:
    """Receives the loop's records (dicts); every hook is optional."""

    def start(self, trainer):
        pass

    def step(self, trainer, loss, batch_size):
        pass

    def train(self, record):
        pass

    def evaluate(self, record):
        pass

    def checkpoint(self, path, record):
        pass

    def end(self, trainer):
        pass


class ReporterTee(Reporter):
    """Hands each record to `main`, then to every one of `extras`; any other attribute
    (e.g. `say`) is main's."""

    def __init__(self, main, *extras):
        self.main, self.all = main, (main,) + tuple(extras)

    def __getattr__(self, name):
        return getattr(self.main, name)

    def start(self, trainer):
        for r in self.all:
            r.start(trainer)

    def step(self, trainer, loss, batch_size):
        for r in self.all:
            r.step(trainer, loss, batch_size)

    def train(self, record):
        for r in self.all:
            r.train(record)

    def evaluate(self, record):
        for r in self.all:
            r.evaluate(record)

    def checkpoint(self, path, record):
        for r in self.all:
            r.checkpoint(path, record)

    def end(self, trainer):
        for r in self.all:
            r.end(trainer)


def predict_all(model, loader, epoch=0):
    """Predict every batch of `loader`; returns labels (N,), probabilities (N,) and the
    planted probabilities (N,) when the data carries them, else None."""
    labels, probs, truth = [], [], []
    with closing(loader.epoch(epoch)) as batches:
        for mb in batches:
            probs.append(model.predict(mb.dense, mb.indices, mb.offsets))
            labels.append(mb.labels)
            if mb.truth is not None:
                truth.append(mb.truth)
    y = np.concatenate(labels) if labels else np.zeros(0, np.float32)
    p = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    planted = np.concatenate(truth) if truth and len(truth) == len(labels) else None
    return y, p, planted


def evaluate(model, loader, epoch=0, mlperf=False):
    """metrics.evaluate's dict over `loader`, plus `planted_auc` etc. (the same metrics of
    the planted probabilities) when the data carries them, plus recall, precision, f1 and
    ap (metrics.mlperf_metrics) when mlperf."""
    y, p, truth = predict_all(model, loader, epoch)
    result = evaluate_metrics(y, p)
    if mlperf:
        result.update({k: v for k, v in mlperf_metrics(y, p).items()
                       if k in ("recall", "precision", "f1", "ap")})
    if truth is not None:
        planted = evaluate_metrics(y, truth)
        result.update({f"planted_{k}": v for k, v in planted.items()
                       if k in ("auc", "log_loss", "accuracy")})
    return result


class Trainer:
    """Runs `nepochs` epochs of `num_batches` batches (0: the whole loader) of
    model.train_step, evaluating every `test_freq` batches and at the end of each epoch
    (when test_freq > 0 and an eval loader is given), as the reference does.

    grad_accum K > 1: one optimizer step per K batches (grad_accum.GradientAccumulator;
    one-process models), and at the end of each epoch for the batches left; batches, not
    steps, still count for print_freq, test_freq and `state.step`.
    mlperf: evaluations add recall, precision, f1 and ap. Every evaluation record carries
    best_auc and best_accuracy (the best so far); stop_auc / stop_accuracy > 0 end the
    training after the evaluation whose best value exceeds it (record["stop"] says why).

    save_path: checkpoint written after each evaluation and at the end; '{step}' in it
    is replaced by the step count (one file per checkpoint). save_fn: how
    (save_checkpoint's signature; a distributed model saves collectively).
    """

    def __init__(self, model, optimizer, train_loader, eval_loader=None, *, nepochs=1,
                 num_batches=0, print_freq=1, test_freq=-1, round_targets=False,
                 save_path=None, reporter=None, state=None, run_info=None, save_fn=None,
                 grad_accum=1, mlperf=False, stop_auc=0.0, stop_accuracy=0.0, best=None):
        if nepochs < 0 or num_batches < 0:
            raise ValueError(f"nepochs and num_batches must be >= 0, got {nepochs}, "
                             f"{num_batches}")
        if print_freq <= 0:
            raise ValueError(f"print_freq must be positive, got {print_freq}")
        self.model, self.optimizer = model, optimizer
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.nepochs, self.num_batches = int(nepochs), int(num_batches)
        self.print_freq, self.test_freq = int(print_freq), int(test_freq)
        self.round_targets = bool(round_targets)
        self.save_path, self.save_fn = save_path, save_fn or save_checkpoint
        self.reporter = reporter or Reporter()
        self.state = state or TrainState()
        self.run_info = dict(run_info or {})  # JSON-able; stored in checkpoints
        self.last_eval = None
        self._last_saved_step = None
        self.accumulator = None
        if grad_accum != 1:
            if not hasattr(model, "dense_backward"):
                raise ValueError(f"gradient accumulation ({grad_accum} batches per step) runs "
                                 f"in one process only")
            self.accumulator = GradientAccumulator(model, grad_accum)
        if not (stop_auc >= 0 and stop_accuracy >= 0):
            raise ValueError(f"stop thresholds must be >= 0 (0: off), got auc {stop_auc}, "
                             f"accuracy {stop_accuracy}")
        self.mlperf, self.stop_auc, self.stop_accuracy = bool(mlperf), stop_auc, stop_accuracy
        self.best = {"auc": float("nan"), "accuracy": float("nan"), **(best or {})}
        self.stopped = None  # why the training stopped early (a threshold), or None

    @property
    def batches_per_epoch(self):
        n = len(self.train_loader)
        return min(n, self.num_batches) if self.num_batches > 0 else n

    @property
    def total_steps(self):
        return self.nepochs * self.batches_per_epoch

    def fit(self):
        """Train from `self.state` to the end; returns the last evaluation (or None)."""
        st, nb = self.state, self.batches_per_epoch
        self.reporter.start(self)
        window_loss, window_n, window_steps, t0 = 0.0, 0, 0, time.perf_counter()
        while st.epoch < self.nepochs and self.stopped is None:
            # a resume inside an accumulation window first recomputes its held gradients
            replay = st.batch % self.accumulator.k if self.accumulator else 0
            with closing(self.train_loader.epoch(st.epoch, st.batch - replay)) as batches:
                for mb in batches:
                    if replay:
                        self.accumulator.add(mb.dense, mb.indices, mb.offsets,
                                             self._labels(mb))
                        replay -= 1
                        continue
                    if st.batch >= nb:
                        break
                    loss = self._step(mb)
                    B = mb.size
                    st.batch, st.step, st.samples = st.batch + 1, st.step + 1, st.samples + B
                    window_loss, window_n, window_steps = (window_loss + loss * B,
                                                           window_n + B, window_steps + 1)
                    self.reporter.step(self, loss, B)
                    end_of_epoch = st.batch == nb
                    if end_of_epoch and self.accumulator is not None:
                        self.accumulator.step(self.optimizer)  # the batches left
                    test = self.test_freq > 0 and self.eval_loader is not None and (
                        st.batch % self.test_freq == 0 or end_of_epoch)
                    if st.batch % self.print_freq == 0 or end_of_epoch or test:
                        now = time.perf_counter()
                        self.reporter.train(self._train_record(
                            window_loss / window_n, window_n, window_steps, now - t0))
                        window_loss, window_n, window_steps, t0 = 0.0, 0, 0, now
                    if end_of_epoch:
                        st.epoch, st.batch = st.epoch + 1, 0
                    if test:
                        self._evaluate_and_save(epoch_done=end_of_epoch)
                        t0 = time.perf_counter()
                    if end_of_epoch or self.stopped is not None:
                        break
            if st.batch != 0 and self.stopped is None:  # the loader ran out before nb
                raise RuntimeError(f"the loader gave {st.batch} batches in epoch {st.epoch}, "
                                   f"{nb} were expected")
        if self.save_path and self._last_saved_step != st.step:
            self.save()
        self.reporter.end(self)
        return self.last_eval

    def _labels(self, mb):
        return np.round(mb.labels) if self.round_targets else mb.labels

    def _step(self, mb):
        step = self.accumulator.train_step if self.accumulator else self.model.train_step
        return step(mb.dense, mb.indices, mb.offsets, self._labels(mb), self.optimizer)

    def _train_record(self, mean_loss, samples, steps, seconds):
        st = self.state
        epoch, it = (st.epoch - 1, self.batches_per_epoch) if st.batch == 0 else (st.epoch,
                                                                                  st.batch)
        return {"event": "train", "step": st.step, "epoch": epoch, "iter": it,
                "iters": self.batches_per_epoch, "loss": mean_loss,
                "lr": self.optimizer.policy(max(self.optimizer.step_count if self.accumulator
                                                else st.step, 1) - 1), "samples": st.samples,
                "ms_per_it": 1000.0 * seconds / max(steps, 1),
                "samples_per_s": samples / seconds if seconds > 0 else float("nan")}

    def _evaluate_and_save(self, epoch_done):
        st = self.state
        record = {"event": "eval", "step": st.step,
                  "epoch": st.epoch - 1 if epoch_done else st.epoch,
                  **self.evaluate()}
        for key in ("auc", "accuracy"):
            value = record[key]
            if value == value and not value <= self.best[key]:  # defined, above (or first)
                self.best[key] = value
            record[f"best_{key}"] = self.best[key]
        self.stopped = self._stop_reason()
        if self.stopped is not None:
            record["stop"] = self.stopped
        self.last_eval = record
        self.reporter.evaluate(record)
        if self.save_path:
            self.save()

    def _stop_reason(self):
        """The reference's words when a best value exceeds its threshold, else None."""
        for key, threshold in (("accuracy", self.stop_accuracy), ("auc", self.stop_auc)):
            if threshold > 0 and self.best[key] > threshold:
                return f"MLPerf testing {key} threshold {threshold} reached, stop training"
        return None

    def evaluate(self, loader=None):
        """Metrics of the model on `loader` (default: the eval loader)."""
        loader = loader or self.eval_loader
        if loader is None:
            raise ValueError("no evaluation data was given")
        return evaluate(self.model, loader, mlperf=self.mlperf)

    def checkpoint_path(self, step=None):
        return str(self.save_path).replace("{step}", str(self.state.step if step is None
                                                          else step))

    def save(self, path=None):
        """Atomic checkpoint of the model, optimizer state and position in the data."""
        path = path or self.checkpoint_path()
        train_state = {**self.state.to_dict(), "run": self.run_info,
                       "last_eval": self.last_eval, "best": self.best}
        self.save_fn(path, self.model, self.optimizer, train_state)
        self._last_saved_step = self.state.step
        self.reporter.checkpoint(path, {"event": "checkpoint", "path": str(path),
                                        **self.state.to_dict()})
        return path

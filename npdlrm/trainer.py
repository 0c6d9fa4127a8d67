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
from .metrics import evaluate as evaluate_metrics


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


def evaluate(model, loader, epoch=0):
    """metrics.evaluate's dict over `loader`, plus `planted_auc` etc. (the same metrics of
    the planted probabilities) when the data carries them."""
    y, p, truth = predict_all(model, loader, epoch)
    result = evaluate_metrics(y, p)
    if truth is not None:
        planted = evaluate_metrics(y, truth)
        result.update({f"planted_{k}": v for k, v in planted.items()
                       if k in ("auc", "log_loss", "accuracy")})
    return result


class Trainer:
    """Runs `nepochs` epochs of `num_batches` batches (0: the whole loader) of
    model.train_step, evaluating every `test_freq` batches and at the end of each epoch
    (when test_freq > 0 and an eval loader is given), as the reference does.

    save_path: checkpoint written after each evaluation and at the end; '{step}' in it
    is replaced by the step count (one file per checkpoint). save_fn: how
    (save_checkpoint's signature; a distributed model saves collectively).
    """

    def __init__(self, model, optimizer, train_loader, eval_loader=None, *, nepochs=1,
                 num_batches=0, print_freq=1, test_freq=-1, round_targets=False,
                 save_path=None, reporter=None, state=None, run_info=None, save_fn=None):
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
        while st.epoch < self.nepochs:
            with closing(self.train_loader.epoch(st.epoch, st.batch)) as batches:
                for mb in batches:
                    if st.batch >= nb:
                        break
                    loss = self._step(mb)
                    B = mb.size
                    st.batch, st.step, st.samples = st.batch + 1, st.step + 1, st.samples + B
                    window_loss, window_n, window_steps = (window_loss + loss * B,
                                                           window_n + B, window_steps + 1)
                    self.reporter.step(self, loss, B)
                    end_of_epoch = st.batch == nb
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
                    if end_of_epoch:
                        break
            if st.batch != 0:  # the loader ran out before nb batches
                raise RuntimeError(f"the loader gave {st.batch} batches in epoch {st.epoch}, "
                                   f"{nb} were expected")
        if self.save_path and self._last_saved_step != st.step:
            self.save()
        self.reporter.end(self)
        return self.last_eval

    def _step(self, mb):
        labels = np.round(mb.labels) if self.round_targets else mb.labels
        return self.model.train_step(mb.dense, mb.indices, mb.offsets, labels, self.optimizer)

    def _train_record(self, mean_loss, samples, steps, seconds):
        st = self.state
        epoch, it = (st.epoch - 1, self.batches_per_epoch) if st.batch == 0 else (st.epoch,
                                                                                  st.batch)
        return {"event": "train", "step": st.step, "epoch": epoch, "iter": it,
                "iters": self.batches_per_epoch, "loss": mean_loss,
                "lr": self.optimizer.policy(st.step - 1), "samples": st.samples,
                "ms_per_it": 1000.0 * seconds / max(steps, 1),
                "samples_per_s": samples / seconds if seconds > 0 else float("nan")}

    def _evaluate_and_save(self, epoch_done):
        st = self.state
        record = {"event": "eval", "step": st.step,
                  "epoch": st.epoch - 1 if epoch_done else st.epoch,
                  **self.evaluate()}
        self.last_eval = record
        self.reporter.evaluate(record)
        if self.save_path:
            self.save()

    def evaluate(self, loader=None):
        """Metrics of the model on `loader` (default: the eval loader)."""
        loader = loader or self.eval_loader
        if loader is None:
            raise ValueError("no evaluation data was given")
        return evaluate(self.model, loader)

    def checkpoint_path(self, step=None):
        return str(self.save_path).replace("{step}", str(self.state.step if step is None
                                                          else step))

    def save(self, path=None):
        """Atomic checkpoint of the model, optimizer state and position in the data."""
        path = path or self.checkpoint_path()
        train_state = {**self.state.to_dict(), "run": self.run_info,
                       "last_eval": self.last_eval}
        self.save_fn(path, self.model, self.optimizer, train_state)
        self._last_saved_step = self.state.step
        self.reporter.checkpoint(path, {"event": "checkpoint", "path": str(path),
                                        **self.state.to_dict()})
        return path

"""What `--mlperf-logging` adds to a run: the reference's evaluation line, the threshold
message, and MLPerf log events when the optional `mlperf-logging` package is installed.
"""
import math

from .trainer import Reporter


def _f(value, spec):
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def mlperf_line(record):
    """The reference's line: recall, precision, f1, ap, auc with the best auc, accuracy
    with the best accuracy (both in percent), to 4 digits as it prints them."""
    best_auc = record.get("best_auc", record["auc"])
    best_acc = record.get("best_accuracy", record["accuracy"])
    return (f"recall {_f(record['recall'], '.4f')}, precision "
            f"{_f(record['precision'], '.4f')}, f1 {_f(record['f1'], '.4f')}, ap "
            f"{_f(record['ap'], '.4f')}, auc {_f(record['auc'], '.4f')}, best auc "
            f"{_f(best_auc, '.4f')}, accuracy {_f(record['accuracy'] * 100, '3.3f')} %, "
            f"best accuracy {_f(best_acc * 100, '3.3f')} %")


class MlperfReporter(Reporter):
    """Prints, after each evaluation, the reference's line (when the record holds the
    MLPerf metrics) and the threshold message (record["stop"]) through `say`."""

    def __init__(self, say):
        self.say = say

    def evaluate(self, record):
        if "ap" in record:
            self.say(mlperf_line(record))
        if record.get("stop"):
            self.say(record["stop"])


def mllog_or_none():
    """The mlperf_logging package's mllog module, or None when it is not installed."""
    try:
        from mlperf_logging import mllog
    except ImportError:
        return None
    return mllog


class MlperfEventReporter(Reporter):
    """MLPerf log events (mlperf_logging.mllog) of a run, written to `filename`: the
    submission and hyper-parameters at the start, eval start/stop (with the AUC as
    eval_accuracy) at each evaluation, run stop (success when a threshold stopped it,
    else aborted) at the end."""

    def __init__(self, mllog, filename, args):
        self.mllog, self.args = mllog, args
        mllog.config(filename=filename)
        self.logger = mllog.get_mllogger()
        self.logger.logger.propagate = False
        self.c = mllog.constants
        self.stopped = False

    def start(self, trainer):
        c, log, a = self.c, self.logger, self.args
        log.event(key=c.CACHE_CLEAR, value=True)
        log.start(key=c.INIT_START)
        for key, value in ((c.SUBMISSION_BENCHMARK, "dlrm"), (c.SUBMISSION_ORG, "npdlrm"),
                           (c.SUBMISSION_DIVISION, "closed"), (c.SUBMISSION_STATUS, "onprem"),
                           (c.SUBMISSION_PLATFORM, "npdlrm"), (c.SEED, a.numpy_rand_seed),
                           (c.GLOBAL_BATCH_SIZE, a.mini_batch_size),
                           (c.OPT_BASE_LR, a.learning_rate),
                           (c.OPT_LR_WARMUP_STEPS, a.lr_num_warmup_steps),
                           ("sgd_opt_base_learning_rate", a.learning_rate),
                           ("lr_decay_start_steps", a.lr_decay_start_step),
                           ("sgd_opt_learning_rate_decay_steps", a.lr_num_decay_steps),
                           ("sgd_opt_learning_rate_decay_poly_power", 2),
                           ("gradient_accumulation_steps", a.mlperf_grad_accum_iter)):
            log.event(key=key, value=value)
        log.end(key=c.INIT_STOP)
        log.start(key=c.RUN_START)

    def evaluate(self, record):
        c, log = self.c, self.logger
        meta = {c.EPOCH_NUM: record["epoch"] + 1}
        log.start(key=c.EVAL_START, metadata=meta)
        log.event(key=c.EVAL_ACCURACY, value=record["auc"], metadata=meta)
        log.end(key=c.EVAL_STOP, metadata=meta)
        if record.get("stop"):
            self.stopped = True
            log.end(key=c.RUN_STOP, metadata={c.STATUS: c.SUCCESS})

    def end(self, trainer):
        if not self.stopped:
            self.logger.end(key=self.c.RUN_STOP, metadata={self.c.STATUS: self.c.ABORTED})

"""`npdlrm plot`: loss and AUC curves from a training run's JSONL log."""
import json


def add_arguments(p):
    p.description = "Draw the training loss and the evaluation metrics of a JSONL log."
    p.add_argument("log", help="JSONL log written by npdlrm train (--log-file)")
    p.add_argument("-o", "--output", default="curves.png", help="image file (default curves.png)")


def read_log(path):
    """Returns (train records, eval records) of the last run in the log."""
    train, evals = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not JSON ({e.msg})") from None
            event = rec.get("event")
            if event == "start" and rec.get("command") == "train":
                if not rec.get("settings", {}).get("load_model"):
                    train, evals = [], []  # a fresh run: draw only the last one
            elif event == "train":
                train.append(rec)
            elif event == "eval":
                evals.append(rec)
    if not train and not evals:
        raise ValueError(f"{path} holds no training or evaluation records")
    return train, evals


def _curve(ax, records, key, style, label):
    points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    if points:
        ax.plot(*zip(*points), style, label=label)


def run(args, say=print):
    try:
        import matplotlib
    except ImportError:
        raise ValueError("npdlrm plot needs matplotlib: pip install 'npdlrm[plot]' "
                         "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train, evals = read_log(args.log)
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
    _curve(ax_loss, train, "loss", "-", "train loss")
    _curve(ax_loss, evals, "log_loss", "o-", "held-out log loss")
    _curve(ax_auc, evals, "auc", "o-", "held-out AUC")
    _curve(ax_auc, evals, "planted_auc", "--", "planted model's AUC")
    for ax, name in ((ax_loss, "loss"), (ax_auc, "AUC")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    plt.close(fig)
    say(f"Wrote {args.output} ({len(train)} training points, {len(evals)} evaluations)")
    return 0

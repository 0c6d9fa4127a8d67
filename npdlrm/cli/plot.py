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
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    ev = [r for r in evals if r.get("log_loss") is not None]
    if ev:
        ax_loss.plot([r["step"] for r in ev], [r["log_loss"] for r in ev], "o-",
                     label="held-out log loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ev = [r for r in evals if r.get("auc") is not None]
    ax_auc.plot([r["step"] for r in ev], [r["auc"] for r in ev], "o-", label="held-out AUC")
    planted = [r for r in ev if r.get("planted_auc") is not None]
    if planted:
        ax_auc.plot([r["step"] for r in planted], [r["planted_auc"] for r in planted], "--",
                    label="planted model's AUC")
    ax_auc.set_xlabel("step")
    ax_auc.set_ylabel("AUC")
    ax_auc.legend()
    ax_auc.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    plt.close(fig)
    say(f"Wrote {args.output} ({len(train)} training points, {len(evals)} evaluations)")
    return 0

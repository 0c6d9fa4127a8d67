"""Tables larger than memory: scoring and training with memory-mapped tables
(`--mmap-embeddings`, npdlrm/mmap_tables.py) against tables in RAM, at power-law access.

    .venv/bin/python bench/bench_mmap.py                      # 6 GiB of tables, 2 GiB limit
    .venv/bin/python bench/bench_mmap.py --table-gib 0.5 --limit-gib 0.25   # quick

Steps, each in a child process (so that each one's memory is its own):
  make       a model with mapped tables (a working copy, --init fast) saved as a
             checkpoint: the tables are written through the mapping and streamed into
             the checkpoint. Runs under the memory limit.
  predict    score power-law batches: tables in RAM (load_checkpoint; no limit) /
             mapped (load_checkpoint_mapped) without and with the limit.
  train      training steps: tables in RAM (no limit) / mapped working copy (resumed from
             the checkpoint) without and with the limit; the mapped run under the limit
             also saves a checkpoint at the end (timed).

The limit is a cgroup v1 memory controller child (memory.limit_in_bytes; file pages of
the mapping count against it). Before each run the checkpoint's pages are dropped from
the page cache (posix_fadvise DONTNEED), so that no run reads pages another charged.
The probabilities of the first batch and the training losses must be equal bit for bit
between the modes; the script says so. Prints one JSON line per run, then a table.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

GIB = 1 << 30


# ---- cgroup v1 ----------------------------------------------------------------------
def own_memory_cgroup():
    """The folder of this process's cgroup v1 memory controller, or None."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "memory" in controllers.split(","):
                    folder = "/sys/fs/cgroup/memory" + path
                    return folder if os.path.isdir(folder) else None
    except OSError:
        return None
    return None


class Limit:
    """A child cgroup with memory.limit_in_bytes = `nbytes` (None: no limit, no cgroup)."""

    def __init__(self, nbytes):
        self.nbytes, self.folder, self.why_not = nbytes, None, None
        if nbytes is None:
            return
        parent = own_memory_cgroup()
        if parent is None:
            self.why_not = "no cgroup v1 memory controller"
            return
        folder = os.path.join(parent, f"npdlrm-bench-mmap-{os.getpid()}-{time.time_ns()}")
        try:
            os.mkdir(folder)
            with open(os.path.join(folder, "memory.limit_in_bytes"), "w") as f:
                f.write(str(int(nbytes)))
        except OSError as e:
            self.why_not = f"cannot create a cgroup: {e}"
            return
        self.folder = folder

    def wrap(self, cmd):
        """`cmd` run inside the cgroup (it joins it before exec)."""
        if self.folder is None:
            return cmd
        return ["sh", "-c", f'echo $$ > {self.folder}/cgroup.procs && exec "$@"', "sh", *cmd]

    def stats(self):
        if self.folder is None:
            return {}
        out = {}
        for key in ("max_usage_in_bytes", "failcnt", "limit_in_bytes"):
            with open(os.path.join(self.folder, f"memory.{key}")) as f:
                out[key] = int(f.read())
        return out

    def remove(self):
        if self.folder is not None:
            for _ in range(50):
                try:
                    os.rmdir(self.folder)
                    return
                except OSError:
                    time.sleep(0.1)


def drop_cache(path):
    """Drop `path`'s pages from the page cache (clean pages only: fsync first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ---- the model and the data ---------------------------------------------------------
def model_config(spec):
    from npdlrm.config import DLRMConfig
    rows = int(spec["table_gib"] * GIB) // (4 * spec["dim"] * spec["tables"])
    sizes = [rows] * spec["tables"]
    return DLRMConfig.from_arch([13, 64, spec["dim"]], "64-1", sizes, spec["dim"], loss="bce")


def power_law_batches(spec, n, seed):
    """The n batches, made one at a time (not kept: their memory would count)."""
    from npdlrm.data.synthetic import SyntheticData
    data = SyntheticData(13, model_config(spec).table_sizes, n * spec["batch"],
                         distribution="power-law", exponents=spec["exponent"], bag_size=1,
                         seed=seed)
    return (data.batch(i, spec["batch"]) for i in range(n))


def anon_rss():
    """This process's own memory (RssAnon: not the file pages it maps), bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_now():
    """(peak RSS, current RSS) in bytes of this process; RSS counts mapped file pages."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return peak, rss


def timed_batches(spec, seed, call):
    """Run `call(mb)` on warmup + batches power-law batches; only the calls are timed.
    Returns (first output, samples/s of each window of spec['window'] timed batches,
    samples/s over all timed batches, largest RssAnon seen, page faults per timed batch:
    major (a read from disk), minor (a page already in memory, or a write to a clean
    page))."""
    first, windows, total, t_window, n_window, anon = None, [], 0.0, 0.0, 0, anon_rss()
    faults = None
    for i, mb in enumerate(power_law_batches(spec, spec["warmup"] + spec["batches"], seed)):
        t0 = time.perf_counter()
        out = call(mb)
        dt = time.perf_counter() - t0
        if first is None:
            first = np.array(out)
        if i < spec["warmup"]:
            continue
        if faults is None:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            faults = (ru.ru_majflt, ru.ru_minflt)
        total, t_window, n_window = total + dt, t_window + dt, n_window + 1
        if n_window == spec["window"]:
            windows.append(n_window * spec["batch"] / t_window)
            t_window, n_window, anon = 0.0, 0, max(anon, anon_rss())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    per_batch = [(ru.ru_majflt - faults[0]) / spec["batches"],
                 (ru.ru_minflt - faults[1]) / spec["batches"]]
    return first, windows, spec["batches"] * spec["batch"] / total, anon, per_batch


# ---- children -----------------------------------------------------------------------
def child_make(spec):
    from npdlrm.checkpoint import save_checkpoint
    from npdlrm.mmap_tables import build_mapped_model
    t0 = time.perf_counter()
    model = build_mapped_model(model_config(spec), spec["folder"], seed=1, init="fast")
    t1 = time.perf_counter()
    save_checkpoint(spec["ckpt"], model)
    t2 = time.perf_counter()
    peak, rss = memory_now()
    return {"init_s": t1 - t0, "save_s": t2 - t1, "peak_rss": peak, "rss": rss,
            "anon_rss": anon_rss(),
            "table_bytes": sum(t.weight.nbytes for t in model.embeddings.tables)}


def child_predict(spec):
    from npdlrm.checkpoint import load_checkpoint
    from npdlrm.mmap_tables import load_checkpoint_mapped
    t0 = time.perf_counter()
    if spec["mode"] == "ram":
        model = load_checkpoint(spec["ckpt"], with_optimizer=False, verify=False).model
    else:
        model = load_checkpoint_mapped(spec["ckpt"], verify=False, advice=spec["advice"])
    load_s = time.perf_counter() - t0
    first, windows, sps, anon, faults = timed_batches(
        spec, 11, lambda mb: model.predict(mb.dense, mb.indices, mb.offsets))
    np.save(spec["out"], first)
    peak, rss = memory_now()
    return {"load_s": load_s, "samples_per_s": sps, "windows": windows, "peak_rss": peak,
            "rss": rss, "anon_rss": anon, "faults_per_batch": faults}


def child_train(spec):
    from npdlrm import DLRM, Optimizer
    from npdlrm.checkpoint import load_checkpoint, save_checkpoint
    from npdlrm.mmap_tables import TableFiles, map_model_tables
    t0 = time.perf_counter()
    model = DLRM(model_config(spec), init="none")
    if spec["mode"] != "ram":
        map_model_tables(model, TableFiles(spec["folder"], spec["advice"]))
    load_checkpoint(spec["ckpt"], model=model, with_optimizer=False)  # verified: blockwise
    load_s = time.perf_counter() - t0
    opt = Optimizer(spec["optimizer"], lr=0.05)
    losses = []

    def step(mb):
        losses.append(model.train_step(mb.dense, mb.indices, mb.offsets, mb.labels, opt))
    _, windows, sps, anon, faults = timed_batches(spec, 12, step)
    out = {"load_s": load_s, "samples_per_s": sps, "windows": windows, "anon_rss": anon,
           "faults_per_batch": faults}
    if spec.get("save"):
        t0 = time.perf_counter()
        save_checkpoint(spec["save"], model, opt)
        out["save_s"] = time.perf_counter() - t0
    np.save(spec["out"], np.array(losses))
    out["peak_rss"], out["rss"] = memory_now()
    return out


CHILDREN = {"make": child_make, "predict": child_predict, "train": child_train}


def warm_cache(path):
    """Read `path` once, so that its pages are in the page cache."""
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def run_child(kind, spec, limit_bytes, cache="cold"):
    if os.path.exists(spec["ckpt"]):
        drop_cache(spec["ckpt"])
        if cache == "warm":
            warm_cache(spec["ckpt"])
    limit = Limit(limit_bytes)
    cmd = kind if isinstance(kind, list) else [sys.executable, os.path.abspath(__file__),
                                                 "--child", kind, json.dumps(spec)]
    kind = kind if isinstance(kind, str) else "cli train"
    cmd = limit.wrap(cmd)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    stats = limit.stats()
    limit.remove()
    if r.returncode != 0:
        result = {"error": f"exit {r.returncode}: {r.stderr.strip()[-600:]}"}
    elif kind == "cli train":
        result = {"output": r.stdout.strip().splitlines()[-3:]}
    else:
        result = json.loads(r.stdout.strip().splitlines()[-1])
    result.update({"step": kind, "mode": spec.get("mode", "mmap"), "wall_s": wall,
                   "cache": cache,
                   "limit": limit_bytes if limit.folder else None,
                   "cgroup": stats, "limit_note": limit.why_not})
    print(json.dumps(result), flush=True)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table-gib", type=float, default=6.0, help="bytes of all tables (GiB)")
    p.add_argument("--limit-gib", type=float, default=2.0, help="cgroup memory limit (GiB)")
    p.add_argument("--tables", type=int, default=4)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--exponent", type=float, default=1.1, help="power-law (Zipf) exponent")
    p.add_argument("--predict-batches", type=int, default=100)
    p.add_argument("--train-batches", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    p.add_argument("--window", type=int, default=50, help="batches per reported window")
    p.add_argument("--advice", choices=["random", "normal"], default="random",
                   help="madvise of the mapped tables (normal: the kernel reads around)")
    p.add_argument("--optimizer", default="rwsadagrad",
                   help="training optimizer (adagrad doubles the tables' bytes)")
    p.add_argument("--folder", default="/tmp/npdlrm-bench-mmap")
    p.add_argument("--skip-ram", action="store_true", help="no in-RAM runs (small machines)")
    p.add_argument("--only", choices=["predict", "train"], default=None,
                   help="run only the predict or the train runs (after make)")
    p.add_argument("--cli", action="store_true",
                   help="also run npdlrm train --mmap-embeddings under the limit")
    p.add_argument("--keep", action="store_true", help="keep the files afterwards")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return 0
    os.makedirs(args.folder, exist_ok=True)
    need = args.table_gib * 3 * GIB
    free = shutil.disk_usage(args.folder).free
    if free < need + 2 * GIB:
        print(f"needs about {need / GIB:.1f} GiB free in {args.folder}, has {free / GIB:.1f}")
        return 2
    limit = int(args.limit_gib * GIB)
    spec = {"table_gib": args.table_gib, "tables": args.tables, "dim": args.dim,
            "batch": args.batch, "exponent": args.exponent, "warmup": args.warmup,
            "window": args.window, "advice": args.advice,
            "optimizer": args.optimizer, "folder": args.folder,
            "ckpt": os.path.join(args.folder, "model.h5")}
    results = []
    try:
        results.append(run_child("make", spec, limit))
        if "error" in results[-1]:
            return 1
        ram = [] if args.skip_ram else [("ram", None, "cold")]
        plan = {"predict": ram + [("mmap", None, "warm"), ("mmap", limit, "cold")],
                "train": ram + [("mmap", None, "cold"), ("mmap", limit, "cold")]}
        for kind, n in (("predict", args.predict_batches), ("train", args.train_batches)):
            if args.only not in (None, kind):
                continue
            outs = []
            for mode, lim, cache in plan[kind]:
                out = os.path.join(args.folder, f"{kind}-{mode}-{lim}-{cache}.npy")
                s = dict(spec, mode=mode, batches=n, out=out)
                if kind == "train" and lim is not None:
                    s["save"] = os.path.join(args.folder, "trained.h5")
                results.append(run_child(kind, s, lim, cache))
                if "error" not in results[-1]:
                    outs.append(np.load(out))
            same = len(outs) == len(plan[kind]) and all(np.array_equal(outs[0], o)
                                                        for o in outs)
            print(f"{kind}: {'bitwise equal' if same else 'NOT EQUAL'} across "
                  f"{[m + (' limited' if lim else '') for m, lim, _ in plan[kind]]}", flush=True)
        if os.path.exists(os.path.join(args.folder, "trained.h5")):
            os.remove(os.path.join(args.folder, "trained.h5"))
        if args.cli:
            results.append(run_child(cli_train(args, spec), spec, limit))
        print(table(results, args))
    finally:
        if not args.keep:
            shutil.rmtree(args.folder, ignore_errors=True)
    return 0


def cli_train(args, spec):
    """`npdlrm train --mmap-embeddings` from scratch (--init fast) on synthetic power-law
    data, with a checkpoint at the end."""
    sizes = "-".join(str(v) for v in model_config(spec).table_sizes)
    return [os.path.join(os.path.dirname(sys.executable), "npdlrm"), "train",
            "--mmap-embeddings", "--mmap-dir", args.folder, "--init", "fast",
            "--data-generation", "synthetic", "--arch-embedding-size", sizes,
            "--arch-sparse-feature-size", str(args.dim), "--arch-mlp-bot", f"13-64-{args.dim}",
            "--arch-mlp-top", "64-1", "--loss-function", "bce", "--optimizer", args.optimizer,
            "--learning-rate", "0.05", "--mini-batch-size", str(args.batch),
            "--num-batches", str(args.train_batches), "--test-data-size", "20000",
            "--test-mini-batch-size", str(args.batch), "--power-law-exponent",
            str(args.exponent), "--progress", "False", "--log-file", "",
            "--save-model", os.path.join(args.folder, "cli.h5")]


def table(results, args):
    rows = [f"tables {args.table_gib:g} GiB ({args.tables} x D={args.dim} float32), batch "
            f"{args.batch}, power law {args.exponent}, limit {args.limit_gib:g} GiB",
            "| step | tables | limit | page cache | load s | samples/s (all) | first window | "
            "last window | major / minor faults per batch | save s | wall s | "
            "own memory (RssAnon) | cgroup peak |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['step']} | {r['mode']} | | error: {r['error'][:200]} |")
            continue
        lim = f"{r['limit'] / GIB:g} GiB" if r["limit"] else "none"
        sps = f"{r['samples_per_s']:,.0f}" if "samples_per_s" in r else ""
        load = f"{r.get('load_s', r.get('init_s', 0)):.1f}"
        cg = r["cgroup"].get("max_usage_in_bytes")
        w = r.get("windows") or [float("nan")]
        f = r.get("faults_per_batch")
        faults = "" if f is None else f"{f[0]:,.0f} / {f[1]:,.0f}"
        rows.append(f"| {r['step']} | {r['mode']} | {lim} | {r['cache']} | {load} | {sps} | "
                    f"{w[0]:,.0f} | {w[-1]:,.0f} | {faults} | "
                    f"{r.get('save_s', 0):.1f} | {r['wall_s']:.0f} | "
                    f"{r.get('anon_rss', r.get('rss', 0)) / GIB:.2f} GiB | "
                    f"{'' if cg is None else f'{cg / GIB:.2f} GiB'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())

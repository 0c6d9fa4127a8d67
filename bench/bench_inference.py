"""Batch-scoring benchmark: samples/s of npdlrm predict (float32, int8, int4 tables), of
the reference's inference step in torch, and of onnxruntime on the exported graph, all
on the same model and the same batches, with the MLPs' bare-GEMM bound.

Each (peer, thread count) runs in a fresh child process whose thread variables are set
before NumPy/Numba/torch load: bench/infer_child.py (npdlrm, onnxruntime) and
bench/infer_torch.py (the reference, run with --torch-python). The peers are
interleaved over --rounds rounds; every batch is timed alone, and a pass counts each
batch's fastest time over all passes and rounds: the machine may be shared. A peer that cannot run (no torch, no reference checkout, no
onnxruntime) is skipped with the reason. See bench/README.md.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from child import THREAD_VARS  # noqa: E402

MAKE_TRAIN_TABLES = (1460, 583, 100000, 50000, 305, 24, 12517, 633, 3, 93145, 5683, 80000,
                     3194, 27, 14992, 50000, 10, 5652, 2173, 4, 70000, 18, 15, 28000, 105,
                     14200)
# name -> (bottom MLP, top MLP): the tables are `make train`'s (26, 532,743 rows, D = 16)
CASES = {"make-train": ("13-128-64-16", "128-64-1"),
         "kaggle-mlp": ("13-512-256-64-16", "512-256-1")}
DIM = 16
E2E_CHUNKS = 4  # the processed file of the end-to-end pass: 4 loader chunks of rows
PEERS = ("npdlrm", "onnxruntime", "reference")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated, from {list(CASES)} (default: all)")
    p.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p.add_argument("--batch", type=int, default=2048, help="rows per batch (default 2048)")
    p.add_argument("--batches", type=int, default=8,
                   help="distinct batches per timed pass (default 8)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds; each runs every peer once, interleaved (default 3)")
    p.add_argument("--passes", type=int, default=5,
                   help="timed passes per child process, after one warm-up (default 5)")
    p.add_argument("--reference-dir", default=os.path.join(ROOT, "..", "refdlrm"),
                   help="checkout of facebookresearch/dlrm (default ../refdlrm beside this "
                        "checkout)")
    p.add_argument("--torch-python", default=os.path.join(ROOT, "..", "refenv", "bin",
                                                          "python"),
                   help="a Python with torch, to run the reference (default "
                        "../refenv/bin/python beside this checkout)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"from {list(PEERS)}")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, 1 pass, 2 batches, no stages or end-to-end")
    p.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    p.add_argument("--timeout", type=float, default=900, help="seconds per child")
    args = p.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    args.threads = [int(t) for t in args.threads.split(",") if t]
    args.peers = [c for c in args.peers.split(",") if c]
    bad = [c for c in args.cases if c not in CASES] + [c for c in args.peers if c not in PEERS]
    if bad:
        p.error(f"unknown case or peer {bad}")
    if args.quick:
        args.rounds, args.passes, args.batches = 1, 1, 2
    return args


def prepare(folder, case, B, n_batches):
    """Write the model (checkpoint, int8 and int4 serving files, ONNX graph, a state
    dict for torch), the batches with npdlrm's float32 probabilities, and a processed
    data file for the end-to-end pass. Returns notes on what could not be written."""
    import numpy as np

    import npdlrm
    from npdlrm.checkpoint import save_checkpoint
    from npdlrm.data import h5data
    from npdlrm.data.loader import DEFAULT_CHUNK_ROWS
    from npdlrm.inference import InferenceModel
    from npdlrm.serve_file import save_serving
    bot, top = CASES[case]
    model = npdlrm.DLRM.from_arch(arch_mlp_bot=bot, arch_mlp_top=top,
                                  arch_embedding_size="-".join(map(str, MAKE_TRAIN_TABLES)),
                                  arch_sparse_feature_size=DIM, seed=123)
    save_checkpoint(os.path.join(folder, "model.h5"), model)
    for bits in (8, 4):
        save_serving(os.path.join(folder, f"serve{bits}.h5"),
                     InferenceModel.from_model(model, bits, 32), "bench")
    cfg = model.config
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"dim": DIM, "table_sizes": list(cfg.table_sizes),
                   "bottom_mlp": list(cfg.bottom_mlp), "top_sizes": list(cfg.top_sizes)}, f)
    np.savez(os.path.join(folder, "state.npz"), **model.state_dict())
    notes = []
    try:
        from npdlrm.onnx_export import export_onnx
        export_onnx(model, os.path.join(folder, "model.onnx"))
    except ValueError as e:  # the onnx package is absent
        notes.append(f"onnxruntime skipped: {e}")
    # one bag of one row per table and sample (Criteo's layout), rows uniform at random
    rng = np.random.default_rng(7)
    T = len(MAKE_TRAIN_TABLES)
    sizes = np.array(MAKE_TRAIN_TABLES, np.int64)
    rows = max(E2E_CHUNKS * DEFAULT_CHUNK_ROWS, n_batches * B)
    dense = np.log1p(rng.integers(0, 1000, (rows, cfg.num_dense))).astype(np.float32)
    ids = (rng.random((rows, T)) * sizes).astype(np.int64)
    labels = (rng.random(rows) < 0.25).astype(np.float32)
    d = dense[:n_batches * B].reshape(n_batches, B, -1)
    idx = np.ascontiguousarray(ids[:n_batches * B].reshape(n_batches, B, T).transpose(0, 2, 1))
    starts = np.arange(B, dtype=np.int64)
    expected = model.predict(d[0], list(idx[0]), [starts] * T)
    np.savez(os.path.join(folder, "batches.npz"), dense=d, indices=idx, expected=expected)
    with h5data.atomic_h5(os.path.join(folder, "data.h5")) as f:
        w = h5data.RowWriter(f, MAKE_TRAIN_TABLES, DEFAULT_CHUNK_ROWS)
        w.append(dense, ids, labels)
        w.close()
        h5data.write_root_attrs(f, "kaggle", MAKE_TRAIN_TABLES, [rows], DEFAULT_CHUNK_ROWS,
                                [], {})
    return notes, {"rows_e2e": rows, "mlp": f"{bot} / {top}",
                   "top_sizes": list(cfg.top_sizes)}


def run_child(args, peer, threads, folder):
    spec = {"peer": peer, "threads": threads, "dir": folder, "passes": args.passes,
            "stages": not args.quick, "end_to_end": not args.quick,
            "reference_dir": os.path.abspath(args.reference_dir)}
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    if peer == "reference":
        if not os.path.exists(args.torch_python):
            return {"skipped": f"no Python at {args.torch_python} (--torch-python)"}
        cmd = [args.torch_python, os.path.join(HERE, "infer_torch.py"), json.dumps(spec)]
    elif peer == "onnxruntime" and not os.path.exists(os.path.join(folder, "model.onnx")):
        return {"skipped": "no ONNX graph (the onnx package is not installed: pip install "
                           "'npdlrm[onnx]')"}
    else:
        cmd = [sys.executable, os.path.join(HERE, "infer_child.py"), json.dumps(spec)]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s"}
    if r.returncode != 0 or not r.stdout.strip():
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {r.returncode}: {tail}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def merge(best, result):
    """Keep the best samples/s of every mode (and stage minima) over rounds."""
    if "modes" not in result:
        best.setdefault("status", result)
        return
    best.pop("status", None)
    for key in ("modes", "end_to_end"):
        for name, v in result.get(key, {}).items():
            best.setdefault(key, {})[name] = max(best.get(key, {}).get(name, 0.0), v)
    for name, st in result.get("stages", {}).items():
        have = best.setdefault("stages", {}).setdefault(name, {})
        for s, v in st.items():
            have[s] = min(have.get(s, float("inf")), v)
    if "gemm_bound" in result:
        g = best.get("gemm_bound")
        if g is None or result["gemm_bound"]["seconds"] < g["seconds"]:
            best["gemm_bound"] = result["gemm_bound"]
    for k in ("max_abs_dp", "version", "torch", "numba_threads", "torch_threads", "errors"):
        if k in result:
            best[k] = result[k]


def main(argv=None):
    args = parse_args(argv)
    print(f"# npdlrm inference benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  "
          f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"# batch {args.batch}, {args.batches} batches per pass; best of {args.rounds} "
          f"rounds x {args.passes} passes, peers interleaved;\n# each batch's fastest time "
          f"counts (the machine may be shared)")
    from infer_report import render
    results = {}
    with tempfile.TemporaryDirectory(prefix="npdlrm-bench-inf-") as tmp:
        for case in args.cases:
            folder = os.path.join(tmp, case)
            os.makedirs(folder)
            notes, info = prepare(folder, case, args.batch, args.batches)
            results[case] = {"info": info, "notes": notes, "runs": {}}
            for rnd in range(args.rounds):
                for t in args.threads:
                    for peer in args.peers:
                        print(f"  [{time.strftime('%H:%M:%S')}] {case}: round {rnd + 1}, "
                              f"{peer}, {t} thread(s)", file=sys.stderr, flush=True)
                        res = run_child(args, peer, t, folder)
                        merge(results[case]["runs"].setdefault(f"{peer}/{t}", {}), res)
    print(render(results, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Text report of the child results: the main table, the breakdown and the limits."""
from cases import (MLP_GEMM_RATIO_TARGET, RSS_RATIO_TARGET, TARGET_MS, TARGET_THREADS,
                   TORCH_REF_MS, TORCH_REF_PEAK_GIB)
from limits import gemm_flops

GIB = 2**30


def _table(header, rows):
    """Left-aligned first column, right-aligned others."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def verdict(value, target):
    """'met' or 'MISSED (x1.23)': how far value is above its upper bound."""
    return "met" if value <= target else f"MISSED (x{value / target:.2f})"


def _ms(t):
    return f"{t['ms']:.2f}" if isinstance(t, dict) and "ms" in t else "n/a"


def _rows(results):
    for res in results:
        for r in res.get("runs", []):
            yield res, r


def _mem_ratio(res):
    return res["peak_rss_train"] / (res["param_bytes"] + res["state_bytes"])


def main_table(results):
    rows = []
    for res, r in _rows(results):
        key = (res["config"], r["batch"])
        ms = r["step"]["ms"]
        on_target = res["threads"] == TARGET_THREADS and key in TARGET_MS
        target = f"{TARGET_MS[key]:g}" if key in TARGET_MS else "-"
        if on_target:
            status = verdict(ms, TARGET_MS[key])
        elif key in TARGET_MS:
            status = f"({res['threads']} thr: {verdict(ms, TARGET_MS[key])})"
        else:
            status = "-"
        ratio = _mem_ratio(res)
        rows.append([res["config"], r["batch"], res["threads"], f"{ms:.2f}",
                     f"{r['step']['min_ms']:.2f}", f"{r['batch'] / ms * 1e3:,.0f}", target,
                     f"{TORCH_REF_MS.get(key, '-')}", status,
                     f"{res['peak_rss_train'] / GIB:.2f}",
                     f"{ratio:.2f} {verdict(ratio, RSS_RATIO_TARGET)}"])
    return _table(["config", "batch", "threads", "ms/it", "best", "samples/s", "target ms/it",
                   "torch ref ms/it", "time target", "peak RSS GiB", "RSS/params"], rows)


def breakdown_table(results):
    rows = []
    for res, r in _rows(results):
        st = r.get("stages", {})
        if "error" in st:
            rows.append([res["config"], r["batch"], res["threads"], _ms(r["step"]),
                         st["error"]] + [""] * 7)
            continue
        parts = ("check batch", "embedding lookup", "MLP fwd+bwd+step", "interaction fwd+bwd",
                 "loss", "embedding update")
        other = r["step"]["ms"] - sum(st[p]["ms"] for p in parts)
        rows.append([res["config"], r["batch"], res["threads"], _ms(r["step"]),
                     _ms(st["check batch"]), _ms(st["embedding lookup"]),
                     _ms(st["MLP fwd+bwd+step"]), _ms(st["MLP forward"]),
                     _ms(st["dense SGD step"]), _ms(st["interaction fwd+bwd"]), _ms(st["loss"]),
                     _ms(st["embedding update"]), f"{other:.2f}"])
    return _table(["config", "batch", "threads", "step", "check", "emb lookup", "MLP all",
                   "(MLP fwd", "dense SGD)", "interaction", "loss", "emb update", "other"], rows)


def step_diag_table(results):
    rows = []
    for res, r in _rows(results):
        t = r["step"]
        rows.append([res["config"], r["batch"], res["threads"], f"{t['ms']:.2f}",
                     f"{t['cpu_ms']:.2f}", f"{t['cpu_ms'] / t['ms']:.2f}", f"{t['sys_ms']:.2f}",
                     f"{t['minflt']:.0f}", f"{t['max_ms'] / t['min_ms']:.2f}",
                     f"{t['iters']}x{t['repeats']}", r["batches_cycled"]])
    return _table(["config", "batch", "threads", "wall ms/it", "CPU ms/it", "CPU/wall",
                   "sys ms/it", "page faults/it", "spread", "iters x repeats",
                   "batches cycled"], rows)


def gemm_table(results):
    rows = []
    for res, r in _rows(results):
        g, st = r["gemm"], r.get("stages", {})
        gemm_ms = g["forward"]["ms"] + g["backward"]["ms"]
        fwd_f, bwd_f = gemm_flops(res["shapes"], r["batch"]) if "shapes" in res else (0, 0)
        gflops = (fwd_f + bwd_f) / (gemm_ms * 1e-3) / 1e9 if fwd_f else float("nan")
        if "MLP fwd+bwd+step" in st:
            mlp = st["MLP fwd+bwd+step"]["ms"]
            ratio = f"{mlp / gemm_ms:.2f} {verdict(mlp / gemm_ms, MLP_GEMM_RATIO_TARGET)}"
        else:
            mlp, ratio = float("nan"), "n/a"
        rows.append([res["config"], r["batch"], res["threads"], _ms(g["forward"]),
                     _ms(g["backward"]), f"{gemm_ms:.2f}", f"{gflops:.0f}", f"{mlp:.2f}", ratio])
    return _table(["config", "batch", "threads", "GEMM fwd", "GEMM bwd", "GEMM total",
                   "GFLOP/s", "MLP part", "MLP/GEMM"], rows)


def embedding_table(results):
    rows = []
    for res, r in _rows(results):
        st, nb, eb = r.get("stages", {}), r.get("numpy_embedding", {}), r["embedding_bytes"]
        stream = res["stream"]["bytes"] / (res["stream"]["ms"] * 1e-3) / 1e9
        if "embedding lookup" not in st or "np.take gather" not in nb:
            rows.append([res["config"], r["batch"], res["threads"], "n/a", "n/a",
                         f"{stream:.1f}", "n/a", "n/a"])
            continue
        lk, up = st["embedding lookup"]["ms"], st["embedding update"]["ms"]
        take, add_at = nb["np.take gather"]["ms"], nb["np.add.at update"]["ms"]

        def gbs(nbytes, ms):
            return nbytes / (ms * 1e-3) / 1e9

        rows.append([
            res["config"], r["batch"], res["threads"],
            f"{gbs(eb['lookup'], lk):.2f} ({lk * 1e6 / eb['rows']:.0f} ns/row)",
            f"{gbs(eb['update'], up):.2f} ({up * 1e6 / eb['rows']:.0f} ns/row)",
            f"{stream:.1f}",
            f"{gbs(eb['lookup'], take):.2f}",
            f"{add_at:.2f} ms = x{add_at / up:.1f}"])
    return _table(["config", "batch", "threads", "lookup GB/s", "fused SGD update GB/s",
                   "STREAM copy GB/s", "np.take GB/s", "np.add.at update"], rows)


def memory_table(results):
    rows = []
    for res in results:
        if "runs" not in res:
            continue
        ratio = _mem_ratio(res)
        ref = TORCH_REF_PEAK_GIB.get(res["config"])
        rows.append([res["config"], res["threads"],
                     "+".join(str(r["batch"]) for r in res["runs"]),
                     f"{(res['param_bytes'] + res['state_bytes']) / GIB:.3f}",
                     f"{res['peak_rss_train'] / GIB:.3f}",
                     f"{ratio:.2f} {verdict(ratio, RSS_RATIO_TARGET)}",
                     f"{res['rss_after_import'] / GIB:.3f}",
                     f"{res['rss_after_build'] / GIB:.3f}",
                     f"{res['peak_rss_timed'] / GIB:.3f} ({res['batch_data_bytes'] / 2**20:.0f})",
                     f"{ref}" if ref else "-", f"{res['init_s']:.1f} ({res['init']})"])
    return _table(["config", "threads", "batches", "params+state GiB", "peak RSS GiB",
                   "RSS/params", "after import", "after build", "timed (batch MiB)",
                   "torch peak GiB", "init s"], rows)


FORMULAS = """\
  lookup bytes = nnz*D*4 (rows read) + B*T*D*4 (pooled written) + nnz*8 (indices);
  update bytes = B*T*D*4 (grads read) + 2*U*D*4 (distinct rows read+written) + nnz*8;
  nnz = B*T (one index per bag), U = distinct rows per step; ns/row = stage time / nnz.
  Lookup/update are the engine's EmbeddingBagCollection.forward/.update (all tables),
  timed alone; np.take / np.add.at do the same work in plain NumPy (x = slower than the
  fused update). STREAM copy: np.copyto of 256 MiB float32, bytes = 2 x 256 MiB
  (single-threaded NumPy, median)."""


def render(results, header):
    failed = [r for r in results if "error" in r]
    out = [header, "", main_table([r for r in results if "runs" in r])]
    out += ["", "ms/it: median over repeats of the timed loop (best: fastest repeat); "
                "targets and the PyTorch reference are for 2 threads (other thread counts "
                "are compared with them in brackets, for information)."]
    ok = [r for r in results if "runs" in r]
    out += ["", "Where the time goes (ms per step; each stage timed alone on the same shapes; "
                "'other' = step - sum of stages):", breakdown_table(ok)]
    out += ["", "train_step diagnostics (CPU = user + system time of all threads; CPU/wall "
                "above 1 means several threads busy, spinning included; spread = slowest / "
                "fastest repeat, well above 1.1 means the machine was noisy):",
            step_diag_table(ok)]
    out += ["", f"Limit 1: MLP part (zero grad + fwd + bwd + dense SGD) vs bare NumPy GEMMs "
                f"of the same shapes (x @ W.T; dy.T @ x; dy @ W), target <= "
                f"{MLP_GEMM_RATIO_TARGET}x:", gemm_table(ok)]
    out += ["", "Limit 2: embedding stages vs copy bandwidth:", embedding_table(ok), FORMULAS]
    out += ["", f"Memory: peak RSS of each child after a short training run at every batch "
                f"size (4 batches held; for kaggle it covers both batch sizes) vs parameter + "
                f"optimizer-state bytes, target <= {RSS_RATIO_TARGET}x. Also: RSS after the "
                f"imports and after building the model, and the peak after the timed loops "
                f"(which hold the benchmark's cycled batches), all in GiB:",
            memory_table(ok)]
    for r in failed:
        out += ["", f"FAILED: {r.get('config')} threads={r.get('threads')}: {r['error']}"]
    return "\n".join(out)

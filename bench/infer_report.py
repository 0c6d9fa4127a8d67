"""The tables bench_inference.py prints (markdown)."""

ROWS = (  # (peer, mode, label)
    ("npdlrm", "float32", "npdlrm predict, float32 tables (DLRM.predict: a checkpoint)"),
    ("npdlrm", "float32 InferenceModel", "npdlrm predict, float32 tables (InferenceModel)"),
    ("npdlrm", "int8", "npdlrm predict, int8 tables (serving file)"),
    ("npdlrm", "int4", "npdlrm predict, int4 tables (serving file)"),
    ("npdlrm", "float32 mmap", "npdlrm predict, float32 tables memory-mapped (file cached)"),
    ("npdlrm", "int8 mmap", "npdlrm predict, int8 tables memory-mapped (file cached)"),
    ("reference", "float32", "reference inference step, float32 (autograd on, as it runs)"),
    ("reference", "float32 inference_mode", "reference step, float32, torch.inference_mode"),
    ("reference", "int8", "reference step, int8 tables (--quantize-emb-with-bit 8)"),
    ("reference", "int4", "reference step, int4 tables (--quantize-emb-with-bit 4)"),
    ("onnxruntime", "float32", "onnxruntime, exported graph, float32"),
)
STAGES = ("batch check", "embedding lookup", "bottom MLP", "interaction", "top MLP",
          "clamp + sigmoid", "python + glue (rest)", "whole predict")


def _fmt(v):
    return "-" if v is None else f"{v:,.0f}"


def _skips(runs, threads):
    """One line per peer that did not run, with its reason."""
    out = []
    for peer in ("npdlrm", "reference", "onnxruntime"):
        for t in threads:
            st = runs.get(f"{peer}/{t}", {}).get("status")
            if st:
                why = st.get("skipped") or st.get("error")
                out.append(f"- {peer} ({t} thread(s)) did not run: {why}")
                break
    return out


def render(results, args):
    threads = args.threads
    lines = []
    for case, res in results.items():
        runs, info = res["runs"], res["info"]
        lines += ["", f"## {case}: MLPs {info['mlp']}, 26 tables of 532,743 rows in all, "
                      f"D = 16, one row per bag, rows uniform at random; batch {args.batch}",
                  "", "samples/s (each batch's fastest time over all passes and rounds)", "",
                  "| engine | " + " | ".join(f"{t} thread(s)" for t in threads)
                  + " | max abs dp vs npdlrm float32 |",
                  "|---|" + "---|" * len(threads) + "---|"]
        for peer, mode, label in ROWS:
            vals = [runs.get(f"{peer}/{t}", {}).get("modes", {}).get(mode) for t in threads]
            if all(v is None for v in vals):
                continue
            dps = [runs.get(f"{peer}/{t}", {}).get("max_abs_dp", {}).get(mode)
                   for t in threads]
            dp = max((d for d in dps if d is not None), default=None)
            lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in vals)
                         + f" | {'-' if dp is None else f'{dp:.1e}'} |")
        gemm = [runs.get(f"npdlrm/{t}", {}).get("gemm_bound") for t in threads]
        if any(gemm):
            lines.append("| bound: the MLPs' forward GEMMs alone (NumPy, same shapes) | "
                         + " | ".join(_fmt(g and g["samples_per_s"]) for g in gemm)
                         + " | |")
        tg = [runs.get(f"reference/{t}", {}).get("gemm_bound") for t in threads]
        if any(tg):
            lines.append("| bound: the same GEMMs alone in torch (torch.matmul) | "
                         + " | ".join(_fmt(g and g["samples_per_s"]) for g in tg) + " | |")
        for t in threads:
            for mode, why in runs.get(f"npdlrm/{t}", {}).get("errors", {}).items():
                lines.append(f"- npdlrm {mode} ({t} thread(s)) did not run: {why}")
        lines += _skips(runs, threads) + [f"- {n}" for n in res["notes"]]
        for t in threads:
            mine = runs.get(f"npdlrm/{t}", {}).get("modes", {})
            for peer, mode in (("reference", "float32"), ("reference", "float32 inference_mode"),
                               ("onnxruntime", "float32")):
                theirs = runs.get(f"{peer}/{t}", {}).get("modes", {}).get(mode)
                if theirs and mine.get("float32"):
                    lines.append(f"- {t} thread(s): npdlrm float32 / {peer} {mode}: "
                                 f"{mine['float32'] / theirs:.2f}x")
        stages = {t: runs.get(f"npdlrm/{t}", {}).get("stages", {}) for t in threads}
        names = [n for n in ("float32", "float32 InferenceModel", "int8")
                 if any(n in s for s in stages.values())]
        if names:
            lines += ["", "npdlrm predict, ms per batch by stage (each stage timed alone, "
                          "best of passes)", "",
                      "| stage | " + " | ".join(f"{n}, {t} thr" for t in threads
                                                for n in names) + " |",
                      "|---|" + "---|" * (len(threads) * len(names))]
            for stage in STAGES:
                cells = [stages[t].get(n, {}).get(stage) for t in threads for n in names]
                lines.append(f"| {stage} | " + " | ".join(
                    "-" if c is None else f"{1e3 * c:.2f}" for c in cells) + " |")
            gemm_ms = [g and 1e3 * g["seconds"] for g in gemm]
            lines.append("| (bare GEMMs of both MLPs) | " + " | ".join(
                "-" if g is None else f"{g:.2f}" for g in gemm_ms for _ in names) + " |")
        e2e = {t: runs.get(f"npdlrm/{t}", {}).get("end_to_end", {}) for t in threads}
        if any(e2e.values()):
            lines += ["", f"npdlrm predict end to end (processed HDF5 file of "
                          f"{info['rows_e2e']:,} rows -> probabilities: read, decode, "
                          f"score; float32), samples/s, fastest pass; the two "
                          f"alternate", "",
                      "| loader | " + " | ".join(f"{t} thread(s)" for t in threads) + " |",
                      "|---|" + "---|" * len(threads)]
            for depth in ("prefetch 0", "prefetch 2"):
                label = ("no prefetch (read, then score)" if depth == "prefetch 0" else
                         "prefetch thread, 2 batches ahead")
                lines.append(f"| {label} | " + " | ".join(
                    _fmt(e2e[t].get(depth)) for t in threads) + " |")
    return "\n".join(lines)

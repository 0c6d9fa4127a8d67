"""One inference-benchmark run in a fresh process: npdlrm or onnxruntime, one thread count.

Usage: infer_child.py SPEC_JSON. The parent (bench_inference.py) sets the thread
variables in this process's environment before NumPy and Numba load, and has written
the model files and the batches into spec["dir"]. Prints one JSON line on stdout.

Every mode is timed the same way: one warm-up pass over the batches, then `passes`
timed passes, each batch timed alone; a mode's time is the sum over the batches of each
batch's fastest time (the machine is shared: best-of, not mean; a batch of 2048 takes
milliseconds, so the fastest of several usually ran with the cores to itself).
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from child import THREAD_VARS  # noqa: E402


def best_pass(fn, n_batches, passes):
    """Seconds of a pass fn(0) .. fn(n_batches - 1), each call's time the fastest of
    `passes` (after one warm-up pass)."""
    for i in range(n_batches):
        fn(i)
    best = [float("inf")] * n_batches
    for _ in range(passes):
        for i in range(n_batches):
            t0 = time.perf_counter()
            fn(i)
            best[i] = min(best[i], time.perf_counter() - t0)
    return sum(best)


def load_batches(folder):
    """[(dense (B, 13), [26 x (B,)] indices, [26 x (B,)] bag starts)], expected p (B,)."""
    import numpy as np
    z = np.load(os.path.join(folder, "batches.npz"))
    dense, indices = z["dense"], z["indices"]  # (N, B, 13), (N, T, B): one row per bag
    B = dense.shape[1]
    starts = np.arange(B, dtype=np.int64)
    batches = [(dense[n], [indices[n, k] for k in range(indices.shape[1])],
                [starts] * indices.shape[1]) for n in range(dense.shape[0])]
    return batches, z["expected"]


def stage_times(model, batch, passes):
    """Seconds per stage of one predict call (best of `passes` repeats of each stage)."""
    from npdlrm.inference import InferenceModel
    from npdlrm.loss import clamp_logits, sigmoid
    dense, indices, offsets = batch
    inference = isinstance(model, InferenceModel)
    checked = model.check_batch(dense, indices, offsets)
    cfg = model.config
    if inference:
        T = model.ws.get("T", (checked.size, cfg.num_features, cfg.embedding_dim))
    else:
        T = model.interaction_input(checked.size)
    bottom = (lambda: model.mlp_forward("bottom_mlp", checked.dense, True)) if inference \
        else (lambda: model.bottom.forward(checked.dense, False))
    model.lookup(checked, T)
    T[:, 0, :] = bottom()
    R = model.interaction.forward(T, keep=False)
    top = (lambda: model.mlp_forward("top_mlp", R, False)) if inference \
        else (lambda: model.top.forward(R, False))
    logits = top()[:, 0].copy()
    stages = {
        "batch check": lambda: model.check_batch(dense, indices, offsets),
        "embedding lookup": lambda: model.lookup(checked, T),
        "bottom MLP": bottom,
        "interaction": lambda: model.interaction.forward(T, keep=False),
        "top MLP": top,
        "clamp + sigmoid": lambda: sigmoid(clamp_logits(logits, cfg.loss_threshold)[0]),
    }
    out = {name: best_pass(lambda i: fn(), 5, passes) / 5 for name, fn in stages.items()}
    whole = best_pass(lambda i: model.predict(dense, indices, offsets), 5, passes) / 5
    out["python + glue (rest)"] = max(whole - sum(out.values()), 0.0)
    out["whole predict"] = whole
    return out


def gemm_bound(config, B, passes):
    """Seconds of the MLPs' forward GEMMs alone (x @ W.T into a preallocated output, the
    same shapes), and the shapes."""
    import numpy as np
    rng = np.random.default_rng(3)
    shapes = []
    for sizes in (config.bottom_mlp, config.top_sizes):
        shapes += [(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)]
    layers = [(rng.random((B, n), dtype=np.float32), rng.random((m, n), dtype=np.float32),
               np.empty((B, m), np.float32)) for n, m in shapes]

    def run(i):
        for x, w, out in layers:
            np.matmul(x, w.T, out=out)

    return best_pass(run, 5, passes) / 5, shapes


def end_to_end(model, path, B, depths, passes):
    """{depth: samples/s} of predict_all over the processed file (reading, decoding and
    scoring, as `npdlrm predict` does it) with each loader prefetch depth; the depths
    alternate, `passes` times each, and each keeps its fastest pass."""
    from npdlrm.data.h5data import open_processed
    from npdlrm.data.loader import BatchLoader
    from npdlrm.trainer import predict_all
    best = {d: float("inf") for d in depths}
    with open_processed(path) as data:
        loaders = {d: BatchLoader(data, B, "all", shuffle=False, prefetch=d) for d in depths}
        predict_all(model, loaders[depths[0]])
        for _ in range(passes):
            for d in depths:
                t0 = time.perf_counter()
                predict_all(model, loaders[d])
                best[d] = min(best[d], time.perf_counter() - t0)
        rows = loaders[depths[0]].num_rows
    return {f"prefetch {d}": rows / s for d, s in best.items()}


def run_npdlrm(spec):
    import numba
    import numpy as np

    from npdlrm.serve_file import load_for_inference
    folder, passes = spec["dir"], spec["passes"]
    batches, expected = load_batches(folder)
    n, B = len(batches), batches[0][0].shape[0]
    models = {
        "float32": load_for_inference(os.path.join(folder, "model.h5")),
        "float32 InferenceModel": load_for_inference(os.path.join(folder, "model.h5"), 32, 32),
        "int8": load_for_inference(os.path.join(folder, "serve8.h5")),
        "int4": load_for_inference(os.path.join(folder, "serve4.h5")),
    }
    errors = {}
    for name, path in (("float32 mmap", "model.h5"), ("int8 mmap", "serve8.h5")):
        try:  # the tables left in the file, mapped (npdlrm.mmap_tables); cached here
            models[name] = load_for_inference(os.path.join(folder, path), mmap=True)
        except (TypeError, ValueError) as e:  # an npdlrm without memory-mapped tables
            errors[name] = str(e)
    out = {"modes": {}, "stages": {}, "max_abs_dp": {}, "errors": errors}
    for name, model in models.items():
        s = best_pass(lambda i: model.predict(*batches[i]), n, passes)
        out["modes"][name] = n * B / s
        out["max_abs_dp"][name] = float(np.abs(model.predict(*batches[0]) - expected).max())
    if spec.get("stages", True):
        for name in ("float32", "float32 InferenceModel", "int8"):
            out["stages"][name] = stage_times(models[name], batches[0], passes)
    gemm_s, shapes = gemm_bound(models["float32"].config, B, passes)
    out["gemm_bound"] = {"seconds": gemm_s, "samples_per_s": B / gemm_s, "shapes": shapes}
    if spec.get("end_to_end", True):
        out["end_to_end"] = end_to_end(models["float32"], os.path.join(folder, "data.h5"),
                                       B, (0, 2), passes)
    out["numba_threads"] = numba.get_num_threads()
    return out


def run_onnxruntime(spec):
    import numpy as np
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed (pip install 'npdlrm[onnx]')"}
    folder, passes, t = spec["dir"], spec["passes"], spec["threads"]
    batches, expected = load_batches(folder)
    n, B = len(batches), batches[0][0].shape[0]
    so = ort.SessionOptions()
    so.intra_op_num_threads = t
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(os.path.join(folder, "model.onnx"), so,
                                providers=["CPUExecutionProvider"])
    feeds = []
    for dense, indices, starts in batches:
        feed = {"dense_x": dense}
        for k, (idx, off) in enumerate(zip(indices, starts)):
            feed[f"offsets_{k}"], feed[f"indices_{k}"] = off, idx
        feeds.append(feed)
    s = best_pass(lambda i: sess.run(["pred"], feeds[i]), n, passes)
    p0 = sess.run(["pred"], feeds[0])[0]
    return {"modes": {"float32": n * B / s},
            "max_abs_dp": {"float32": float(np.abs(p0 - expected).max())},
            "version": ort.__version__}


def main(spec):
    for var in THREAD_VARS:
        if os.environ.get(var) != str(spec["threads"]):
            raise SystemExit(f"{var} is {os.environ.get(var)!r}, expected {spec['threads']}")
    run = {"npdlrm": run_npdlrm, "onnxruntime": run_onnxruntime}[spec["peer"]]
    return run(spec)


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)

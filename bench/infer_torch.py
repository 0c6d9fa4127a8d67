"""The reference's inference on the benchmark's model and batches, in a torch process.

Usage (with a Python that has torch, e.g. /work/refenv/bin/python):
    infer_torch.py SPEC_JSON
spec: dir (the parent's folder: state.npz, batches.npz), threads, passes, reference_dir.

The reference dlrm_s_pytorch.py is imported with stubs for the modules only its data and
report code use (as bench/compare_reference.py does), its DLRM_Net is built with the
benchmark's shape and given npdlrm's weights. What is timed, per batch, is the step of
the reference's `inference()` loop (what `--inference-only` runs): dlrm_wrap(X, lS_o,
lS_i) on the CPU, then Z.detach().cpu().numpy(); its data loader and the accuracy sums
are not timed. The reference runs it with autograd on (its inference() does not disable
it): mode "float32"; "float32 inference_mode" is the same call under
torch.inference_mode(), the best torch does. int8 / int4: the reference's
quantize_embedding(bits) (torch's prepacked row-wise EmbeddingBag ops), as
--quantize-emb-with-bit does; its per-lookup print goes to /dev/null while timed.
Prints one JSON line.
"""
import contextlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def build(ref, torch, np, state, config):
    """The reference's DLRM_Net of `config` holding the weights of `state`."""
    D = config["dim"]
    bot = np.array(config["bottom_mlp"])
    top = np.array(config["top_sizes"])
    R = ref.DLRM_Net(D, np.array(config["table_sizes"]), bot, top, arch_interaction_op="dot",
                     arch_interaction_itself=False, sigmoid_bot=-1,
                     sigmoid_top=top.size - 2, loss_function="bce")
    sd = {}
    for k in range(len(config["table_sizes"])):
        sd[f"emb_l.{k}.weight"] = state[f"embeddings.{k}.weight"]
    for prefix, name, n in (("bot_l", "bottom_mlp", bot.size - 1),
                            ("top_l", "top_mlp", top.size - 1)):
        for i in range(n):
            for part in ("weight", "bias"):
                sd[f"{prefix}.{2 * i}.{part}"] = state[f"{name}.{i}.{part}"]
    R.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    return R


def main(spec):
    try:
        import numpy as np
        import torch
    except ImportError as e:
        return {"skipped": f"{sys.executable} cannot import {e.name} (--torch-python)"}
    from compare_reference import import_reference
    from infer_child import best_pass
    ref_dir = spec["reference_dir"]
    if not os.path.exists(os.path.join(ref_dir, "dlrm_s_pytorch.py")):
        return {"skipped": f"no dlrm_s_pytorch.py in {ref_dir}"}
    torch.set_num_threads(int(spec["threads"]))
    with contextlib.redirect_stdout(sys.stderr):  # its import prints a warning
        ref = import_reference(ref_dir)
    folder, passes = spec["dir"], spec["passes"]
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    state = dict(np.load(os.path.join(folder, "state.npz")))
    z = np.load(os.path.join(folder, "batches.npz"))
    dense, indices, expected = z["dense"], z["indices"], z["expected"]
    n, B = dense.shape[0], dense.shape[1]
    starts = torch.arange(B, dtype=torch.int64)
    batches = [(torch.from_numpy(dense[i]), [starts] * indices.shape[1],
                [torch.from_numpy(indices[i, k]) for k in range(indices.shape[1])])
               for i in range(n)]
    cpu = torch.device("cpu")

    def step(i):
        X, lS_o, lS_i = batches[i]
        return ref.dlrm_wrap(X, lS_o, lS_i, False, cpu, 1).detach().cpu().numpy()

    def inference_mode_step(i):
        with torch.inference_mode():
            return step(i)

    out = {"modes": {}, "max_abs_dp": {}, "torch": torch.__version__,
           "torch_threads": torch.get_num_threads()}
    sink = open(os.devnull, "w")
    for name, bits in (("float32", 32), ("float32 inference_mode", 32), ("int8", 8),
                       ("int4", 4)):
        ref.dlrm = build(ref, torch, np, state, config)  # dlrm_wrap calls the global
        if bits != 32:
            ref.dlrm.quantize_embedding(bits)
        fn = inference_mode_step if "inference_mode" in name else step
        with contextlib.redirect_stdout(sink):
            s = best_pass(fn, n, passes)
            p0 = fn(0).reshape(-1)
        out["modes"][name] = n * B / s
        out["max_abs_dp"][name] = float(np.abs(p0 - expected).max())
    sink.close()
    out["gemm_bound"] = torch_gemms(torch, np, config, B, passes)
    return out


def torch_gemms(torch, np, config, B, passes):
    """Seconds of the MLPs' forward GEMMs alone in torch (x @ W.T, the same shapes,
    inference_mode), the counterpart of the NumPy bound."""
    from infer_child import best_pass
    rng = np.random.default_rng(3)
    layers = []
    for sizes in (config["bottom_mlp"], config["top_sizes"]):
        for n, m in zip(sizes[:-1], sizes[1:]):
            layers.append((torch.from_numpy(rng.random((B, n), dtype=np.float32)),
                           torch.from_numpy(rng.random((m, n), dtype=np.float32))))

    def run(i):
        with torch.inference_mode():
            for x, w in layers:
                torch.matmul(x, w.T)

    s = best_pass(run, 5, passes) / 5
    return {"seconds": s, "samples_per_s": B / s}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)

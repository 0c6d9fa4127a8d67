"""GPU training-step benchmark: the kaggle-shaped model (bench/cases.py, Adagrad) at large
batches, beside the device's own limits and, optionally, the reference on the same GPU.

    python bench/bench_gpu.py [--device gpu] [--batch-sizes 2048,16384] [--steps 50]
                              [--out runs/bench-gpu.json] [--reference /path/to/dlrm]

Per batch size:
  step       ms per train_step and samples/s (NumPy batches in: checked on the host and
             uploaded, as in training), timed around N steps after a warm-up.
  embedding  the all-tables forward and fused Adagrad update alone, in GB/s of useful
             bytes (rows and optimizer-state rows read and written, pooled output or
             gradient, indices and offsets), beside a device-to-device copy of ~1 GiB.
  MLPs       bottom + top MLP forward and backward alone, in TFLOP/s (2*B*m*n per GEMM:
             forward, weight gradient, input gradient except the bottom MLP's first
             layer), beside bare matmuls of the same shapes.
  bare       the step beside bare GEMMs + a bare copy of the embedding bytes.
  reference  with --reference and a CUDA torch: dlrm_s_pytorch.py's step on the same GPU,
             the same batches, SGD (the reference refuses Adagrad on a GPU), and npdlrm's
             SGD step for the speed ratio.
--device cpu times the step on the CPU (a smoke test of this script); the GPU-only parts
then say 'skipped: no GPU (...)', or, with --parts-on-cpu, run their code on the CPU with
NumPy (a smoke test, not GPU numbers).
"""
import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cases import CASES, STAGE_LR  # noqa: E402
from data import make_batches  # noqa: E402

import npdlrm  # noqa: E402
from npdlrm import backend  # noqa: E402

CASE = CASES["kaggle"]  # the TRAIN_FLAGS-shaped tables, bot 13-512-256-64-16, top 512-256-1
# The same model with every table 1000x smaller (at least 4 rows): CPU smoke runs.
SCALED_TABLES = tuple(max(4, v // 1000) for v in CASE.table_sizes)
OPTIMIZER, LR, EPS = "adagrad", 0.05, 1e-8
TARGETS = {"embedding_vs_copy": (">=", 0.5), "step_vs_bare": ("<=", 1.5),
           "speedup_vs_reference": (">=", 2.0)}
COPY_BYTES = 1 << 30  # the bandwidth yardstick: one copy of 1 GiB (read 1 GiB, write 1 GiB)
COPY_BYTES_CPU = 256 << 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--batch-sizes", default="2048,16384",
                   help="comma-separated batch sizes (default: 2048,16384)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    p.add_argument("--reps", type=int, default=20,
                   help="calls per timing of a part (kernels, MLPs, copies; default: 20)")
    p.add_argument("--tables", choices=("kaggle", "scaled"), default="kaggle",
                   help="kaggle: the Criteo Kaggle table sizes (2.2 GB of float32 rows, "
                        "as much again of Adagrad state); scaled: each 1000x smaller")
    p.add_argument("--init", choices=("fast", "reference"), default="fast",
                   help="table initialisation (timing does not depend on it; default fast)")
    p.add_argument("--reference", metavar="PATH",
                   help="a checkout of facebookresearch/dlrm: also time its --use-gpu step")
    p.add_argument("--parts-on-cpu", action="store_true",
                   help="with --device cpu: run the GPU-only parts on the CPU (smoke test)")
    p.add_argument("--out", metavar="PATH", help="write the results as JSON to PATH")
    a = p.parse_args(argv)
    try:
        a.batch_sizes = [int(v) for v in a.batch_sizes.split(",") if v.strip()]
    except ValueError:
        p.error(f"--batch-sizes must be comma-separated integers, got {a.batch_sizes!r}")
    if not a.batch_sizes or min(a.batch_sizes) < 1:
        p.error("--batch-sizes needs positive integers")
    for name in ("steps", "reps"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must be at least 0")
    return a


class Clock:
    """Wall time of calls, the device drained before and after (synchronize)."""

    def __init__(self, on):
        self.on = on  # an array on the timed device

    def sync(self):
        backend.synchronize(self.on)

    def seconds(self, fn, reps, warmup=2, repeats=3):
        """Median over `repeats` of the mean seconds per call of fn() over `reps` calls."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            self.sync()
            times.append((time.perf_counter() - t0) / reps)
        return statistics.median(times)


def build_model(args):
    sizes = CASE.table_sizes if args.tables == "kaggle" else SCALED_TABLES
    arch = dict(CASE.arch(), arch_embedding_size="-".join(map(str, sizes)))
    t0 = time.perf_counter()
    model = npdlrm.DLRM.from_arch(**arch, init=args.init, device=args.device)
    return model, sizes, time.perf_counter() - t0


def time_steps(model, opt, batches, steps, warmup, clock):
    """ms per train_step (and samples/s) over `steps` steps after `warmup` ones."""
    it = itertools.cycle(batches)
    for _ in range(warmup):
        model.train_step(*next(it), opt)
    clock.sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_step(*next(it), opt)
    clock.sync()
    ms = (time.perf_counter() - t0) / steps * 1e3
    B = batches[0][0].shape[0]
    return {"ms": ms, "samples_per_s": B / ms * 1e3, "steps": steps, "warmup": warmup}


def embedding_bytes(batch, D, itemsize, kind):
    """Useful bytes of the all-tables forward and of the fused update of `batch` (dense,
    indices, offsets, labels): each looked-up row read once, each touched row and its
    state row read and written once, pooled rows written / gradient rows read once,
    indices and offsets read once."""
    dense, indices, _, _ = batch
    B, T = dense.shape[0], len(indices)
    nnz = sum(len(i) for i in indices)
    touched = sum(int(np.unique(i).size) for i in indices)
    bags = nnz * 8 + T * (B + 1) * 8
    state_row = {"sgd": 0, "adagrad": D * itemsize, "rwsadagrad": itemsize}[kind]
    return {"forward": nnz * D * itemsize + B * T * D * itemsize + bags,
            "update": B * T * D * itemsize + bags + touched * 2 * (D * itemsize + state_row),
            "rows_looked_up": nnz, "rows_touched": touched}


def embedding_part(model, batch, clock, reps, kind=OPTIMIZER):
    """The embedding kernels alone on one batch (the model's own entry points: on the GPU
    one embedding_bags_forward / embedding_bags_update launch for all tables)."""
    cfg, xp, dt = model.config, model.xp, model.params.dtype
    b = model.check_batch(*batch, need_labels=True)  # on the device, bags packed
    B, T, D = b.size, cfg.num_tables, cfg.embedding_dim
    out = xp.empty((B, T, D), dtype=dt)
    rng = np.random.default_rng(3)
    dout = backend.to_device((rng.standard_normal((B, T, D)) * 1e-3).astype(dt), model.device)
    for t in model.embeddings.tables:
        t.ensure_state(kind)
    fwd = clock.seconds(lambda: model.embeddings.forward(out, b), reps)
    upd = clock.seconds(lambda: model.embeddings.update(kind, STAGE_LR, EPS, dout, b), reps)
    nb = embedding_bytes(batch, D, np.dtype(dt).itemsize, kind)
    return {**nb, "forward_ms": fwd * 1e3, "update_ms": upd * 1e3,
            "forward_GB_s": nb["forward"] / fwd / 1e9, "update_GB_s": nb["update"] / upd / 1e9,
            "GB_s": (nb["forward"] + nb["update"]) / (fwd + upd) / 1e9}


def copy_part(xp, clock, nbytes, reps):
    """A device-to-device copy of nbytes (read nbytes, write nbytes)."""
    n = max(1, nbytes // 4)
    src = xp.ones(n, dtype=np.float32)
    dst = xp.empty_like(src)
    s = clock.seconds(lambda: xp.copyto(dst, src), reps)
    return {"bytes": 2 * n * 4, "ms": s * 1e3, "GB_s": 2 * n * 4 / s / 1e9}


def mlp_layers(cfg):
    """[(in m, out n, input gradient computed)] of the bottom then the top MLP."""
    bot, top = cfg.bottom_mlp, cfg.top_sizes
    return ([(bot[i], bot[i + 1], i > 0) for i in range(len(bot) - 1)]
            + [(top[i], top[i + 1], True) for i in range(len(top) - 1)])


def mlp_flops(cfg, B):
    return sum(2 * B * m * n * (3 if dx else 2) for m, n, dx in mlp_layers(cfg))


def mlp_part(model, B, clock, reps):
    """Both MLPs forward + backward alone (as the step runs them), and bare matmuls of
    the same shapes and transposes (linear.py: x @ W.T, dy.T @ x, dy @ W)."""
    cfg, xp, dt = model.config, model.xp, model.params.dtype
    rng = np.random.default_rng(4)

    def dev(*shape, scale=1.0):
        return backend.to_device((rng.standard_normal(shape) * scale).astype(dt), model.device)
    dense, R = dev(B, cfg.num_dense), dev(B, cfg.top_input_width, scale=0.1)
    dlogit, dbot = dev(B, 1, scale=1.0 / B), dev(B, cfg.embedding_dim, scale=1e-2 / B)

    def engine():
        model.bottom.forward(dense, True)
        model.top.forward(R, True)
        model.top.backward(dlogit.copy())  # backward consumes its input
        model.bottom.backward(dbot.copy(), need_dx=False)
    bufs = [(dev(B, m), dev(n, m), dev(B, n), dev(B, n), dev(n, m), dev(B, m) if dx else None)
            for m, n, dx in mlp_layers(cfg)]

    def bare():
        for x, W, y, dy, dW, dx in bufs:
            xp.matmul(x, W.T, out=y)
            xp.matmul(dy.T, x, out=dW)
            if dx is not None:
                xp.matmul(dy, W, out=dx)
    flops = mlp_flops(cfg, B)
    e, g = clock.seconds(engine, reps), clock.seconds(bare, reps)
    return {"flops": flops, "ms": e * 1e3, "bare_ms": g * 1e3, "TFLOP_s": flops / e / 1e12,
            "bare_TFLOP_s": flops / g / 1e12, "ratio": e / g}


def reference_part(path, sizes, batches, steps, warmup):
    """The reference's training step (dlrm_s_pytorch.DLRM_Net on cuda:0, SGD, its
    per-step work: upload, forward, BCE, loss read back, backward, step) on `batches`."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - reported
        return {"skipped": f"torch does not import ({type(e).__name__}: {e})"}
    if not torch.cuda.is_available():
        return {"skipped": "torch sees no CUDA device"}
    from compare_reference import as_torch, import_reference
    ref = import_reference(path)
    D, F = CASE.dim, len(sizes) + 1
    ln_bot = np.array([int(v) for v in CASE.arch_mlp_bot.split("-")])
    ln_top = np.array([F * (F - 1) // 2 + D] + [int(v) for v in CASE.arch_mlp_top.split("-")])
    np.random.seed(123)
    net = ref.DLRM_Net(D, np.array(sizes), ln_bot, ln_top, arch_interaction_op="dot",
                       arch_interaction_itself=False, sigmoid_bot=-1,
                       sigmoid_top=ln_top.size - 2, ndevices=1, loss_function="bce")
    dev = torch.device("cuda", 0)
    net = net.to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    tb = [as_torch(torch, b) for b in batches]

    def step(b):
        dense, lo, li, y = b
        z = net(dense.to(dev), [o.to(dev) for o in lo], [i.to(dev) for i in li])
        loss = net.loss_fn(z, y.to(dev))
        loss.detach().cpu().numpy()  # the reference reads the loss back every step
        opt.zero_grad()
        loss.backward()
        opt.step()
    it = itertools.cycle(tb)
    for _ in range(warmup):
        step(next(it))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / steps * 1e3
    return {"ms": ms, "samples_per_s": batches[0][0].shape[0] / ms * 1e3,
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}


def verdict(r, name, value):
    """Record target `name` met or not in result r['targets']; returns 'target ...: PASS'."""
    op, target = TARGETS[name]
    ok = value >= target if op == ">=" else value <= target
    r.setdefault("targets", {})[name] = {"value": value, "op": op, "target": target, "pass": ok}
    return f"target {op} {target:g}: {'PASS' if ok else 'MISS'}"


def run_batch(args, model, sizes, B, clock, gpu_parts, skip_why):
    """Every measurement at batch size B; returns (result dict, printed lines)."""
    batches = make_batches(sizes, model.config.num_dense, B, 4, seed=B)
    opt = npdlrm.Optimizer(OPTIMIZER, lr=LR, eps=EPS)
    r = {"batch_size": B, "step": time_steps(model, opt, batches, args.steps, args.warmup,
                                             clock)}
    s = r["step"]
    lines = [f"B={B}: step {s['ms']:.3f} ms/it, {s['samples_per_s']:,.0f} samples/s "
             f"({args.steps} steps after {args.warmup}, {OPTIMIZER})"]
    if not gpu_parts:
        for part in ("embedding kernels", "MLPs", "step vs bare") + (
                ("reference",) if args.reference else ()):
            lines.append(f"  {part}: skipped: no GPU ({skip_why})")
        r["skipped"] = f"no GPU ({skip_why})"
        return r, lines
    xp = model.xp
    cbytes = COPY_BYTES if args.device == "gpu" else COPY_BYTES_CPU
    r["copy"] = copy_part(xp, clock, cbytes, args.reps)
    r["embedding"] = e = embedding_part(model, batches[0], clock, args.reps)
    ratio = e["GB_s"] / r["copy"]["GB_s"]
    e["ratio_to_copy"] = ratio
    lines += [f"  copy of {cbytes / 2**30:.2f} GiB: {r['copy']['GB_s']:.0f} GB/s (read+write)",
              f"  embedding forward {e['forward_ms']:.3f} ms {e['forward_GB_s']:.0f} GB/s, "
              f"update {e['update_ms']:.3f} ms {e['update_GB_s']:.0f} GB/s; together "
              f"{ratio:.2f} of copy bandwidth, {verdict(r, 'embedding_vs_copy', ratio)}"]
    r["mlp"] = m = mlp_part(model, B, clock, args.reps)
    lines.append(f"  MLPs fwd+bwd {m['ms']:.3f} ms {m['TFLOP_s']:.2f} TFLOP/s; bare matmuls "
                 f"{m['bare_ms']:.3f} ms {m['bare_TFLOP_s']:.2f} TFLOP/s; ratio {m['ratio']:.2f}")
    moved = copy_part(xp, clock, (e["forward"] + e["update"]) // 2, args.reps)
    bare_ms = m["bare_ms"] + moved["ms"]
    r["bare"] = {"gemm_ms": m["bare_ms"], "copy_ms": moved["ms"], "ms": bare_ms,
                 "ratio": s["ms"] / bare_ms}
    lines.append(f"  step vs bare (GEMMs {m['bare_ms']:.3f} ms + copy of the embedding bytes "
                 f"{moved['ms']:.3f} ms): {r['bare']['ratio']:.2f}x, "
                 f"{verdict(r, 'step_vs_bare', r['bare']['ratio'])}")
    if args.reference:
        if args.device != "gpu":
            ref = {"skipped": "the reference comparison runs with --device gpu"}
        else:
            ref = reference_part(args.reference, sizes, batches, args.steps, args.warmup)
        if "skipped" not in ref:
            mine = time_steps(model, npdlrm.Optimizer("sgd", lr=LR), batches, args.steps,
                              args.warmup, clock)
            ref["npdlrm_sgd_ms"] = mine["ms"]
            ref["speedup"] = ref["ms"] / mine["ms"]
            lines.append(f"  reference (SGD) {ref['ms']:.3f} ms/it vs npdlrm (SGD) "
                         f"{mine['ms']:.3f} ms/it: {ref['speedup']:.2f}x faster, "
                         f"{verdict(r, 'speedup_vs_reference', ref['speedup'])}")
        else:
            lines.append(f"  reference: skipped: {ref['skipped']}")
        r["reference"] = ref
    return r, lines


def main(argv=None):
    args = parse_args(argv)
    why = backend.gpu_unavailable_reason()
    if args.device == "gpu" and why is not None:
        print(f"NO GPU: {why}; nothing measured (--device cpu runs the CPU smoke test)",
              file=sys.stderr)
        return 2
    gpu_parts = args.device == "gpu" or args.parts_on_cpu
    skip_why = why or "--device cpu"
    model, sizes, init_s = build_model(args)
    clock = Clock(model.params.data)
    head = (f"npdlrm GPU benchmark on {args.device}"
            f"{' (CPU smoke run: not GPU numbers)' if args.device == 'cpu' else ''}: "
            f"kaggle-shaped model, {args.tables} tables ({sum(sizes):,} rows, D={CASE.dim}), "
            f"bot {CASE.arch_mlp_bot}, top {CASE.arch_mlp_top}, {OPTIMIZER} lr {LR}, "
            f"one index per bag; model built in {init_s:.1f} s")
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "npdlrm": npdlrm.__version__}
    if args.device == "gpu":
        cp = backend.cupy_module()
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        info.update(gpu=props["name"].decode() if isinstance(props["name"], bytes)
                    else str(props["name"]), cupy=cp.__version__,
                    cuda_runtime=cp.cuda.runtime.runtimeGetVersion())
    print(head)
    print("  " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    results = []
    for B in args.batch_sizes:
        r, lines = run_batch(args, model, sizes, B, clock, gpu_parts, skip_why)
        results.append(r)
        print("\n".join(lines), flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "info": info, "targets": TARGETS,
                       "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare npdlrm's QR, MD and learned-weight tables with the reference's, side by side.

The reference needs torch, npdlrm needs numba: the two sides run in their own Python
environments, the reference's first (a checkout of facebookresearch/dlrm; npdlrm never
imports torch):

    python-with-torch bench/compare_variants.py reference --reference-dir /path/to/dlrm \
        --out /tmp/variants.npz
    python-with-npdlrm bench/compare_variants.py npdlrm --trace /tmp/variants.npz

For each variant and optimizer the reference side builds its DLRM_Net, records its
initial weights (under npdlrm's names), trains on random multi-hot batches (the same on
both sides: one seed) and records the losses and final weights. The npdlrm side counts
the initial weights it draws bitwise equal from the seed (the reference draws its QR
tables and MD projections from torch's generator, which NumPy cannot replay; every other
weight is equal), starts from the reference's (its QR tables redrawn symmetric, see
symmetric_qr), trains on the same batches and prints the
largest |loss difference| over the steps and the largest |weight difference| at the end.
"""
import argparse

import numpy as np

from compare_reference import BOTTOM, D, TABLES, import_reference

VARIANTS = {  # name -> (DLRM_Net keywords, npdlrm config keywords)
    "qr-mult": dict(qr_flag=True, qr_operation="mult", qr_collisions=4, qr_threshold=200),
    "qr-add": dict(qr_flag=True, qr_operation="add", qr_collisions=4, qr_threshold=200),
    "qr-concat": dict(qr_flag=True, qr_operation="concat", qr_collisions=4, qr_threshold=2),
    # every table above the threshold: the reference crashes on smaller tables
    "md": dict(md_flag=True, md_threshold=2, md_temperature=0.3),
    "weighted-learned": dict(weighted_pooling="learned"),
}
LR = {"sgd": 0.1, "adagrad": 0.01, "rwsadagrad": 0.01}


def reference_model(ref, torch, kw):
    F = len(TABLES) + 1
    W = 2 * D if kw.get("qr_operation") == "concat" else D
    ln_bot = np.array([int(v) for v in BOTTOM.split("-")[:-1]] + [W])
    ln_top = np.array([F * (F - 1) // 2 + W, 512, 256, 1])
    m_spa = D
    if kw.get("md_flag"):
        m_spa = ref.md_solver(torch.tensor(TABLES), kw["md_temperature"], d0=D,
                              round_dim=False).tolist()
    net_kw = {k: v for k, v in kw.items() if k != "md_temperature"}  # the solver's alone
    np.random.seed(123)
    torch.manual_seed(123)
    return ref.DLRM_Net(m_spa, np.array(TABLES), ln_bot, ln_top, arch_interaction_op="dot",
                        sigmoid_bot=-1, sigmoid_top=ln_top.size - 2, loss_function="bce",
                        **net_kw), "-".join(str(v) for v in ln_bot)


def symmetric_qr(R, torch):
    """Redraw the reference's QR tables uniform in +-sqrt(1/n) (npdlrm's default): its own
    uniform(sqrt(1/n), 1) saturates the predictions from the first steps on, where torch's
    BCELoss (log clamped at -100) and npdlrm's BCE on the logits part ways."""
    rng = np.random.RandomState(5)
    for E in R.emb_l:
        if hasattr(E, "weight_q"):
            b = np.sqrt(1 / E.num_categories)
            for w in (E.weight_q, E.weight_r):
                with torch.no_grad():
                    w.copy_(torch.tensor(rng.uniform(-b, b, size=tuple(w.shape))))


def reference_state(R):
    """The reference's parameters under npdlrm's state-dict names."""
    out = {}
    for name, seq, n in (("bottom_mlp", R.bot_l, 4), ("top_mlp", R.top_l, 3)):
        for i in range(n):
            out[f"{name}.{i}.weight"] = seq[2 * i].weight.detach().numpy()
            out[f"{name}.{i}.bias"] = seq[2 * i].bias.detach().numpy()
    for k, E in enumerate(R.emb_l):
        if hasattr(E, "weight_q"):
            out[f"embeddings.{k}.weight_q"] = E.weight_q.detach().numpy()
            out[f"embeddings.{k}.weight_r"] = E.weight_r.detach().numpy()
        elif hasattr(E, "embs"):
            out[f"embeddings.{k}.weight"] = E.embs.weight.detach().numpy()
            if hasattr(E.proj, "weight"):
                out[f"embeddings.{k}.projection"] = E.proj.weight.detach().numpy()
        else:
            out[f"embeddings.{k}.weight"] = E.weight.detach().numpy()
        if R.weighted_pooling == "learned":
            out[f"embeddings.{k}.pooling_weight"] = R.v_W_l[k].detach().numpy()[:, None]
    return {k: v.copy() for k, v in out.items()}


def make_batch(rng, B=64):
    dense = np.log1p(rng.integers(0, 100, (B, 13))).astype(np.float32)
    idx, off = [], []
    for V in TABLES:
        sizes = rng.integers(0, 4, B)
        off.append(np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64))
        idx.append(rng.integers(0, V, sizes.sum()).astype(np.int64))
    return dense, idx, off, (rng.random(B) < 0.3).astype(np.float32)


def run_reference(a):
    import torch
    ref = import_reference(a.reference_dir)
    from tricks.md_embedding_bag import md_solver
    ref.md_solver = md_solver
    torch.set_num_threads(1)
    optimizers = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
                  "rwsadagrad": ref.RowWiseSparseAdagrad.RWSAdagrad}
    out = {}
    for vname, kw in VARIANTS.items():
        for oname in LR:
            cls, rng = optimizers[oname], np.random.default_rng(7)
            R, _ = reference_model(ref, torch, kw)
            symmetric_qr(R, torch)
            for k, v in reference_state(R).items():
                out[f"{vname}/{oname}/init/{k}"] = v
            topt = cls(R.parameters(), lr=LR[oname])
            losses = []
            for _ in range(a.steps):
                dense, idx, off, y = make_batch(rng)
                pred = R(torch.tensor(dense), [torch.tensor(o) for o in off],
                         [torch.tensor(i) for i in idx])
                loss = R.loss_fn(pred, torch.tensor(y).view(-1, 1))
                topt.zero_grad()
                loss.backward()
                topt.step()
                losses.append(loss.item())
            out[f"{vname}/{oname}/losses"] = np.array(losses)
            for k, v in reference_state(R).items():
                out[f"{vname}/{oname}/final/{k}"] = v
    np.savez(a.out, **out)


def run_npdlrm(a):
    import npdlrm
    trace = np.load(a.trace)
    for vname, kw in VARIANTS.items():
        for oname in LR:
            key = f"{vname}/{oname}"
            W = 2 * D if kw.get("qr_operation") == "concat" else D
            bot = "-".join(BOTTOM.split("-")[:-1] + [str(W)])
            M = npdlrm.DLRM.from_arch(bot, "512-256-1", TABLES, D, seed=123, **kw)
            init = {k[len(key) + 6:]: trace[k] for k in trace.files
                    if k.startswith(f"{key}/init/")}
            assert set(init) == set(M.state_dict()), set(init) ^ set(M.state_dict())
            same = sum(np.array_equal(init[k], v) for k, v in M.state_dict().items())
            M.load_state_dict(init)
            opt, rng = npdlrm.Optimizer(oname, lr=LR[oname]), np.random.default_rng(7)
            ref_losses = trace[f"{key}/losses"]
            losses = [M.train_step(*make_batch(rng), opt) for _ in range(len(ref_losses))]
            dloss = np.max(np.abs(np.array(losses) - ref_losses))
            dparam = max(float(np.max(np.abs(trace[f"{key}/final/{k}"] - v)))
                         for k, v in M.state_dict().items())
            print(f"{vname:16s} {oname:10s} init equal from the seed: {same:2d}/{len(init)}"
                  f"  loss ref/npdlrm step 1 {ref_losses[0]:.6f}/{losses[0]:.6f}, step "
                  f"{len(losses)} {ref_losses[-1]:.6f}/{losses[-1]:.6f}  max |dloss| "
                  f"{dloss:.1e}  max |dparam| {dparam:.1e}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="side", required=True)
    r = sub.add_parser("reference", help="run the reference (needs torch)")
    r.add_argument("--reference-dir", required=True, help="checkout of facebookresearch/dlrm")
    r.add_argument("--steps", type=int, default=10, help="training steps per optimizer")
    r.add_argument("--out", required=True, help="the .npz trace to write")
    n = sub.add_parser("npdlrm", help="replay the trace with npdlrm")
    n.add_argument("--trace", required=True, help="the reference side's .npz")
    a = p.parse_args(argv)
    run_reference(a) if a.side == "reference" else run_npdlrm(a)


if __name__ == "__main__":
    main()

"""The GPU path on a real GPU (CuPy, cuBLAS, the CUDA kernels) against the CPU path.

Every test skips, with backend.gpu_unavailable_reason(), where no GPU is usable; with
NPDLRM_REQUIRE_GPU=1 in the environment a missing GPU fails each test instead (the GPU
check, bench/gpu_check.py, sets it, so that "no GPU" can never read as "passed").
tests/test_gpu_path_emulated.py runs the same model code with the CUDA kernels emulated
on the CPU; what only a GPU shows is here: CuPy, cuBLAS, device memory, the CLI flag.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
from devices import skip_unless_usable

import npdlrm
from npdlrm import backend
from npdlrm.checkpoint import load_checkpoint, save_checkpoint


# A small kaggle-like model: four tables of 1000 to 50000 rows, D=16, multi-hot bags.
TABLE_SIZES = (1000, 5000, 20000, 50000)
ARCH = dict(arch_mlp_bot="13-128-64-16", arch_mlp_top="128-64-1",
            arch_embedding_size="-".join(map(str, TABLE_SIZES)), arch_sparse_feature_size=16)
STEPS, BATCH = 10, 256

# (sparse optimizer, dense optimizer or None for its default, learning rate)
OPTIMIZERS = {"sgd": ("sgd", None, 0.1), "adagrad": ("adagrad", None, 0.01),
              "rwsadagrad": ("rwsadagrad", None, 0.01), "adam": ("sgd", "adam", 1e-3)}


@pytest.fixture(autouse=True)
def _needs_gpu():
    skip_unless_usable("gpu")  # skips with the reason; fails when NPDLRM_REQUIRE_GPU=1


def make_batches(seed, count=STEPS, B=BATCH):
    """`count` batches: log-count dense features, bags of 1 to 3 ids, 30% positives."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        dense = np.log1p(rng.integers(0, 100, (B, 13))).astype(np.float32)
        indices, offsets = [], []
        for V in TABLE_SIZES:
            lengths = rng.integers(1, 4, B)
            offsets.append(np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64))
            indices.append(rng.integers(0, V, int(lengths.sum())).astype(np.int64))
        out.append((dense, indices, offsets, (rng.random(B) < 0.3).astype(np.float32)))
    return out


def host(arrays):
    """{name: NumPy copy} of a dict of arrays on either device."""
    return {k: np.array(backend.to_host(v)) for k, v in arrays.items()}


def model(device, seed=5, **config):
    return npdlrm.DLRM.from_arch(**ARCH, seed=seed, device=device, **config)


def train(m, name, batches, eps=1e-10, adam_eps=1e-8):
    sparse, dense, lr = OPTIMIZERS[name]
    opt = npdlrm.Optimizer(sparse, lr=lr, dense=dense, eps=eps, adam_eps=adam_eps)
    losses = [m.train_step(*b, opt) for b in batches]
    return losses, host(m.state_dict()), host(m.optimizer_state())


def assert_close_to_scale(got, want, rtol, what):
    """Every array of `got` within rtol * max|want[k]| of want[k], elementwise."""
    assert got.keys() == want.keys(), what
    for k in want:
        w = want[k].astype(np.float64)
        scale = max(float(np.abs(w).max()), np.finfo(np.float64).tiny) if w.size else 1.0
        err = float(np.abs(got[k].astype(np.float64) - w).max()) if w.size else 0.0
        assert err <= rtol * scale, f"{what} {k}: max |gpu - cpu| = {err:.3g}, " \
                                    f"{err / scale:.3g} of max |cpu| = {scale:.3g} (rtol {rtol:g})"


# ---- the device, and what lives on it -------------------------------------------------
def test_a_gpu_model_starts_where_the_cpu_model_starts_and_keeps_its_arrays_on_the_gpu():
    g, c = model("gpu"), model("cpu")
    assert g.device == "gpu" and c.device == "cpu"
    state = g.state_dict()
    assert all(backend.device_of(a) == "gpu" for a in state.values())
    # initialised on the CPU from the same stream, then moved: bitwise the CPU model
    cs = host(c.state_dict())
    for k, a in host(state).items():
        assert np.array_equal(a, cs[k]), k
    b = make_batches(1, count=1)[0]
    loss = g.train_step(*b, npdlrm.Optimizer("adagrad", lr=0.01))
    assert isinstance(loss, float) and np.isfinite(loss)
    assert all(backend.device_of(a) == "gpu" for a in g.optimizer_state().values())
    p = g.predict(*b[:3])
    assert isinstance(p, np.ndarray) and p.shape == (BATCH,) and np.all((p > 0) & (p < 1))


# ---- the same training on both devices ----------------------------------------------------
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_float64_training_on_the_gpu_is_the_cpu_training(name):
    # In float64 the only differences are cuBLAS's summation order in the MLP GEMMs
    # (~1e-16 relative; the embedding, interaction and bias kernels add in the CPU's
    # order), far too small to flip a ReLU. Adagrad's step is lr * g / (sqrt(s) + eps):
    # table entries here see gradients of ~1e-9, so with eps <= 1e-8 it amplifies 1e-20
    # of rounding to 1e-11 of scale; eps 1e-4 keeps it a plain rounding difference. On
    # the CPU, GEMMs summed in another order (halves, thirds) then moved no parameter or
    # state by more than 1e-13 of its tensor's largest |value| in 10 steps (these
    # optimizers, 7 seeds): 1e-9 leaves a wide margin.
    batches = make_batches(11)
    kw = dict(eps=1e-4, adam_eps=1e-4)
    cpu = train(model("cpu", dtype="float64"), name, batches, **kw)
    gpu = train(model("gpu", dtype="float64"), name, batches, **kw)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-12, err_msg="losses")
    assert_close_to_scale(gpu[1], cpu[1], 1e-9, "parameter")
    assert_close_to_scale(gpu[2], cpu[2], 1e-9, "optimizer state")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_float32_training_on_the_gpu_is_the_cpu_training_to_float32_rounding(name):
    # float32 agrees to rounding only where rounding cannot change a decision. With ReLU
    # MLPs it can: a pre-activation within rounding of 0 passes a whole sample's gradient
    # on one device and none on the other, and then both runs drift apart for real. On the
    # CPU, merely reordering the GEMMs' sums moved ReLU models by up to 2e-2 of a tensor's
    # scale after 10 steps (some seeds, every optimizer). So this test trains tanh MLPs (no
    # such cliff; the ReLU kernels are checked bitwise in tests/test_cuda_dense.py and by
    # the float64 test above) with Adagrad/Adam eps 1e-4 (with eps 1e-10 an entry whose
    # gradient cancels to rounding noise moves by +-lr: 1e-3 of scale in the tables).
    # Reordered GEMMs on the CPU then stay within 4e-5 of scale and the losses within
    # 5e-7 (11 seeds, 3 orders): rtol 2e-4 and 1e-5.
    batches = make_batches(12)
    kw = dict(eps=1e-4, adam_eps=1e-4)
    cpu = train(model("cpu", activation="tanh"), name, batches, **kw)
    gpu = train(model("gpu", activation="tanh"), name, batches, **kw)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-5, err_msg="losses")
    assert_close_to_scale(gpu[1], cpu[1], 2e-4, "parameter")
    assert_close_to_scale(gpu[2], cpu[2], 2e-4, "optimizer state")


def test_two_gpu_runs_are_bitwise_equal():
    # no atomics in the kernels, cuBLAS is deterministic on one stream: same run, same bits
    batches = make_batches(13)
    a = train(model("gpu"), "adagrad", batches)
    b = train(model("gpu"), "adagrad", batches)
    assert a[0] == b[0]
    for x, y in ((a[1], b[1]), (a[2], b[2])):
        assert x.keys() == y.keys()
        for k in x:
            assert np.array_equal(x[k], y[k]), k


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_float64_loss_and_grad_on_the_gpu_is_the_cpus(pooling):
    # The embedding kernels add in the CPU's order; only the cuBLAS GEMMs may not: in
    # float64 their rounding is ~1e-16 relative, so 1e-12 of each tensor's scale.
    b = make_batches(14, count=1)[0]
    c = model("cpu", dtype="float64", pooling=pooling)
    g = model("gpu", dtype="float64", pooling=pooling)
    lc, gc = c.loss_and_grad(*b)
    lg, gg = g.loss_and_grad(*b)
    assert isinstance(lg, float) and abs(lg - lc) <= 1e-12 * abs(lc)
    dense_c = {k: v for k, v in gc.items() if not isinstance(v, npdlrm.SparseGrad)}
    dense_g = {k: v for k, v in gg.items() if not isinstance(v, npdlrm.SparseGrad)}
    assert_close_to_scale(host(dense_g), host(dense_c), 1e-12, "dense gradient")
    tables = [k for k in gc if isinstance(gc[k], npdlrm.SparseGrad)]
    assert len(tables) == len(TABLE_SIZES)
    for k in tables:
        assert isinstance(gg[k], npdlrm.SparseGrad), k
        assert np.array_equal(backend.to_host(gg[k].rows), backend.to_host(gc[k].rows)), k
        assert_close_to_scale({k: backend.to_host(gg[k].values)},
                              {k: backend.to_host(gc[k].values)}, 1e-12, "table gradient")
    pc, pg = c.predict(*b[:3]), g.predict(*b[:3])
    assert isinstance(pg, np.ndarray)
    np.testing.assert_allclose(pg, pc, rtol=1e-12, atol=0)


# ---- moving and saving -----------------------------------------------------------------------
def test_to_moves_in_place_and_back_bitwise():
    batches = make_batches(15, count=4)
    opt_a, opt_b = npdlrm.Optimizer("adagrad", lr=0.01), npdlrm.Optimizer("adagrad", lr=0.01)
    a, b = model("cpu"), model("cpu")
    for x in batches[:2]:
        a.train_step(*x, opt_a)
        b.train_step(*x, opt_b)
    assert b.to("gpu") is b and b.device == "gpu"
    assert all(backend.device_of(v) == "gpu" for v in b.state_dict().values())
    assert all(backend.device_of(v) == "gpu" for v in b.optimizer_state().values())
    assert b.to("cpu") is b and b.device == "cpu"
    for k, v in host(a.state_dict()).items():
        assert np.array_equal(backend.to_host(b.state_dict()[k]), v), k
    # the optimizer state came back too: the next CPU steps are bitwise the unmoved model's
    for x in batches[2:]:
        assert a.train_step(*x, opt_a) == b.train_step(*x, opt_b)
    sa, sb = host(a.state_dict()), host(b.state_dict())
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_a_checkpoint_saved_on_the_gpu_loads_on_the_cpu_and_back(tmp_path):
    batches = make_batches(16, count=5)
    g = model("gpu")
    opt = npdlrm.Optimizer("rwsadagrad", lr=0.01)
    for x in batches[:3]:
        g.train_step(*x, opt)
    save_checkpoint(tmp_path / "gpu.h5", g, opt, {"step": 3})
    want_p, want_s = host(g.state_dict()), host(g.optimizer_state())

    c = load_checkpoint(str(tmp_path / "gpu.h5"))  # built here: on the CPU
    assert c.model.device == "cpu" and c.train_state == {"step": 3}
    for got, want in ((host(c.model.state_dict()), want_p),
                      (host(c.model.optimizer_state()), want_s)):
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[k], want[k]) for k in want)

    # the CPU model saves; a GPU model loads it, into a given model and built by the loader
    save_checkpoint(tmp_path / "cpu.h5", c.model, c.optimizer, c.train_state)
    given = npdlrm.DLRM(c.config, init="none", device="gpu")
    opt2 = npdlrm.Optimizer("rwsadagrad", lr=0.01)
    g2 = load_checkpoint(str(tmp_path / "cpu.h5"), model=given, optimizer=opt2)
    g3 = load_checkpoint(str(tmp_path / "cpu.h5"), device="gpu")
    for ck in (g2, g3):
        assert ck.model.device == "gpu"
        assert all(backend.device_of(v) == "gpu" for v in ck.model.state_dict().values())
        for got, want in ((host(ck.model.state_dict()), want_p),
                          (host(ck.model.optimizer_state()), want_s)):
            assert got.keys() == want.keys()
            assert all(np.array_equal(got[k], want[k]) for k in want)
    # resumed on the GPU, the steps are bitwise those of the model that never stopped
    for x in batches[3:]:
        assert g.train_step(*x, opt) == g2.model.train_step(*x, opt2)
    s1, s2 = host(g.state_dict()), host(g2.model.state_dict())
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)


# ---- the command line ------------------------------------------------------------------------
def test_npdlrm_train_use_gpu(tmp_path):
    argv = ("train --data-generation synthetic --arch-embedding-size 300-2000-50 "
            "--arch-sparse-feature-size 4 --arch-mlp-bot 13-8-4 --arch-mlp-top 8-1 "
            "--loss-function bce --optimizer adagrad --learning-rate 0.05 "
            "--mini-batch-size 64 --num-batches 6 --print-freq 3 --test-freq 6 "
            "--test-data-size 256 --test-mini-batch-size 128 --progress False "
            "--use-gpu").split()
    argv += ["--log-file", str(tmp_path / "log.jsonl"), "--save-model", str(tmp_path / "m.h5")]
    proc = subprocess.run([sys.executable, "-m", "npdlrm", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    # --use-gpu refuses (exit 2, naming the reason) where no GPU is usable
    assert proc.returncode == 0, out[-3000:]
    assert "Finished training" in out
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "train"][-1] == 6
    ck = load_checkpoint(str(tmp_path / "m.h5"))
    assert all(np.isfinite(v).all() for v in host(ck.model.state_dict()).values())

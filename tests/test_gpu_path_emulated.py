"""The GPU path of a whole model, run on the CPU: every kernel call goes to the CUDA
launchers (their CUDA source compiled by g++, tests/cuda_emulator.py) and batches are
packed as for the GPU, while arrays stay NumPy. What this leaves untested is CuPy
itself (cuBLAS, memory) and the hardware: tests/test_gpu.py covers those on a GPU.

The CUDA kernels add in the Numba kernels' order, so the whole step is bitwise the CPU
path's."""
import numpy as np
import pytest

from cuda_emulator import emulated
from npdlrm import DLRM, Optimizer, backend
from npdlrm.inputs import Batch
from npdlrm.kernels import cuda

ARCH = dict(arch_mlp_bot="5-16-4", arch_mlp_top="8-1", arch_embedding_size="50-7-300",
            arch_sparse_feature_size=4)


def _batches(n, B=16, seed=0, weights=False):
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        idx, off, w = [], [], []
        for V in (50, 7, 300):
            lens = r.integers(0, 4, B)  # multi-hot bags, some empty
            off.append(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))
            idx.append(r.integers(0, V, int(lens.sum())))
            w.append(r.random(int(lens.sum()), np.float32) if weights else None)
        out.append((r.random((B, 5), np.float32), idx, off, r.integers(0, 2, B),
                    w if weights else None))
    return out


def _run(model, batches, opt):
    losses = [model.train_step(d, i, o, y, opt, per_sample_weights=w)
              for d, i, o, y, w in batches]
    return losses, {k: backend.to_host(v).copy() for k, v in model.state_dict().items()}


def _gpu_path(monkeypatch):
    emulated(monkeypatch)
    calls = []

    def cuda_kernels(*arrays):
        calls.append(1)
        return cuda
    monkeypatch.setattr(backend, "kernels", cuda_kernels)
    monkeypatch.setattr(Batch, "to_device", lambda self, device: self.packed_on(np))
    return calls


@pytest.mark.parametrize("opt", ["sgd", "adagrad", "rwsadagrad"])
@pytest.mark.parametrize("pooling, weights", [("sum", False), ("mean", False), ("sum", True)])
def test_training_on_the_gpu_path_is_bitwise_the_cpu_path(monkeypatch, opt, pooling, weights):
    batches = _batches(4, weights=weights)
    cpu_losses, cpu_params = _run(DLRM.from_arch(**ARCH, pooling=pooling), batches,
                                  Optimizer(opt, lr=0.1))
    calls = _gpu_path(monkeypatch)
    gpu_losses, gpu_params = _run(DLRM.from_arch(**ARCH, pooling=pooling), batches,
                                  Optimizer(opt, lr=0.1))
    assert calls, "the CUDA launchers were not used"
    assert gpu_losses == cpu_losses
    for name in cpu_params:
        np.testing.assert_array_equal(gpu_params[name], cpu_params[name], err_msg=name)


def test_predict_and_float64_gradients_on_the_gpu_path(monkeypatch):
    batches = _batches(1, seed=3)
    d, i, o, y, _ = batches[0]
    ref = DLRM.from_arch(**ARCH, dtype="float64")
    p_ref = ref.predict(d, i, o)
    loss_ref, g_ref = ref.loss_and_grad(d, i, o, y)
    _gpu_path(monkeypatch)
    m = DLRM.from_arch(**ARCH, dtype="float64")
    np.testing.assert_array_equal(m.predict(d, i, o), p_ref)
    loss, g = m.loss_and_grad(d, i, o, y)
    assert loss == loss_ref
    for name, v in g_ref.items():
        a = g[name]
        if hasattr(v, "rows"):
            np.testing.assert_array_equal(backend.to_host(a.rows), v.rows)
            a, v = a.values, v.values
        np.testing.assert_array_equal(backend.to_host(a), v, err_msg=name)


@pytest.mark.parametrize("opt", ["sgd", "rwsadagrad"])
def test_gradient_accumulation_on_the_gpu_path_is_bitwise_the_cpu_path(monkeypatch, opt):
    from npdlrm.grad_accum import GradientAccumulator
    batches = _batches(4, seed=5, weights=True)

    def run():
        model = DLRM.from_arch(**ARCH)
        acc, o = GradientAccumulator(model, 2), Optimizer(opt, lr=0.1)
        losses = [acc.train_step(d, i, off, y, o, per_sample_weights=w)
                  for d, i, off, y, w in batches]
        return losses, {k: backend.to_host(v).copy() for k, v in model.state_dict().items()}
    cpu_losses, cpu_params = run()
    calls = _gpu_path(monkeypatch)
    gpu_losses, gpu_params = run()
    assert calls
    assert gpu_losses == cpu_losses
    for name in cpu_params:
        np.testing.assert_array_equal(gpu_params[name], cpu_params[name], err_msg=name)

"""The CPU/GPU dispatch point, the two kernel homes and the CUDA sources (no GPU needed)."""
import inspect
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from npdlrm import DLRM, backend
from npdlrm.inputs import make_batch
from npdlrm.kernels import cpu, cuda
from npdlrm.kernels.names import COMPUTE

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_both_kernel_homes_export_the_same_names_with_the_same_signatures():
    assert cpu.__all__ == cuda.__all__ == list(COMPUTE)
    for name in COMPUTE:
        c, g = getattr(cpu, name), getattr(cuda, name)
        assert inspect.signature(c) == inspect.signature(g), name


def test_dispatch_follows_the_arrays():
    a = np.zeros(3)
    assert backend.get_array_module(a, 1.0) is np
    assert backend.kernels(a) is cpu
    assert backend.device_of(a) == "cpu"
    assert backend.to_device(a, "cpu") is a
    assert backend.to_host([1, 2]).tolist() == [1, 2]
    backend.synchronize(a)  # a no-op on the CPU


@pytest.mark.parametrize("bad", ["tpu", "GPU0", None])
def test_a_bad_device_is_named(bad):
    with pytest.raises(ValueError, match=repr(bad)):
        backend.check_device(bad)
    with pytest.raises(ValueError, match="device"):
        DLRM.from_arch("4-8-4", "8-1", "10-20", 4, device=bad)


def test_asking_for_the_gpu_without_one_says_why():
    why = backend.gpu_unavailable_reason()
    if why is None:
        pytest.skip("a GPU is usable here")
    with pytest.raises(RuntimeError, match="no GPU") as e:
        DLRM.from_arch("4-8-4", "8-1", "10-20", 4, device="gpu")
    assert why in str(e.value)
    m = DLRM.from_arch("4-8-4", "8-1", "10-20", 4)
    with pytest.raises(RuntimeError, match="no GPU"):
        m.to("gpu")
    assert m.device == "cpu" and m.xp is np  # nothing moved


def test_cupy_is_imported_in_exactly_one_file():
    pattern = re.compile(r"^\s*(import cupy|from cupy\b|import cupy_backends|from cupy_backends)",
                         re.M)
    files = [p for d in ("npdlrm", "kernels") for p in (ROOT / d).rglob("*.py")
             if pattern.search(p.read_text())]
    assert [p.relative_to(ROOT).as_posix() for p in files] == ["npdlrm/backend.py"]


def test_npdlrm_imports_and_trains_without_cupy():
    code = (
        "import sys\n"
        "sys.modules['cupy'] = None; sys.modules['cupy_backends'] = None\n"
        "import numpy as np\n"
        "import npdlrm, npdlrm.kernels.cuda\n"
        "from npdlrm import DLRM, Optimizer, backend\n"
        "assert 'CuPy cannot be imported' in backend.gpu_unavailable_reason()\n"
        "m = DLRM.from_arch('4-8-4', '8-1', '10-20', 4)\n"
        "r = np.random.default_rng(0)\n"
        "loss = m.train_step(r.random((8, 4), np.float32), [r.integers(0, 10, 8),\n"
        "    r.integers(0, 20, 8)], [np.arange(9)] * 2, r.integers(0, 2, 8), Optimizer())\n"
        "assert np.isfinite(loss)\n"
        "print('ok')\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


def test_every_cuda_source_compiles_to_ptx_for_sm90():
    """NVRTC needs no GPU: a syntax or type error in a kernel fails here (CI installs
    cupy-cuda12x and nvidia-cuda-nvrtc-cu12 and sets NPDLRM_REQUIRE_NVRTC=1)."""
    if backend.nvrtc_module() is None:
        if os.environ.get("NPDLRM_REQUIRE_NVRTC"):
            pytest.fail("NVRTC is not installed (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)")
        pytest.skip("NVRTC is not installed (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)")
    from npdlrm.kernels.cuda import _module
    assert set(cuda.SOURCES) == {"bias_relu", "embedding_bag", "embedding_bags",
                                 "embedding_segments", "embedding_update", "interaction"}
    for name, source in cuda.SOURCES.items():
        ptx = _module.compile_to_ptx(source, f"{name}.cu")
        names = set(re.findall(r"npdlrm_\w+", source))
        assert names, name
        for kernel in names:
            if re.search(rf'extern\s+"C"\s+__global__\s+void\s+{kernel}\b', source):
                assert f".entry {kernel}" in ptx, (name, kernel)


def test_a_kernel_error_is_reported_with_the_compiler_log():
    if backend.nvrtc_module() is None:
        pytest.skip("NVRTC is not installed")
    from npdlrm.kernels.cuda import _module
    bad = 'extern "C" __global__ void npdlrm_bad(float* a) { a[0] = undefined_name; }'
    with pytest.raises(RuntimeError, match="undefined_name"):
        _module.compile_to_ptx(bad, "bad.cu")


def test_kernel_names_are_prefixed_and_dtype_suffixed():
    for name, source in cuda.SOURCES.items():
        kernels = re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)', source)
        assert kernels, name
        for k in kernels:
            assert k.startswith("npdlrm_") and k.endswith(("_f32", "_f64")), (name, k)


def test_packed_bags_hold_every_table_back_to_back():
    m = DLRM.from_arch("4-8-4", "8-1", "10-20-30", 4)
    idx = [np.array([1, 2, 3]), np.array([], np.int64), np.array([5, 5, 19, 0])]
    off = [np.array([0, 1, 3]), np.array([0, 0, 0]), np.array([0, 3, 4])]
    w = [np.array([1, 2, 3], np.float32), None, np.array([4, 5, 6, 7], np.float32)]
    b = make_batch(m.config, np.zeros((2, 4)), idx, off, per_sample_weights=w)
    p = b.packed_on(np)
    assert p.packed.indices.tolist() == [1, 2, 3, 5, 5, 19, 0]
    assert p.packed.offsets.tolist() == [[0, 1, 3], [3, 3, 3], [3, 6, 7]]
    assert p.packed.weights.tolist() == [1, 2, 3, 4, 5, 6, 7]
    for k in range(3):
        np.testing.assert_array_equal(p.indices[k], b.indices[k])
        np.testing.assert_array_equal(p.offsets[k], b.offsets[k])
    assert p.per_sample_weights[1] is None
    assert b.to_device("cpu") is b


def test_a_failed_move_leaves_the_model_where_it_was(monkeypatch):
    """A move that fails half-way (here: at the second table, after the MLP parameters
    moved) brings back what had moved. NumPy stands in for the GPU's module, and a
    subclass of ndarray marks the arrays that were moved."""
    from npdlrm.embedding import EmbeddingTable
    m = DLRM.from_arch("4-8-4", "8-1", "10-20", 4)
    before = {k: np.array(v) for k, v in m.state_dict().items()}
    class Moved(np.ndarray):
        pass

    calls = []
    real_to = EmbeddingTable.to

    def to(self, xp, move):
        calls.append(self.name)
        if len(calls) == 2:
            raise MemoryError("out of device memory")
        real_to(self, xp, move)
    monkeypatch.setattr(EmbeddingTable, "to", to)
    monkeypatch.setattr(backend, "array_module", lambda device: np)
    monkeypatch.setattr(backend, "cupy_module", lambda: np)
    monkeypatch.setattr(backend, "to_device",
                        lambda a, device: a.view(Moved) if device == "gpu" else np.asarray(a))
    with pytest.raises(MemoryError):
        m.to("gpu")
    assert m.device == "cpu"
    assert type(m.params.data) is np.ndarray
    assert all(type(t.weight) is np.ndarray for t in m.embeddings.tables)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])

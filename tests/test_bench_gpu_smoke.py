"""bench/bench_gpu.py and bench/gpu_check.py run here without a GPU: the GPU benchmark's
measurement code on the CPU (scaled tables), and the GPU check saying loudly that it
checked nothing. What they measure on a GPU is not tested here."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")


def test_gpu_bench_measures_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--device",
                           "cpu", "--tables", "scaled", "--parts-on-cpu", "--steps", "2",
                           "--warmup", "1", "--reps", "2", "--batch-sizes", "32",
                           "--out", str(out)], capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CPU smoke run: not GPU numbers" in done.stdout
    text = out.read_text()
    assert "ms" in done.stdout and json.loads(text)


def test_gpu_check_without_a_gpu_says_nothing_was_checked(tmp_path):
    from npdlrm.backend import gpu_unavailable_reason
    if gpu_unavailable_reason() is None:
        import pytest
        pytest.skip("a GPU is usable here: make gpu-check runs the real thing")
    log = tmp_path / "gpu-check.log"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--log",
                           str(log), "--allow-no-gpu", "--budget", "60"],
                          capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nothing was checked on a GPU" in done.stdout + log.read_text()


def test_launch_count_script_counts_the_step_s_kernels():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_launches.py"),
                           "--optimizer", "rwsadagrad", "--batch", "16"],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "npdlrm_embedding_bags_fwd" in done.stdout
    assert "npdlrm_rowwise_step" in done.stdout

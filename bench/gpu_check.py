"""Everything to check on a GPU machine, in one run of under 8 minutes: the GPU tests, the
backend-parameterised tests, and a short GPU benchmark. Everything goes to a log file
(--log, default runs/gpu-check.log), and the last line is a one-line summary.

    python bench/gpu_check.py [--log PATH] [--budget 450] [--reference /path/to/dlrm]

Stages, each a subprocess with its own timeout (cut to what is left of --budget):
  environment   python, numpy, CuPy, the GPU (or why there is none), npdlrm's location
  gpu tests     pytest tests/test_gpu.py with NPDLRM_REQUIRE_GPU=1 (no GPU = failure)
  backend tests pytest on tests/test_cuda_embedding.py, test_cuda_dense.py,
                test_backend.py, every other test_cuda_*.py and every test file with a
                `device` parameter or a 'gpu' literal (found when this runs),
                NPDLRM_REQUIRE_GPU=1
  bench         bench/bench_gpu.py, short (its JSON beside the log: gpu-bench.json)
Exit status: 0 only when a GPU was used and nothing failed; 1 when a stage failed or
timed out; 3 with --allow-no-gpu on a machine without a GPU (the tests then skip their
GPU cases and the bench runs a CPU smoke test: nothing on a GPU was checked).
Benchmark targets that are missed are reported (PASS/MISS), not failures.
"""
import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXED_FILES = ["tests/test_gpu.py", "tests/test_cuda_embedding.py", "tests/test_cuda_dense.py",
               "tests/test_backend.py"]
# a test taking the `device` fixture (tests/conftest.py), or a 'gpu' literal (parameters)
GPU_PARAM = re.compile(r"def test_\w+\([^)]*\bdevice\b|[\"']gpu[\"']")
RESERVE_S = 10  # kept back from the budget for the summary
ENV_SCRIPT = r"""
import os, platform, sys
import numpy
print("python", platform.python_version(), sys.executable)
print("numpy", numpy.__version__)
import npdlrm
from npdlrm import backend
print("npdlrm", npdlrm.__version__, "from", os.path.dirname(npdlrm.__file__))
why = backend.gpu_unavailable_reason()
if why is None:
    cp = backend.cupy_module()
    d = cp.cuda.Device()
    name = cp.cuda.runtime.getDeviceProperties(d.id)["name"]
    free, total = cp.cuda.runtime.memGetInfo()
    print("cupy", cp.__version__, "CUDA runtime", cp.cuda.runtime.runtimeGetVersion(),
          "driver", cp.cuda.runtime.driverGetVersion())
    print("GPU", d.id, name.decode() if isinstance(name, bytes) else name,
          f"{total / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
    print("GPU: usable")
else:
    print("NO GPU:", why)
"""


# npdlrm from this checkout without an install: only when `pip install -e .` could not
# register it with this Python (npdlrm.kernels is <root>/kernels, setup.py's package_dir).
SHIM_INIT = '''"""npdlrm from {root}, not installed (bench/gpu_check.py's fallback)."""
import importlib.abc, importlib.util, os, sys
_ROOT = {root!r}
__path__ = [os.path.join(_ROOT, "npdlrm")]
__file__ = os.path.join(_ROOT, "npdlrm", "__init__.py")


class _Kernels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "npdlrm.kernels":
            return None
        k = os.path.join(_ROOT, "kernels")
        return importlib.util.spec_from_file_location(
            name, os.path.join(k, "__init__.py"), submodule_search_locations=[k])


sys.meta_path.insert(0, _Kernels())
with open(__file__) as _f:
    exec(compile(_f.read(), __file__, "exec"))
'''
WHERE = "import npdlrm, os; print(os.path.realpath(os.path.dirname(npdlrm.__file__)))"


def npdlrm_here(py, env):
    """Whether `py` imports npdlrm from this checkout."""
    try:
        r = subprocess.run([py, "-c", WHERE], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    want = os.path.realpath(os.path.join(ROOT, "npdlrm"))
    return r.returncode == 0 and r.stdout.strip() == want


def with_shim(env):
    """env with PYTHONPATH starting at a folder whose npdlrm package loads this checkout."""
    folder = tempfile.mkdtemp(prefix="npdlrm-shim-")
    os.makedirs(os.path.join(folder, "npdlrm"))
    with open(os.path.join(folder, "npdlrm", "__init__.py"), "w") as f:
        f.write(SHIM_INIT.format(root=ROOT))
    rest = env.get("PYTHONPATH")
    return dict(env, PYTHONPATH=folder + (os.pathsep + rest if rest else ""))


class Log:
    """Lines to stdout and to the log file at once."""

    def __init__(self, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.f = open(path, "w", buffering=1)

    def write(self, text):
        sys.stdout.write(text)
        sys.stdout.flush()
        self.f.write(text)

    def line(self, text=""):
        self.write(text + "\n")


def run_stage(log, name, cmd, timeout, env, shown=None):
    """Run cmd, its output streamed to the log, killed (with its children) at `timeout`
    seconds; returns (status, output): status 'ok', 'failed (exit N)' or 'timed out'.
    shown: how the command is logged (default: the command)."""
    log.line(f"\n===== {name}: {shown or ' '.join(cmd)}  (timeout {timeout:.0f} s)")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    out = []

    def pump():
        for line in proc.stdout:
            out.append(line)
            log.write(line)
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    reader.join(timeout=10)
    took = time.perf_counter() - t0
    status = (f"timed out after {timeout:.0f} s" if timed_out else
              "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})")
    log.line(f"===== {name}: {status} in {took:.0f} s")
    return status, "".join(out)


def gpu_param_files():
    """Test files of the CUDA kernels (test_cuda_*.py) and those whose tests take the
    `device` fixture or name 'gpu' (sorted)."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "test_*.py"))):
        with open(path, encoding="utf-8") as f:
            if os.path.basename(path).startswith("test_cuda_") or GPU_PARAM.search(f.read()):
                found.append(os.path.relpath(path, ROOT))
    return found


def pytest_counts(output):
    """{'passed': n, 'failed': n, 'skipped': n, 'error': n, ...} from pytest's last line."""
    counts = {}
    for line in reversed(output.splitlines()):
        if re.search(r"\d+ (passed|failed|skipped|errors?|deselected)|no tests ran", line):
            for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)",
                                      line):
                counts["error" if what.startswith("error") else what] = int(n)
            break
    return counts


def describe(counts):
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no pytest summary"


def bench_summary(path):
    """'B=2048 3.10 ms/it, ...; targets 2 PASS 1 MISS' from bench_gpu.py's JSON."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        return f"no results ({type(e).__name__})"
    parts, passes, misses = [], 0, 0
    for r in data.get("results", []):
        parts.append(f"B={r['batch_size']} {r['step']['ms']:.2f} ms/it")
        met = [t["pass"] for t in r.get("targets", {}).values()]
        passes += sum(met)
        misses += len(met) - sum(met)
    return f"{', '.join(parts)}; targets {passes} PASS {misses} MISS"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", default=os.path.join("runs", "gpu-check.log"))
    p.add_argument("--budget", type=float, default=450,
                   help="seconds for all stages together (default 450: under 8 minutes)")
    p.add_argument("--reference", metavar="PATH", help="passed on to bench_gpu.py")
    p.add_argument("--allow-no-gpu", action="store_true",
                   help="smoke-test this script without a GPU: GPU cases skip, the bench "
                        "runs on the CPU, and the exit status is 3 (never 0)")
    a = p.parse_args(argv)
    log = Log(a.log)
    t_start = time.perf_counter()

    def left():
        return a.budget - (time.perf_counter() - t_start) - RESERVE_S

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if a.allow_no_gpu:
        env.pop("NPDLRM_REQUIRE_GPU", None)
    else:
        env["NPDLRM_REQUIRE_GPU"] = "1"
    py = sys.executable
    if not npdlrm_here(py, env):
        env = with_shim(env)
        log.line(f"npdlrm is not installed from {ROOT} for {py} (did `pip install -e .` "
                 f"fail?): using a path shim, PYTHONPATH={env['PYTHONPATH']}")
    log.line(f"npdlrm GPU check, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, in {ROOT}, "
             f"budget {a.budget:.0f} s, NPDLRM_REQUIRE_GPU={env.get('NPDLRM_REQUIRE_GPU', '')}")
    status, out = run_stage(log, "environment", [py, "-c", ENV_SCRIPT],
                            max(1, min(60, left())), env,
                            shown=f"{py} -c <ENV_SCRIPT of bench/gpu_check.py>")
    no_gpu = next((ln for ln in out.splitlines() if ln.startswith("NO GPU:")), None)
    if status != "ok":
        no_gpu = no_gpu or "NO GPU: the environment check failed (see above)"
    if no_gpu:
        log.line("\n" + "!" * 78 + f"\n!!! {no_gpu}\n!!! Nothing below runs on a GPU"
                 + ("; the GPU tests FAIL (NPDLRM_REQUIRE_GPU=1)." if not a.allow_no_gpu
                    else "; GPU cases are SKIPPED, which is not a pass.") + "\n" + "!" * 78)

    results = {"environment": (status, "")}
    pytest = [py, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider"]
    status, out = run_stage(log, "gpu tests", pytest + ["tests/test_gpu.py"],
                            max(1, min(220, left())), env)
    results["gpu tests"] = (status, describe(pytest_counts(out)))

    others = [f for f in FIXED_FILES[1:] if os.path.exists(os.path.join(ROOT, f))]
    missing = [f for f in FIXED_FILES if not os.path.exists(os.path.join(ROOT, f))]
    others += [f for f in gpu_param_files() if f not in FIXED_FILES and f not in others]
    log.line(f"\nbackend-parameterised test files: {' '.join(others)}"
             + (f"\nMISSING test files: {' '.join(missing)}" if missing else ""))
    status, out = run_stage(log, "backend tests", pytest + others,
                            max(1, min(200, left())), env)
    results["backend tests"] = (status if not missing else f"{status}; missing {missing}",
                                describe(pytest_counts(out)))

    bench_json = os.path.join(os.path.dirname(os.path.abspath(a.log)), "gpu-bench.json")
    if os.path.exists(bench_json):
        os.remove(bench_json)
    bench = [py, os.path.join("bench", "bench_gpu.py"), "--out", bench_json]
    if no_gpu and a.allow_no_gpu:
        bench += ["--device", "cpu", "--tables", "scaled", "--steps", "3", "--warmup", "1",
                  "--batch-sizes", "256", "--reps", "3", "--parts-on-cpu"]
    else:
        bench += ["--steps", "20", "--warmup", "3", "--reps", "5",
                  "--batch-sizes", "2048,16384"]
    if a.reference:
        bench += ["--reference", a.reference]
    status, _ = run_stage(log, "bench" + (" (CPU smoke)" if no_gpu and a.allow_no_gpu else ""),
                          bench, max(1, min(150, left())), env)
    results["bench"] = (status, ("CPU smoke, not GPU numbers: " if no_gpu else "")
                        + bench_summary(bench_json) if status == "ok" else "")

    failed = [k for k, (s, _) in results.items() if s != "ok"
              and not (k == "environment" and no_gpu and a.allow_no_gpu)]
    took = time.perf_counter() - t_start
    log.line("\n" + "\n".join(f"  {k:14s} {s}{': ' + d if d else ''}"
                              for k, (s, d) in results.items()))
    if failed:
        verdict, code = f"FAIL ({', '.join(failed)})", 1
    elif no_gpu:
        verdict, code = "NO GPU: nothing was checked on a GPU", 3
    else:
        verdict, code = "PASS", 0
    parts = "; ".join(f"{k}: {d or s}" if s == "ok" else f"{k}: {s.upper()}"
                      + (f" ({d})" if d else "") for k, (s, d) in results.items()
                      if k != "environment")
    log.line(f"GPU CHECK {verdict} in {took:.0f} s -- {parts}"
             + (f" [{no_gpu}]" if no_gpu else "") + f" (log: {a.log})")
    return code


if __name__ == "__main__":
    sys.exit(main())

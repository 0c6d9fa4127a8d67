from setuptools import setup

setup(
    name="npdlrm",
    version="0.1.0",
    description="DLRM training on NumPy and Numba with hand-written layers",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    # kernels/ ships inside the package as npdlrm.kernels (a top-level `kernels` is
    # another PyPI project)
    packages=["npdlrm", "npdlrm.kernels", "npdlrm.kernels.cpu", "npdlrm.kernels.cuda",
              "npdlrm.data", "npdlrm.cli", "npdlrm.parallel"],
    package_dir={"npdlrm": "npdlrm", "npdlrm.kernels": "kernels"},
    python_requires=">=3.9",
    # tqdm: the training progress bar (loss, samples/s, ETA); matplotlib only for `npdlrm plot`
    install_requires=["numpy>=1.24", "numba>=0.58", "h5py>=3.8", "tqdm>=4.60"],
    # mpi: mpi4py with MPICH from PyPI, so multi-process runs need no system MPI (a site's
    # own MPI: install mpi4py built against it instead, see the README)
    # onnx: `npdlrm export-onnx` / `train --save-onnx` (onnxruntime runs the exported graph)
    extras_require={"plot": ["matplotlib>=3.5"], "mpi": ["mpi4py>=3.1", "mpich"],
                    "onnx": ["onnx>=1.13", "onnxruntime>=1.14"],
                    # mlperf: MLPerf log events of `train --mlperf-logging` (optional)
                    "mlperf": ["mlperf-logging>=3"],
                    # gpu: `train --use-gpu` (CuPy for CUDA 12; cupy-cuda13x serves too)
                    "gpu": ["cupy-cuda12x>=13"],
                    # cuda-check: NVRTC compiles every CUDA kernel to PTX in the tests, on a
                    # machine with no GPU (CuPy's bindings and NVIDIA's NVRTC library)
                    "cuda-check": ["cupy-cuda12x>=13", "nvidia-cuda-nvrtc-cu12"],
                    "test": ["pytest>=7", "matplotlib>=3.5", "mpi4py>=3.1", "mpich",
                             "onnx>=1.13", "onnxruntime>=1.14"]},
    entry_points={"console_scripts": ["npdlrm = npdlrm.cli:main"]},
)

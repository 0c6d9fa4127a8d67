# Everything runs in a local virtual environment created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test train bench bench-mpi bench-inference gpu-check bench-gpu clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,mpi,cuda-check]'
	touch $(STAMP)

install: $(STAMP)

# NPDLRM_REQUIRE_NVRTC: a missing NVRTC fails the CUDA compile checks instead of skipping
test: $(STAMP)
	NPDLRM_REQUIRE_NVRTC=1 $(VENV)/bin/pytest -q tests

# `make train`: a real run on synthetic data with a planted model, about a minute on
# 2 cores; the same flags as the reference dlrm_s_pytorch.py (`npdlrm train --help`).
TRAIN_FLAGS := --data-generation synthetic \
	--arch-embedding-size 1460-583-100000-50000-305-24-12517-633-3-93145-5683-80000-3194-27-14992-50000-10-5652-2173-4-70000-18-15-28000-105-14200 \
	--arch-sparse-feature-size 16 --arch-mlp-bot 13-128-64-16 --arch-mlp-top 128-64-1 \
	--loss-function bce --optimizer adagrad --learning-rate 0.05 \
	--mini-batch-size 512 --num-batches 3000 --nepochs 1 \
	--print-freq 500 --print-time --test-freq 1000 --test-mini-batch-size 8192 \
	--test-data-size 50000 --log-file runs/make-train.jsonl

train: $(STAMP)
	$(VENV)/bin/npdlrm train $(TRAIN_FLAGS) $(ARGS)

bench: $(STAMP)
	$(PY) bench/bench_train.py $(ARGS)
	$(PY) bench/bench_threads.py
	$(PY) bench/bench_data.py
	$(PY) bench/bench_preprocess.py

# the distributed step at 1, 2 and 4 ranks (mpiexec from the mpich wheel): split and bytes
bench-mpi: $(STAMP)
	$(PY) bench/bench_mpi.py $(ARGS)

# batch scoring at 1 and 2 threads: npdlrm predict (float32, int8, int4 tables), the
# reference's inference step (needs ../refdlrm and a torch Python, --torch-python) and
# onnxruntime on the exported graph, each skipped with its reason when absent
bench-inference: $(STAMP)
	$(PY) bench/bench_inference.py $(ARGS)

# On a GPU machine (no internet; CuPy, numba, h5py, tqdm, pytest, mpi4py already there):
# no venv and nothing downloaded, the checkout is only registered with that Python.
# gpu-check: the GPU tests, the backend-parameterised tests and a short GPU benchmark in
# under 8 minutes, log in runs/gpu-check.log (ARGS e.g. --log PATH); bench-gpu: the GPU
# benchmark alone (ARGS e.g. --batch-sizes 2048,16384 --steps 100 --out runs/gpu.json).
GPU_PYTHON ?= python3

# (should pip refuse, e.g. an externally managed Python, gpu_check.py loads the checkout
# through a path shim instead and says so)
gpu-check:
	-$(GPU_PYTHON) -m pip install --no-deps --no-build-isolation -e . --quiet
	$(GPU_PYTHON) bench/gpu_check.py $(ARGS)

bench-gpu:
	$(GPU_PYTHON) -m pip install --no-deps --no-build-isolation -e . --quiet
	$(GPU_PYTHON) bench/bench_gpu.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

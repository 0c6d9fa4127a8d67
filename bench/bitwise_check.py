"""Bitwise check of the training step: digests of losses, parameters and predictions of
a few steps (sgd, adagrad, rwsadagrad; batch 128 and 2048; 1 and N Numba threads).

    NUMBA_NUM_THREADS=2 .venv/bin/python bench/bitwise_check.py

A kernel change that must leave results bitwise unchanged keeps these digests. They
were recorded on this project's machine (2026-11-30); NumPy's BLAS may round
differently on another CPU, so compare before/after on the same machine.
"""
import hashlib, sys
import numpy as np
import numba
import npdlrm
from npdlrm.data.synthetic import SyntheticData

SIZES = (1460, 583, 100000, 22026, 305, 24, 12517, 633, 3, 93145, 5683, 83515, 3194, 27,
         14992, 54613, 10, 5652, 2173, 4, 70465, 18, 15, 28618, 105, 14257)

def digest(opt_name, B, threads):
    numba.set_num_threads(threads)
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="13-64-16", arch_mlp_top="64-1",
                                  arch_embedding_size=SIZES, arch_sparse_feature_size=16, seed=7)
    opt = npdlrm.Optimizer(opt_name, lr=0.05)
    data = SyntheticData(num_samples=B * 6, num_dense=13, table_sizes=SIZES,
                         distribution="power-law", bag_size=3, fixed_bag_size=False, seed=4)
    h = hashlib.blake2b(digest_size=16)
    for i in range(4):
        mb = data.batch(i, B, "train")
        loss = model.train_step(mb.dense, mb.indices, mb.offsets, mb.labels, opt)
        h.update(np.float64(loss).tobytes())
    for a in model.state_dict().values():
        h.update(a.tobytes())
    mb = data.batch(5, B, "train")
    h.update(model.predict(mb.dense, mb.indices, mb.offsets).tobytes())
    return h.hexdigest()

RECORDED = {
    ("sgd", 128): "765efcdd5d0b80651051cf21bb8d93fe",
    ("sgd", 2048): "78726cb6ad03d87a8fc05f9940cd1e9f",
    ("adagrad", 128): "e46207c66b6aac8d41ffd0d7f94122f2",
    ("adagrad", 2048): "2198554c858b144a3d53e8101da5f9f1",
    ("rwsadagrad", 128): "0a2da79e4403d4f0d811a3911b0e3566",
    ("rwsadagrad", 2048): "982e629cf3c76f9bbe8593a769999d58",
}

if __name__ == "__main__":
    bad = 0
    for (opt, B), want in RECORDED.items():
        ds = {t: digest(opt, B, t) for t in sorted({1, numba.config.NUMBA_NUM_THREADS})}
        same = len(set(ds.values())) == 1 and ds[1] == want
        bad += not same
        print(f"{opt:10s} B={B:5d}: {'same' if same else 'DIFFERENT'} {ds}")
    print("bitwise unchanged" if not bad else f"{bad} cases changed")
    sys.exit(1 if bad else 0)

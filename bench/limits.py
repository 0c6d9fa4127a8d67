"""What the hardware and bare NumPy can do: the yardsticks the engine is compared with."""
import numpy as np

STREAM_MIB = 256


def mlp_layer_shapes(config):
    """[(n_in, n_out, need_dx)] of every Linear layer, bottom then top; the first bottom
    layer's dx is skipped, as the engine skips it."""
    shapes = []
    for sizes, first_dx in ((config.bottom_mlp, False), (config.top_sizes, True)):
        for i in range(len(sizes) - 1):
            shapes.append((sizes[i], sizes[i + 1], first_dx or i > 0))
    return shapes


def gemm_flops(shapes, B):
    """Floating-point operations of the forward and backward GEMMs (2 per multiply-add)."""
    fwd = sum(2 * B * n * m for n, m, _ in shapes)
    bwd = sum(2 * B * n * m * (2 if dx else 1) for n, m, dx in shapes)
    return fwd, bwd


def time_gemms(shapes, B, timer, dtype=np.float32, seed=2):
    """Bare matmuls of the MLP shapes: forward x @ W.T; backward dy.T @ x and dy @ W."""
    rng = np.random.default_rng(seed)
    layers = [(rng.random((B, n), dtype=dtype), rng.random((m, n), dtype=dtype),
               rng.random((B, m), dtype=dtype), dx) for n, m, dx in shapes]

    def fwd(i):
        for x, w, _, _ in layers:
            x @ w.T

    def bwd(i):
        for x, w, dy, dx in layers:
            dy.T @ x
            if dx:
                dy @ w

    return {"forward": timer(fwd), "backward": timer(bwd)}


def time_stream_copy(timer, mib=STREAM_MIB):
    """np.copyto of two `mib` MiB float32 arrays; bytes moved = 2 x size (read + write)."""
    src = np.ones(mib * 2**20 // 4, np.float32)
    dst = np.zeros_like(src)
    t = timer(lambda i: np.copyto(dst, src))
    t["bytes"] = 2 * src.nbytes
    return t


def time_numpy_embedding(model, inputs, lr, timer):
    """Plain-NumPy counterparts of the embedding stages on the same batches:
    np.take gather (one index per bag, so it equals the sum pooling) and the naive
    np.add.at scatter update (with the same (T, B, D) transpose copy as the engine)."""
    tables = [t.weight for t in model.embeddings.tables]
    s, n = inputs, len(inputs.batches)
    B, D = s.T.shape[0], s.T.shape[2]
    out = np.empty((len(tables), B, D), s.T.dtype)

    def gather(i):
        for k, w in enumerate(tables):
            np.take(w, s.checked[i % n].indices[k], axis=0, out=out[k])

    def add_at(i):
        per_table = np.ascontiguousarray(s.dT[:, 1:, :].transpose(1, 0, 2))
        per_table *= -lr
        for k, w in enumerate(tables):
            np.add.at(w, s.checked[i % n].indices[k], per_table[k])

    return {"np.take gather": timer(gather), "np.add.at update": timer(add_at)}


def embedding_bytes(batches, itemsize, dim):
    """Bytes one step's embedding stages must move, averaged over `batches`:
    lookup = nnz*D*s (rows read) + B*T*D*s (pooled written) + nnz*8 (indices);
    update = B*T*D*s (grads read) + 2*U*D*s (unique rows read + written) + nnz*8.
    nnz: indices over all tables; U: distinct rows over all tables."""
    lookup, update, nnz_total, uniq_total = 0, 0, 0, 0
    for dense, indices, _, _ in batches:
        nnz = sum(int(ix.size) for ix in indices)
        uniq = sum(int(np.unique(ix).size) for ix in indices)
        bags = dense.shape[0] * len(indices)
        lookup += nnz * dim * itemsize + bags * dim * itemsize + nnz * 8
        update += bags * dim * itemsize + 2 * uniq * dim * itemsize + nnz * 8
        nnz_total += nnz
        uniq_total += uniq
    n = len(batches)
    return {"lookup": lookup / n, "update": update / n, "rows": nnz_total / n,
            "unique_rows": uniq_total / n}

"""Slow, obvious NumPy references for the kernels in ``npdlrm.kernels``."""
import numpy as np


def embedding_bag_forward(weight, indices, offsets, per_sample_weights, mean):
    """Pooled bags, (B, D)."""
    B = len(offsets) - 1
    out = np.zeros((B, weight.shape[1]), weight.dtype)
    for b in range(B):
        s, e = offsets[b], offsets[b + 1]
        for k in range(s, e):
            w = 1.0 if per_sample_weights is None else per_sample_weights[k]
            out[b] += w * weight[indices[k]]
        if mean and e > s:
            out[b] /= e - s
    return out


def embedding_bag_dense_grad(dout, indices, offsets, per_sample_weights, mean, num_rows):
    """Dense (V, D) gradient of sum(dout * pooled) wrt the table."""
    B = len(offsets) - 1
    scale = np.zeros(len(indices), dout.dtype)
    bag = np.zeros(len(indices), np.int64)
    for b in range(B):
        s, e = offsets[b], offsets[b + 1]
        for k in range(s, e):
            w = 1.0 if per_sample_weights is None else per_sample_weights[k]
            scale[k] = w / (e - s) if mean else w
            bag[k] = b
    grad = np.zeros((num_rows, dout.shape[1]), dout.dtype)
    np.add.at(grad, np.asarray(indices, np.int64), scale[:, None] * dout[bag])
    return grad


def embedding_bag_grad(dout, indices, offsets, per_sample_weights, mean, num_rows):
    """(rows, values): the looked-up rows of the dense gradient."""
    dense = embedding_bag_dense_grad(dout, indices, offsets, per_sample_weights, mean,
                                     num_rows)
    rows = np.unique(np.asarray(indices, np.int64))
    return rows, dense[rows]


def sgd_apply(weight, rows, g, lr):
    """weight[rows] -= lr * g, in the weight dtype."""
    dt = weight.dtype.type
    weight[rows] -= dt(lr) * g


def adagrad_apply(weight, state, rows, g, lr, eps):
    """state[rows] += g**2; weight[rows] -= lr * (g / (sqrt(state[rows]) + eps))."""
    dt = weight.dtype.type
    s = state[rows] + g * g
    state[rows] = s
    weight[rows] -= dt(lr) * (g / (np.sqrt(s) + dt(eps)))


def rowwise_adagrad_apply(weight, state, rows, g, lr, eps):
    """state[rows] += mean_d(g**2) (summed sequentially over d); then the Adagrad step."""
    dt = weight.dtype.type
    acc = np.zeros(len(rows), weight.dtype)
    for d in range(g.shape[1]):
        acc += g[:, d] * g[:, d]
    s = state[rows] + acc / dt(g.shape[1])
    state[rows] = s
    weight[rows] -= dt(lr) * (g / (np.sqrt(s) + dt(eps))[:, None])


def pair_indices(F, self_interaction):
    li, lj = [], []
    for i in range(F):
        for j in range(i + (1 if self_interaction else 0)):
            li.append(i)
            lj.append(j)
    return np.array(li, np.int64), np.array(lj, np.int64)


def dot_interaction_forward(T, self_interaction):
    """[T[:, 0], Z[:, li, lj]] with Z = T @ T^T."""
    Z = T @ T.transpose(0, 2, 1)
    li, lj = pair_indices(T.shape[1], self_interaction)
    return np.concatenate([T[:, 0, :], Z[:, li, lj]], axis=1)


def dot_interaction_backward(dout, T, self_interaction):
    """dT by scattering dout into a dense dZ and dT = (dZ + dZ^T) @ T."""
    B, F, D = T.shape
    li, lj = pair_indices(F, self_interaction)
    dZ = np.zeros((B, F, F), T.dtype)
    dZ[:, li, lj] = dout[:, D:]
    dT = (dZ + dZ.transpose(0, 2, 1)) @ T
    dT[:, 0, :] += dout[:, :D]
    return dT


def bias_relu_forward(y, bias):
    return np.maximum(y + bias, 0)


def relu_bias_backward(dbias, dy, y):
    """(dbias + colsum(masked dy), masked dy)."""
    m = np.where(y > 0, dy, 0).astype(dy.dtype)
    return dbias + m.sum(axis=0, dtype=np.float64).astype(dbias.dtype), m

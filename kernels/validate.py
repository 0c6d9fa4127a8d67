"""One pass over a table's bags to find the first bad index or offset."""
from ._numba import jit

OK, BAD_INDEX, BAD_OFFSET = 0, 1, 2


@jit
def check_bags(indices, offsets, num_rows):
    """indices: (nnz,); offsets: (B+1,). Returns (status, position):
    BAD_OFFSET at the first offsets[i] < offsets[i-1] or past nnz (or offsets[0] != 0),
    BAD_INDEX at the first index outside [0, num_rows), else (OK, -1)."""
    nnz = indices.shape[0]
    if offsets.shape[0] > 0 and offsets[0] != 0:
        return BAD_OFFSET, 0
    for i in range(1, offsets.shape[0]):
        if offsets[i] < offsets[i - 1] or offsets[i] > nnz:
            return BAD_OFFSET, i
    for i in range(nnz):
        v = indices[i]
        if v < 0 or v >= num_rows:
            return BAD_INDEX, i
    return OK, -1

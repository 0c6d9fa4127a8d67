"""Parse lines of raw Criteo TSV (label, 13 integers, 26 hex categoricals) from bytes.

A line is ``buf[starts[i]:ends[i]]`` without its '\\n' (a trailing '\\r' is dropped
here). Each line gets a status code; on a malformed line ``bad_field`` names the
0-based field (0 = label, 1..13 = integers, 14..39 = categoricals), or holds the
field count when the count is wrong. Missing (empty) integer and categorical fields
parse as 0; the label must be '0' or '1', never empty. The values of a malformed line
are unspecified.
"""
import numpy as np
from numba import prange

from ._numba import jit, pjit

NUM_FIELDS = 40
NUM_INT = 13
NUM_CAT = 26

OK = 0
FIELD_COUNT = 1    # bad_field holds the number of fields found
BAD_LABEL = 2      # not '0' or '1' (an empty label is malformed)
BAD_INT = 3        # not an optional '-' followed by decimal digits
INT_RANGE = 4      # digits that do not fit int64
BAD_HEX = 5        # a character that is not a hex digit
HEX_TOO_LONG = 6   # more than 16 hex digits

MAX_HEX_DIGITS = 16
# Lines below which the serial kernel runs.
PARALLEL_MIN_LINES = 4096


@jit
def _hex_digit(c):
    """Value of ASCII hex digit c, or -1."""
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


@jit
def _parse_int(buf, p, q):
    """(status, value) of the integer field buf[p:q] ('' -> 0)."""
    if q == p:
        return OK, np.int64(0)
    neg = buf[p] == 45
    s = p + 1 if neg else p
    if s == q:
        return BAD_INT, np.int64(0)
    ten = np.uint64(10)
    # largest magnitude: 2**63 - 1, or 2**63 when negative
    limit = np.uint64(9223372036854775808) if neg else np.uint64(9223372036854775807)
    mag = np.uint64(0)
    overflow = False
    for k in range(s, q):
        c = buf[k]
        if c < 48 or c > 57:
            return BAD_INT, np.int64(0)
        d = np.uint64(c - 48)
        if not overflow:
            if mag > (limit - d) // ten:
                overflow = True
            else:
                mag = mag * ten + d
    if overflow:
        return INT_RANGE, np.int64(0)
    if neg:
        if mag == np.uint64(9223372036854775808):
            return OK, np.int64(-9223372036854775807 - 1)
        return OK, -np.int64(mag)
    return OK, np.int64(mag)


@jit
def _parse_hex(buf, p, q):
    """(status, value) of the hex field buf[p:q] ('' -> 0)."""
    v = np.uint64(0)
    for k in range(p, q):
        d = _hex_digit(buf[k])
        if d < 0:
            return BAD_HEX, np.uint64(0)
        v = (v << np.uint64(4)) | np.uint64(d)
    if q - p > MAX_HEX_DIGITS:
        return HEX_TOO_LONG, np.uint64(0)
    return OK, v


@jit
def _parse_line(i, labels, ints, cats_t, status, bad_field, buf, s, e):
    """Parse line buf[s:e] into row i of the outputs."""
    if e > s and buf[e - 1] == 13:
        e -= 1
    nf = 1
    for k in range(s, e):
        if buf[k] == 9:
            nf += 1
    if nf != NUM_FIELDS:
        status[i] = FIELD_COUNT
        bad_field[i] = nf
        return
    p = s
    for f in range(NUM_FIELDS):
        q = p
        while q < e and buf[q] != 9:
            q += 1
        if f == 0:
            n = q - p
            if n == 1 and buf[p] == 48:
                labels[i] = 0
            elif n == 1 and buf[p] == 49:
                labels[i] = 1
            else:
                status[i] = BAD_LABEL
                bad_field[i] = 0
                return
        elif f <= NUM_INT:
            st, v = _parse_int(buf, p, q)
            if st != OK:
                status[i] = st
                bad_field[i] = f
                return
            ints[i, f - 1] = v
        else:
            st, h = _parse_hex(buf, p, q)
            if st != OK:
                status[i] = st
                bad_field[i] = f
                return
            cats_t[f - 1 - NUM_INT, i] = h
        p = q + 1
    status[i] = OK
    bad_field[i] = -1


@jit
def _parse_serial(labels, ints, cats_t, status, bad_field, buf, starts, ends):
    for i in range(starts.shape[0]):
        _parse_line(i, labels, ints, cats_t, status, bad_field, buf, starts[i], ends[i])


@pjit
def _parse_parallel(labels, ints, cats_t, status, bad_field, buf, starts, ends):
    for i in prange(starts.shape[0]):  # each thread writes only its own row i
        _parse_line(i, labels, ints, cats_t, status, bad_field, buf, starts[i], ends[i])


def parse_criteo_lines(labels, ints, cats_t, status, bad_field, buf, starts, ends):
    """Parse n lines of `buf` into the outputs (all rows written).

    labels: (n,) int8; ints: (n, 13) int64; cats_t: (26, n) uint64 (column-major, so
    each column is contiguous for the dictionary's sorts); status: (n,) int8;
    bad_field: (n,) int32; buf: (nbytes,) uint8; starts, ends: (n,) int64.
    """
    if starts.shape[0] < PARALLEL_MIN_LINES:
        _parse_serial(labels, ints, cats_t, status, bad_field, buf, starts, ends)
    else:
        _parse_parallel(labels, ints, cats_t, status, bad_field, buf, starts, ends)

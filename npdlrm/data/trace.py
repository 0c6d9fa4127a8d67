"""The reference's trace-based synthetic data: its file formats, the stack-distance
profile of an access trace, and the LRU generator that replays a profile.

A trace is a sequence of row ids (memory references). Its profile ("dist file", three
lines of ", "-separated numbers, as the reference's dlrm_data_pytorch.py reads them):

    line 1: the unique rows in order of first access (the LRU stack's initial order)
    line 2: the distinct stack distances, ascending (0 means "a row never seen before")
    line 3: their cumulative probabilities

The generator replays a profile: each access draws a stack distance from the cumulative
distribution with one uniform of a `numpy.random.RandomState` and either takes the next
new row (distance 0) or re-uses the row that many places down the LRU stack, exactly as
the reference's `trace_generate_lru` does, draw for draw.
"""
import bisect
import collections
import math
import os
from typing import NamedTuple, Tuple

import numpy as np


class StackProfile(NamedTuple):
    """A trace's profile: the unique rows in order of first access, the distinct stack
    distances (ascending) and their cumulative probabilities (same length)."""
    unique_accesses: Tuple[int, ...]
    distances: Tuple[int, ...]
    cumulative: Tuple[float, ...]


def check_profile(profile, where="profile"):
    """Raise ValueError unless `profile` can drive the generator."""
    ua, sd, cum = profile
    if not ua or not sd or len(sd) != len(cum):
        raise ValueError(f"{where}: needs unique rows, stack distances and as many cumulative "
                         f"probabilities (got {len(ua)}, {len(sd)}, {len(cum)})")
    if any(b <= a for a, b in zip(sd, sd[1:])) or sd[0] < 0:
        raise ValueError(f"{where}: stack distances must be >= 0 and increasing, got {list(sd)}")
    if sd[-1] > len(ua):
        raise ValueError(f"{where}: stack distance {sd[-1]} exceeds the {len(ua)} unique rows")
    if any(b < a for a, b in zip(cum, cum[1:])) or not all(0.0 <= c <= 1.0 + 1e-9 for c in cum):
        raise ValueError(f"{where}: cumulative probabilities must be non-decreasing in [0, 1], "
                         f"got {list(cum)}")
    if min(ua) < 0:
        raise ValueError(f"{where}: rows must be >= 0, got {min(ua)}")
    return profile


def _numbers(line, kind, path, n):
    try:
        return tuple(kind(v) for v in line.split(", ")) if line.strip() else ()
    except ValueError:
        raise ValueError(f"{path}: line {n} must hold {kind.__name__}s separated by ', ', "
                         f"got {line[:80]!r}") from None


def read_profile(path):
    """A StackProfile from a dist file (the reference's read_dist_from_file format)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"trace profile {path} does not exist")
    with open(path) as f:
        lines = f.read().splitlines()
    if len(lines) < 3:
        raise ValueError(f"{path}: a trace profile has 3 lines (unique rows, stack distances, "
                         f"cumulative probabilities), got {len(lines)}")
    return check_profile(StackProfile(_numbers(lines[0], int, path, 1),
                                      _numbers(lines[1], int, path, 2),
                                      _numbers(lines[2], float, path, 3)), path)


def write_profile(path, profile):
    """Write a dist file the reference reads (plain Python numbers, ", "-separated)."""
    ua, sd, cum = check_profile(profile)
    with open(os.fspath(path), "w") as f:
        f.write(", ".join(str(int(v)) for v in ua) + "\n")
        f.write(", ".join(str(int(v)) for v in sd) + "\n")
        f.write(", ".join(repr(float(v)) for v in cum) + "\n")


def read_trace(path, binary=False):
    """A trace file: text ("a, b, c" on one line) or binary (uint64). -> (n,) uint64."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"trace file {path} does not exist")
    if binary:
        return np.fromfile(path, dtype=np.uint64)
    with open(path) as f:
        line = f.readline()
    return np.array(_numbers(line, int, path, 1), dtype=np.uint64)


def write_trace(path, trace, binary=False):
    """Write a trace in the reference's text (one ", "-separated line) or binary format."""
    trace = np.asarray(trace, dtype=np.uint64)
    if binary:
        trace.tofile(os.fspath(path))
    else:
        with open(os.fspath(path), "w") as f:
            f.write(", ".join(str(int(v)) for v in trace))


def profile_trace(trace, enable_padding=False):
    """The StackProfile of a trace, as the reference's dlrm_data_pytorch.py main computes it.

    The stack distance of an access is its depth in the LRU stack (1: the row accessed
    last), 0 for a first access. enable_padding adds ceil(len / max distance) extra zeros,
    which makes new rows more likely when a long trace has few distinct rows (the
    reference's own padding line fails: it adds a list to a deque)."""
    stack, distances, firsts = [], [], []
    for x in np.asarray(trace, dtype=np.uint64).tolist():
        try:
            i = stack.index(x)
        except ValueError:
            distances.append(0)
            firsts.append(x)
            stack.append(x)
            continue
        distances.append(len(stack) - i)
        del stack[i]
        stack.append(x)
    if enable_padding and distances:
        distances += [0] * math.ceil(len(distances) / max(max(distances), 1))
    if not distances:
        raise ValueError("cannot profile an empty trace")
    counts = sorted(collections.Counter(distances).items())
    total, acc, cumulative = float(len(distances)), 0.0, []
    for i, (_, k) in enumerate(counts):
        acc = k / total if i == 0 else acc + k / total
        cumulative.append(acc)
    return StackProfile(tuple(firsts), tuple(d for d, _ in counts), tuple(cumulative))


def draw_distance(rs, profile, new_seen, enable_padding=False):
    """One stack distance (the reference's generate_stack_distance): one rs.rand() draw.
    Until all distances are possible (new_seen < max distance) the draw is confined to
    distances <= new_seen; with enable_padding, once they are, distance 0 is excluded."""
    _, sd, cum = profile
    u = rs.rand(1)[0]
    if new_seen < sd[-1]:
        u *= cum[bisect.bisect(sd, new_seen) - 1]
    elif enable_padding:
        u = (1.0 - cum[0]) * u + cum[0]
    for d, f in zip(sd, cum):
        if u <= f:
            return d
    return sd[-1]  # u above a last probability rounded below 1 (the reference crashes)


def generate_lru(profile, length, rs, enable_padding=False):
    """`length` rows replayed from `profile` with RandomState rs (the reference's
    trace_generate_lru, from the profile's initial LRU order). -> (length,) int64."""
    stack = list(profile.unique_accesses)
    n, new_seen, out = len(stack), 0, np.empty(int(length), dtype=np.int64)
    for k in range(int(length)):
        d = draw_distance(rs, profile, new_seen, enable_padding)
        if d == 0:
            row = stack.pop(0)
            new_seen += 1
        else:
            row = stack.pop(n - d)
        stack.append(row)
        out[k] = row
    return out


def table_profile_paths(pattern, num_tables):
    """The dist file of each table: the reference puts the table number in place of every
    'j' of --data-trace-file (./input/dist_emb_j.log -> dist_emb_0.log, ...). Here only the
    file name's 'j's are replaced, never the folders'."""
    folder, name = os.path.split(os.fspath(pattern))
    return [os.path.join(folder, name.replace("j", str(k))) for k in range(int(num_tables))]

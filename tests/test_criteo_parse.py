"""The Numba Criteo line parser and the block reader against the slow Python parser."""
import gzip

import numpy as np
import pytest

from npdlrm.data.criteo_tsv import (
    MalformedRowError, describe, iter_line_blocks, parse_line_python, read_criteo_tsv)
from npdlrm.kernels import criteo_parse as kp

I64_MAX = 2**63 - 1


def random_valid_line(rng):
    """A valid line (bytes) with missing fields, negatives, odd case and big values."""
    f = [rng.choice([b"0", b"1"])]
    for _ in range(13):
        r = rng.random()
        if r < 0.15:
            f.append(b"")
        elif r < 0.25:
            f.append(b"-%d" % rng.integers(0, 1000))
        elif r < 0.3:
            f.append(str(int(rng.integers(0, 2**62)) * 2 + 1).encode())
        else:
            f.append(b"%d" % rng.integers(0, 100000))
    for _ in range(26):
        r = rng.random()
        if r < 0.15:
            f.append(b"")
        else:
            n = int(rng.integers(1, 17))
            digits = rng.choice(list(b"0123456789abcdefABCDEF"), n)
            f.append(bytes(int(d) for d in digits))
    return b"\t".join(f)


def corrupt(rng, line):
    """A malformed variant of a valid line, of a random kind."""
    f = line.split(b"\t")
    kind = int(rng.integers(0, 9))
    if kind == 0:
        f.pop(int(rng.integers(0, 40)))
    elif kind == 1:
        f.insert(int(rng.integers(0, 40)), b"7")
    elif kind == 2:
        f[0] = rng.choice([b"2", b"x", b"00", b"-1", b" 1"])
    elif kind == 3:
        f[int(rng.integers(1, 14))] = rng.choice([b"-", b"1a", b"+5", b"1.0", b" 3", b"--1"])
    elif kind == 4:
        f[int(rng.integers(1, 14))] = rng.choice([b"9223372036854775808",
                                                  b"-9223372036854775809", b"1" * 30])
    elif kind == 5:
        f[int(rng.integers(14, 40))] = rng.choice([b"0x1f", b"g", b"12 ", b"\xff\xfe", b"-1"])
    elif kind == 6:
        f[int(rng.integers(14, 40))] = b"a" * int(rng.integers(17, 30))
    elif kind == 7:
        return b""
    else:
        return line.replace(b"\t", b" ", 1)
    return b"\t".join(f)


def parse_with_kernel(lines, parallel=None):
    """Run the kernel (serial, parallel or the launcher) on lines joined by '\\n'."""
    data = b"\n".join(lines)
    buf = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(0, np.uint8)
    lens = np.array([len(x) for x in lines], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lens + 1)[:-1]]).astype(np.int64)
    ends = starts + lens
    n = len(lines)
    out = (np.full(n, -1, np.int8), np.full((n, 13), -7, np.int64),
           np.full((26, n), 7, np.uint64), np.full(n, -1, np.int8), np.full(n, -9, np.int32))
    fn = {None: kp.parse_criteo_lines, False: kp._parse_serial, True: kp._parse_parallel}
    fn[parallel](*out, buf, starts, ends)
    return out[0], out[1], out[2].T, out[3], out[4]


def check_against_python(lines, out):
    labels, ints, cats, status, bad = out
    for i, line in enumerate(lines):
        st, field, label, iv, cv = parse_line_python(line)
        assert (status[i], bad[i]) == (st, field), (i, line)
        if st == kp.OK:
            assert labels[i] == label
            assert ints[i].tolist() == list(iv)
            assert cats[i].tolist() == list(cv)


@pytest.mark.parametrize("parallel", [False, True, None])
def test_kernel_matches_python_on_random_lines(parallel):
    rng = np.random.default_rng(1)
    lines = []
    for i in range(600):
        line = random_valid_line(rng)
        if rng.random() < 0.3:
            line = corrupt(rng, line)
        if rng.random() < 0.1:
            line += b"\r"
        lines.append(line)
    out = parse_with_kernel(lines, parallel)
    check_against_python(lines, out)
    assert (out[3] == kp.OK).sum() > 300 and (out[3] != kp.OK).sum() > 100
    assert set(out[3].tolist()) == set(range(7))


@pytest.mark.parametrize("field,text,code", [
    (0, b"2", kp.BAD_LABEL), (0, b"00", kp.BAD_LABEL), (0, b"", kp.BAD_LABEL),
    (3, b"-", kp.BAD_INT), (3, b"+1", kp.BAD_INT), (3, b"1e3", kp.BAD_INT),
    (3, b"9223372036854775807", kp.OK), (3, b"9223372036854775808", kp.INT_RANGE),
    (3, b"-9223372036854775808", kp.OK), (3, b"-9223372036854775809", kp.INT_RANGE),
    (3, b"99999999999999999999x", kp.BAD_INT),
    (20, b"ffffffffffffffff", kp.OK), (20, b"0" * 17, kp.HEX_TOO_LONG),
    (20, b"0x10", kp.BAD_HEX), (20, b"-1", kp.BAD_HEX), (39, b"G", kp.BAD_HEX),
])
def test_each_field_rule(field, text, code):
    fields = [b"1"] + [b"5"] * 13 + [b"ab"] * 26
    fields[field] = text
    line = b"\t".join(fields)
    labels, ints, cats, status, bad = parse_with_kernel([line])
    assert status[0] == code
    assert parse_line_python(line)[0] == code
    if code == kp.OK:
        if field == 3:
            assert ints[0, 2] == int(text)
        if field == 20:
            assert int(cats[0, 6]) == int(text, 16)
        if field == 0:
            assert labels[0] == 0
    else:
        assert bad[0] == field


def test_field_count_and_missing_values():
    line = b"0" + b"\t" * 39
    labels, ints, cats, status, bad = parse_with_kernel([line, b"\t" * 38, b"\t" * 40, b""])
    assert status.tolist() == [kp.OK] + [kp.FIELD_COUNT] * 3
    assert bad[1:].tolist() == [39, 41, 1]
    assert labels[0] == 0 and not ints[0].any() and not cats[0].any()


def test_describe_names_field_and_text():
    assert "field 4 (integer I3)" in describe(kp.BAD_INT, 3, b"1a")
    assert "'1a'" in describe(kp.BAD_INT, 3, b"1a")
    assert "41 tab-separated fields, expected 40" == describe(kp.FIELD_COUNT, 41, b"")
    assert "field 15 (categorical C1)" in describe(kp.HEX_TOO_LONG, 14, b"a" * 17)
    assert "field 1 (label)" in describe(kp.BAD_LABEL, 0, b"x")


def write_lines(path, lines, crlf=False, final_newline=True, gz=False):
    sep = b"\r\n" if crlf else b"\n"
    data = sep.join(lines) + (sep if final_newline and lines else b"")
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(data)
    return path


def expected_rows(lines):
    """(labels, ints, cats, [(line number, status)]) from the slow parser."""
    good, bad = [], []
    if lines and lines[-1].rstrip(b"\r") == b"":  # an empty last line is no row
        lines = lines[:-1]
    for i, line in enumerate(lines):
        st, field, label, iv, cv = parse_line_python(line)
        if st == kp.OK:
            good.append((label, iv, cv))
        else:
            bad.append((i + 1, st, field))
    return good, bad


def collect(path, block_bytes, max_examples=10_000):
    labels, ints, cats, bad, n_bad = [], [], [], [], 0
    for b in read_criteo_tsv(path, block_bytes=block_bytes, max_examples=max_examples):
        labels += b.labels.tolist()
        ints += b.ints.tolist()
        cats += b.cats.tolist()
        bad += b.malformed
        n_bad += b.n_malformed
    return labels, ints, cats, bad, n_bad


@pytest.mark.parametrize("block_bytes", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize("crlf,final_newline,gz", [
    (False, True, False), (True, False, False), (False, False, True), (True, True, True)])
def test_reader_blocks_match_python(tmp_path, block_bytes, crlf, final_newline, gz):
    rng = np.random.default_rng(block_bytes + 2 * crlf + 4 * gz)
    lines = [random_valid_line(rng) for _ in range(40)]
    for i in (0, 5, 17, 39):
        lines[i] = corrupt(rng, lines[i])
    path = write_lines(tmp_path / ("raw.gz" if gz else "raw.txt"), lines, crlf, final_newline, gz)
    labels, ints, cats, bad, n_bad = collect(path, block_bytes)
    good, exp_bad = expected_rows(lines)
    assert labels == [g[0] for g in good]
    assert ints == [list(g[1]) for g in good]
    assert cats == [list(g[2]) for g in good]
    assert n_bad == len(exp_bad) == len(bad)
    assert [m.line for m in bad] == [b[0] for b in exp_bad]
    assert all(m.path == str(path) for m in bad)


def test_empty_last_line_skipped_but_inner_empty_line_malformed(tmp_path):
    rng = np.random.default_rng(3)
    a, b = random_valid_line(rng), random_valid_line(rng)
    path = tmp_path / "raw.txt"
    path.write_bytes(a + b"\n\n" + b + b"\n\r\n")
    labels, ints, cats, bad, n_bad = collect(path, 16)
    assert len(labels) == 2 and n_bad == 1 and bad[0].line == 2
    assert "1 tab-separated fields" in bad[0].reason


def test_empty_file_and_only_newline(tmp_path):
    for data in (b"", b"\n"):
        path = tmp_path / "raw.txt"
        path.write_bytes(data)
        labels, ints, cats, bad, n_bad = collect(path, 4)
        assert labels == [] and n_bad == 0


def test_examples_are_limited_but_all_counted(tmp_path):
    lines = [b"bad line %d" % i for i in range(30)]
    path = write_lines(tmp_path / "raw.txt", lines)
    blocks = list(read_criteo_tsv(path, max_examples=10))
    assert sum(b.n_malformed for b in blocks) == 30
    assert [m.line for b in blocks for m in b.malformed] == list(range(1, 11))


def test_strict_raises_at_first_malformed_line(tmp_path):
    rng = np.random.default_rng(4)
    lines = [random_valid_line(rng) for _ in range(9)]
    lines[6] = lines[6].replace(b"\t", b"\tzz", 1)  # label field intact, I1 = 'zz...'
    path = write_lines(tmp_path / "day_0", lines)
    with pytest.raises(MalformedRowError) as e:
        for _ in read_criteo_tsv(path, block_bytes=50, strict=True):
            pass
    assert e.value.line == 7 and e.value.path == str(path)
    assert f"{path}:7:" in str(e.value) and "field 2 (integer I1)" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_line_blocks_progress_bytes(tmp_path):
    rng = np.random.default_rng(5)
    path = write_lines(tmp_path / "raw.gz", [random_valid_line(rng) for _ in range(200)], gz=True)
    done = [d for _, _, _, d, total in iter_line_blocks(path, block_bytes=2000)]
    assert done == sorted(done) and done[-1] == path.stat().st_size
    with pytest.raises(ValueError, match="block_bytes"):
        next(iter_line_blocks(path, block_bytes=0))

"""Faults of raw Criteo input files (issue 9): a truncated .gz, an empty label, an empty
or entirely malformed file. Each through the Python API and the `npdlrm` command."""
import gzip
import os
import zlib

import numpy as np
import pytest

from npdlrm.cli import main
from npdlrm.data.criteo_tsv import (
    EmptyRawFileError, MalformedRowError, TruncatedFileError, parse_line_python,
    read_criteo_tsv)
from npdlrm.data.h5data import open_processed
from npdlrm.data.preprocess import preprocess_criteo
from npdlrm.kernels import criteo_parse as kp


def make_lines(n, seed=0):
    """n valid raw lines (str), all with an explicit 0/1 label."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        f = [str(rng.integers(0, 2))]
        f += ["" if rng.random() < 0.1 else str(rng.integers(0, 500)) for _ in range(13)]
        f += ["" if rng.random() < 0.1 else format(int(rng.integers(0, 40)) * 7919, "08x")
              for _ in range(26)]
        lines.append("\t".join(f))
    return lines


def write_raw(path, lines, gz=False):
    data = ("\n".join(lines) + "\n").encode() if lines else b""
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)
    return str(path)


def truncate_gz(path, keep):
    """Cut the gzip file at `path` to its first `keep` bytes; (complete lines, cut line)."""
    data = open(path, "rb").read()[:keep]
    with open(path, "wb") as f:
        f.write(data)
    plain = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    return plain.count(b"\n"), plain.rfind(b"\n") + 1 < len(plain)


def run_cli(capsys, *argv):
    """(exit code, stderr) of `npdlrm preprocess ...` (any traceback propagates)."""
    code = main(["preprocess", *argv])
    return code, capsys.readouterr().err


def assert_one_line_error(err, *parts):
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("npdlrm preprocess: error: ")
    for part in parts:
        assert part in errors[0], (part, errors[0])


@pytest.fixture
def truncated(tmp_path):
    """A .gz Kaggle raw file cut in its middle: (path, lines, complete lines read)."""
    lines = make_lines(3000)
    raw = write_raw(tmp_path / "train.txt.gz", lines, gz=True)
    n_done, cut = truncate_gz(raw, os.path.getsize(raw) // 2)
    assert 0 < n_done < len(lines) and cut
    return raw, lines, n_done


# ---------------------------------------------------------------- 5. truncated .gz
@pytest.mark.parametrize("block_bytes", [1, 997, 1 << 20])
def test_truncated_gz_reader_keeps_complete_lines(truncated, block_bytes):
    raw, lines, n_done = truncated
    blocks = list(read_criteo_tsv(raw, block_bytes))
    labels = [int(x) for b in blocks for x in b.labels]
    assert labels == [int(line.split("\t")[0]) for line in lines[:n_done]]
    assert sum(b.n_malformed for b in blocks) == 0  # the cut line is no malformed row
    assert [bool(b.truncated) for b in blocks] == [False] * (len(blocks) - 1) + [True]
    assert f"{n_done:,} complete lines" in blocks[-1].truncated
    with pytest.raises(TruncatedFileError) as e:
        for _ in read_criteo_tsv(raw, block_bytes, strict=True):
            pass
    assert e.value.path == raw and e.value.lines == n_done
    assert isinstance(e.value, ValueError)


def test_truncated_gz_api_keeps_rows_with_a_warning(tmp_path, truncated):
    raw, lines, n_done = truncated
    out = tmp_path / "k.h5"
    rep = preprocess_criteo(raw, out)
    assert rep.rows == n_done and rep.malformed_rows == 0
    assert len(rep.warnings) == 1
    warning = rep.warnings[0]
    assert raw in warning and "truncated" in warning
    assert f"{n_done:,} complete lines" in warning and f"kept the {n_done:,}" in warning
    with open_processed(out) as data:
        assert data.num_rows == n_done
        _, _, y = data.read(0, n_done)
        assert y.tolist() == [float(line.split("\t")[0]) for line in lines[:n_done]]
        assert data.preprocessing["warnings"] == [warning]
    again = preprocess_criteo(raw, out)  # complete already: the warning stays reported
    assert again.skipped and again.warnings == [warning]


def test_truncated_gz_api_strict_refuses(tmp_path, truncated):
    raw, _, n_done = truncated
    for encoding, mir in (("dict", -1), ("hash", 100)):
        with pytest.raises(TruncatedFileError, match="truncated gzip file") as e:
            preprocess_criteo(raw, tmp_path / "k.h5", strict=True, encoding=encoding,
                              max_ind_range=mir)
        assert raw in str(e.value) and f"after {n_done:,} complete lines" in str(e.value)
        assert not (tmp_path / "k.h5").exists()


def test_truncated_gz_terabyte_day_warns(tmp_path):
    days = [make_lines(n, seed=n) for n in (40, 2000, 30)]
    paths = [write_raw(tmp_path / f"day_{i}", d, gz=i == 1) for i, d in enumerate(days)]
    n_done, _ = truncate_gz(paths[1], os.path.getsize(paths[1]) // 2)
    rep = preprocess_criteo(str(tmp_path / "day"), tmp_path / "t.h5", dataset="terabyte",
                            days=3)
    assert rep.day_rows == (40, n_done, 30)
    assert len(rep.warnings) == 1 and paths[1] in rep.warnings[0]


def test_truncated_gz_cli(tmp_path, truncated, capsys):
    raw, _, n_done = truncated
    code, err = run_cli(capsys, "--raw-data-file", raw, "--processed-data-file",
                        str(tmp_path / "s.h5"), "--strict")
    assert code == 2
    assert_one_line_error(err, raw, "truncated gzip file", f"{n_done:,} complete lines")
    assert not (tmp_path / "s.h5").exists()
    code, err = run_cli(capsys, "--raw-data-file", raw, "--processed-data-file",
                        str(tmp_path / "k.h5"))
    assert code == 0 and "Traceback" not in err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and raw in warnings[0] and "truncated" in warnings[0]
    assert f"{n_done:,} rows" in err


def test_truncated_gz_train_strict_refuses(tmp_path, truncated, capsys):
    raw, _, _ = truncated
    code = main(["train", "--data-generation", "dataset", "--raw-data-file", raw,
                 "--processed-data-file", str(tmp_path / "m.h5"), "--strict",
                 "--arch-mlp-bot", "13-4-2", "--num-batches", "1", "--log-file", "",
                 "--progress", "False"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "npdlrm train: error: " in err and raw in err and "truncated gzip file" in err


def test_truncated_before_the_first_line_refused(tmp_path, capsys):
    raw = write_raw(tmp_path / "train.txt.gz", make_lines(2000), gz=True)
    n_done, _ = truncate_gz(raw, 30)
    assert n_done == 0
    with pytest.raises(ValueError, match="no complete row") as e:
        preprocess_criteo(raw, tmp_path / "k.h5")
    assert raw in str(e.value)
    code, err = run_cli(capsys, "--raw-data-file", raw, "--processed-data-file",
                        str(tmp_path / "k.h5"))
    assert code == 2
    assert_one_line_error(err, raw, "truncated gzip file", "no complete row")


# ---------------------------------------------------------------- 7. empty label
def with_empty_label(n=10, at=2):
    lines = make_lines(n, seed=3)
    lines[at] = "\t".join([""] + lines[at].split("\t")[1:])
    return lines


def test_empty_label_is_malformed_in_both_parsers():
    line = "\t".join([""] + make_lines(1)[0].split("\t")[1:]).encode()
    assert parse_line_python(line)[:2] == (kp.BAD_LABEL, 0)
    buf = np.frombuffer(line, dtype=np.uint8)
    out = (np.zeros(1, np.int8), np.zeros((1, 13), np.int64), np.zeros((26, 1), np.uint64),
           np.full(1, -1, np.int8), np.full(1, -9, np.int32))
    kp.parse_criteo_lines(*out, buf, np.array([0], np.int64), np.array([len(line)], np.int64))
    assert out[3][0] == kp.BAD_LABEL and out[4][0] == 0
    kp._parse_parallel(*out, buf, np.array([0], np.int64), np.array([len(line)], np.int64))
    assert out[3][0] == kp.BAD_LABEL


def test_empty_label_api(tmp_path):
    raw = write_raw(tmp_path / "train.txt", with_empty_label())
    rep = preprocess_criteo(raw, tmp_path / "k.h5")
    assert rep.rows == 9 and rep.malformed_rows == 1
    assert rep.malformed_examples == [f"{raw}:3: field 1 (label) is '', expected 0 or 1"]
    with pytest.raises(MalformedRowError) as e:
        preprocess_criteo(raw, tmp_path / "s.h5", strict=True)
    assert e.value.line == 3 and e.value.path == raw and "label" in e.value.reason


def test_empty_label_cli(tmp_path, capsys):
    raw = write_raw(tmp_path / "train.txt", with_empty_label())
    code, err = run_cli(capsys, "--raw-data-file", raw, "--processed-data-file",
                        str(tmp_path / "s.h5"), "--strict")
    assert code == 2
    assert_one_line_error(err, f"{raw}:3: malformed row: field 1 (label)")
    code, err = run_cli(capsys, "--raw-data-file", raw, "--processed-data-file",
                        str(tmp_path / "k.h5"))
    assert code == 0 and "malformed rows skipped: 1" in err and f"{raw}:3:" in err


# ---------------------------------------------------------------- 8. empty, all malformed
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("content", [b"", b"\n"])
def test_empty_file_refused(tmp_path, capsys, gz, content):
    raw = str(tmp_path / ("train.txt.gz" if gz else "train.txt"))
    with (gzip.open if gz else open)(raw, "wb") as f:
        f.write(content)
    for encoding, mir in (("dict", -1), ("hash", 100)):
        with pytest.raises(EmptyRawFileError, match="holds no rows") as e:
            preprocess_criteo(raw, tmp_path / "k.h5", encoding=encoding, max_ind_range=mir)
        assert raw in str(e.value) and isinstance(e.value, ValueError)
        assert not (tmp_path / "k.h5").exists() and not (tmp_path / "k.dict.h5").exists()
    code, err = run_cli(capsys, "--raw-data-file", raw, "--processed-data-file",
                        str(tmp_path / "k.h5"))
    assert code == 2
    assert_one_line_error(err, raw, "holds no rows")


def test_all_malformed_file_refused(tmp_path, capsys):
    lines = ["\t".join([""] + line.split("\t")[1:]) for line in make_lines(4)] + ["junk"]
    raw = write_raw(tmp_path / "train.txt", lines)
    with pytest.raises(EmptyRawFileError) as e:
        preprocess_criteo(raw, tmp_path / "k.h5")
    text = str(e.value)
    assert raw in text and "all 5 rows are malformed" in text
    assert f"{raw}:1: field 1 (label)" in text
    assert not (tmp_path / "k.h5").exists()
    code, err = run_cli(capsys, "--raw-data-file", raw, "--processed-data-file",
                        str(tmp_path / "k.h5"))
    assert code == 2
    assert_one_line_error(err, raw, "all 5 rows are malformed", f"{raw}:1: field 1 (label)")


def test_empty_terabyte_day_refused(tmp_path, capsys):
    write_raw(tmp_path / "day_0", make_lines(20))
    empty = write_raw(tmp_path / "day_1", [])
    with pytest.raises(EmptyRawFileError, match="holds no rows") as e:
        preprocess_criteo(str(tmp_path / "day"), tmp_path / "t.h5", dataset="terabyte", days=2)
    assert e.value.path == empty
    code, err = run_cli(capsys, "--raw-data-file", str(tmp_path / "day"), "--data-set",
                        "terabyte", "--days", "2", "--processed-data-file",
                        str(tmp_path / "t.h5"))
    assert code == 2
    assert_one_line_error(err, empty, "holds no rows")


def test_corrupt_gzip_data_is_one_line(tmp_path, capsys):
    """Damaged (not cut short) compressed data: one line naming the file, exit 2."""
    import gzip as gz
    rows = "\n".join("\t".join(["1"] + [str(i) for i in range(13)] + ["a1b2c3d4"] * 26)
                     for _ in range(3000)) + "\n"
    packed = bytearray(gz.compress(rows.encode(), compresslevel=1))
    for i in range(200, 260):  # inside the deflate stream, past the header
        packed[i] ^= 0x5A
    raw = tmp_path / "bad.txt.gz"
    raw.write_bytes(bytes(packed))
    from npdlrm.cli import main
    assert main(["preprocess", "--raw-data-file", str(raw), "--processed-data-file",
                 str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt.gz: corrupt gzip data near compressed byte" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--data-generation", "dataset", "--raw-data-file", str(raw),
                 "--processed-data-file", str(tmp_path / "t.h5"), "--log-file", "",
                 "--progress", "False"]) == 2
    assert "corrupt gzip data" in capsys.readouterr().err

"""preprocess_criteo end to end against a naive per-line version of the reference's rules."""
import argparse
import collections
import gzip
import io
import json
import os

import h5py
import numpy as np
import pytest

from npdlrm.cli import preprocess as cli
from npdlrm.data import h5data, splits
from npdlrm.data.criteo_tsv import MalformedRowError
from npdlrm.data.h5data import open_processed
from npdlrm.data.preprocess import preprocess_criteo

from test_criteo_sample import SAMPLE  # noqa: E402 - ../shared beside the checkout


# ---------------------------------------------------------------- data and naive rules
def make_lines(rng, n, vocab=30):
    """n valid raw lines (str) with missing fields, negatives and Zipf-like keys."""
    lines = []
    for _ in range(n):
        f = [str(rng.integers(0, 2))]
        for _ in range(13):
            r = rng.random()
            f.append("" if r < 0.2 else str(rng.integers(-3, 2000)))
        for j in range(26):
            r = rng.random()
            key = int(min(rng.zipf(1.5), vocab)) * 2654435761 % 2**32 + j
            f.append("" if r < 0.1 else format(key, "08x"))
        lines.append("\t".join(f))
    return lines


def write_raw(path, lines, gz=False):
    data = ("\n".join(lines) + "\n").encode()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)
    return str(path)


def naive(days_lines, encoding="dict", max_ind_range=-1, threshold=0):
    """Reference rules line by line: dense, ids (list of 26 lists), labels, table sizes."""
    labels, dense, raw_cats = [], [], []
    for lines in days_lines:
        for line in lines:
            fields = [x if x != "" else "0" for x in line.split("\t")]
            labels.append(np.float32(int(fields[0])))
            dense.append([np.log(np.float32(max(int(x), 0)) + np.float32(1))
                          for x in fields[1:14]])
            cats = [int(x, 16) for x in fields[14:]]
            if max_ind_range > 0:
                cats = [c % max_ind_range for c in cats]
            raw_cats.append(cats)
    ids, sizes = [], []
    for j in range(26):
        col = [c[j] for c in raw_cats]
        if encoding == "hash":
            ids.append(col)
            sizes.append(max_ind_range)
            continue
        counts = collections.Counter(col)
        mapping = {}
        for key in col:  # first appearance order
            if key not in mapping and (threshold <= 1 or counts[key] >= threshold):
                mapping[key] = len(mapping)
        n_freq = len(mapping)
        ids.append([mapping.get(key, n_freq) for key in col])
        sizes.append(n_freq + (1 if len(counts) > n_freq else 0))
    return (np.array(dense, np.float32).reshape(-1, 13), ids,
            np.array(labels, np.float32), tuple(sizes))


def check_data(path, expected, day_rows):
    dense, ids, labels, sizes = expected
    with open_processed(path) as data:
        assert data.table_sizes == sizes
        assert data.num_rows == len(labels) and data.day_rows == tuple(day_rows)
        assert data.num_dense == 13
        d, s, y = data.read(0, data.num_rows)
        assert d.dtype == np.float32 and y.dtype == np.float32
        np.testing.assert_array_equal(d, dense)
        np.testing.assert_array_equal(y, labels)
        assert len(s) == 26
        for j in range(26):
            assert s[j].dtype == np.int64
            np.testing.assert_array_equal(s[j], ids[j])
        for split in ("train", "test", "val", "all"):
            assert data.split_ranges(split) == splits.split_ranges(day_rows, split)


def file_contents(path):
    """Every dataset and attribute of an HDF5 file, for equality checks."""
    out = {}
    with h5py.File(path, "r") as f:
        out.update({f"@{k}": np.asarray(v).tolist() for k, v in f.attrs.items()})
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()].tolist())
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def listing(folder):
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------- kaggle
@pytest.mark.parametrize("encoding,mir,threshold", [
    ("dict", -1, 0), ("dict", 7, 0), ("dict", -1, 3), ("dict", 11, 2), ("hash", 13, 0)])
def test_kaggle_matches_naive(tmp_path, encoding, mir, threshold):
    rng = np.random.default_rng(0)
    lines = make_lines(rng, 150)
    raw = write_raw(tmp_path / "train.txt", lines)
    out = tmp_path / "kaggle.h5"
    rep = preprocess_criteo(raw, out, encoding=encoding, max_ind_range=mir,
                            frequency_threshold=threshold, chunk_rows=16, block_bytes=3000)
    expected = naive([lines], encoding, mir, threshold)
    day_rows = splits.equal_days(150, 7)
    check_data(out, expected, day_rows)
    assert rep.rows == 150 and rep.malformed_rows == 0 and rep.day_rows == day_rows
    assert rep.table_sizes == expected[3] and not rep.skipped and not rep.resumed
    if threshold > 1:  # the threshold merged some keys
        assert sum(rep.table_sizes) < sum(naive([lines], encoding, mir, 0)[3])
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "npdlrm-criteo" and f.attrs["format_version"] == 1
        assert json.loads(f.attrs["parts"]) == []
        pre = json.loads(f.attrs["preprocessing"])
        assert pre["encoding"] == encoding and pre["sources"] == ["train.txt"]
        assert f["dense"].chunks == (16, 13) and f["sparse/0"].dtype == np.int32
    assert (tmp_path / "kaggle.dict.h5").exists() == (encoding == "dict")
    assert not [n for n in listing(tmp_path) if n.endswith(".partial")]


def test_threshold_merges_rare_keys(tmp_path):
    base = ["1"] + ["1"] * 13
    lines = ["\t".join(base + [k] * 26) for k in ["a", "b", "a", "c", "b", "a", "d"]]
    raw = write_raw(tmp_path / "t.txt", lines)
    rep = preprocess_criteo(raw, tmp_path / "o.h5", frequency_threshold=2, days=2)
    assert rep.table_sizes == (3,) * 26  # a -> 0, b -> 1, c and d -> 2
    with open_processed(tmp_path / "o.h5") as data:
        assert data.read(0, 7)[1][5].tolist() == [0, 1, 0, 2, 1, 0, 2]
    rep = preprocess_criteo(raw, tmp_path / "o2.h5", frequency_threshold=1, days=2)
    assert rep.table_sizes == (4,) * 26


def test_malformed_rows_skipped_and_reported(tmp_path):
    rng = np.random.default_rng(1)
    lines = make_lines(rng, 40)
    bad = {3: "1\t2", 10: lines[10].replace("\t", "\tx", 1), 25: "2" + lines[25][1:]}
    raw_lines = [bad.get(i, line) for i, line in enumerate(lines)]
    raw = write_raw(tmp_path / "train.txt", raw_lines)
    rep = preprocess_criteo(raw, tmp_path / "k.h5", block_bytes=500)
    good = [line for i, line in enumerate(lines) if i not in bad]
    check_data(tmp_path / "k.h5", naive([good]), splits.equal_days(37, 7))
    assert rep.malformed_rows == 3 and rep.rows == 37
    assert [e.split(": ")[0] for e in rep.malformed_examples] == [
        f"{raw}:4", f"{raw}:11", f"{raw}:26"]
    assert "2 tab-separated fields" in rep.malformed_examples[0]
    assert "field 2 (integer I1)" in rep.malformed_examples[1]
    assert "field 1 (label)" in rep.malformed_examples[2]
    with open_processed(tmp_path / "k.h5") as data:
        assert data.preprocessing["malformed_rows"] == 3


@pytest.mark.parametrize("encoding", ["dict", "hash"])
def test_strict_raises_and_leaves_nothing_complete(tmp_path, encoding):
    rng = np.random.default_rng(2)
    lines = make_lines(rng, 30)
    lines[20] = lines[20] + "\textra"
    raw = write_raw(tmp_path / "train.txt", lines)
    out = tmp_path / "k.h5"
    with pytest.raises(MalformedRowError, match=r"train\.txt:21: .*41 tab-separated"):
        preprocess_criteo(raw, out, encoding=encoding, max_ind_range=50, strict=True,
                          block_bytes=300, chunk_rows=4)
    assert not out.exists() and not (tmp_path / "k.dict.h5").exists()
    assert listing(tmp_path) == ["train.txt"]


# ---------------------------------------------------------------- terabyte
def make_days(tmp_path, n_days=3, rows=(50, 1, 37), gz_day=1):
    rng = np.random.default_rng(3)
    days = [make_lines(rng, r) for r in rows[:n_days]]
    for i, lines in enumerate(days):
        name = f"day_{i}.gz" if i == gz_day else f"day_{i}"
        write_raw(tmp_path / name, lines, gz=(i == gz_day))
    return days


@pytest.mark.parametrize("encoding,mir,threshold", [("dict", -1, 0), ("dict", 9, 2),
                                                     ("hash", 21, 0)])
def test_terabyte_days_match_naive(tmp_path, encoding, mir, threshold):
    days = make_days(tmp_path)
    out = tmp_path / "out" / "tb.h5"
    rep = preprocess_criteo(str(tmp_path / "day"), out, dataset="terabyte", days=3,
                            encoding=encoding, max_ind_range=mir, frequency_threshold=threshold,
                            chunk_rows=8, block_bytes=1000)
    expected = naive(days, encoding, mir, threshold)
    check_data(out, expected, (50, 1, 37))
    assert rep.day_rows == (50, 1, 37) and rep.rows == 88
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["parts"]) == [f"tb_day_{i}.h5" for i in range(3)]
        assert "dense" not in f and f.attrs["dataset"] == "terabyte"
        assert json.loads(f.attrs["preprocessing"])["sources"] == ["day_0", "day_1.gz", "day_2"]
    for i in range(3):
        with h5py.File(tmp_path / "out" / f"tb_day_{i}.h5", "r") as f:
            assert f.attrs["day"] == i and f["labels"].shape == ((50, 1, 37)[i],)
    with open_processed(out) as data:  # reads spanning part boundaries
        d, s, y = data.read(45, 60)
        np.testing.assert_array_equal(d, expected[0][45:60])
        np.testing.assert_array_equal(s[4], expected[1][4][45:60])
        np.testing.assert_array_equal(y, expected[2][45:60])
        assert data.split_ranges("test") == [(51, 70)]


def test_terabyte_file_list_and_missing_day(tmp_path):
    days = make_days(tmp_path, rows=(5, 6, 7), gz_day=-1)
    files = [str(tmp_path / f"day_{i}") for i in range(3)]
    rep = preprocess_criteo(files[:2], tmp_path / "two.h5", dataset="terabyte")
    check_data(tmp_path / "two.h5", naive(days[:2]), (5, 6))
    assert rep.day_rows == (5, 6)
    with pytest.raises(FileNotFoundError, match="day_3"):
        preprocess_criteo(str(tmp_path / "day"), tmp_path / "x.h5", dataset="terabyte", days=4)


# ---------------------------------------------------------------- atomicity and resume
class Boom(RuntimeError):
    pass


def interrupt_writing(monkeypatch, target):
    """Make the row writer raise at its 2nd flush into the file named `target`."""
    real = h5data.RowWriter._flush
    calls = []

    def flaky(self, n):
        if os.path.basename(self._dense.file.filename) == target:
            calls.append(n)
            if len(calls) == 2:
                raise Boom("interrupted")
        return real(self, n)
    monkeypatch.setattr(h5data.RowWriter, "_flush", flaky)


@pytest.mark.parametrize("dataset", ["kaggle", "terabyte"])
def test_interrupted_run_resumes_to_identical_output(tmp_path, monkeypatch, dataset):
    days = make_days(tmp_path, rows=(60, 40, 30), gz_day=-1)
    raw = str(tmp_path / "day") if dataset == "terabyte" else str(tmp_path / "day_0")
    kw = dict(dataset=dataset, days=3, chunk_rows=8, block_bytes=2000)
    ref_dir = tmp_path / "ref"
    preprocess_criteo(raw, ref_dir / "o.h5", **kw)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".o.h5.partial").write_bytes(b"stale partial file")
    interrupt_writing(monkeypatch, ".o_day_1.h5.partial" if dataset == "terabyte"
                      else ".o.h5.partial")
    with pytest.raises(Boom):
        preprocess_criteo(raw, run_dir / "o.h5", **kw)
    monkeypatch.undo()
    assert not (run_dir / "o.h5").exists()
    left = listing(run_dir)
    # Kaggle (no threshold) builds its dictionary in the one read that writes the rows:
    # an interrupted run leaves none, the rerun redoes that one read
    assert ("o.dict.h5" in left) == (dataset == "terabyte")
    if dataset == "terabyte":
        assert "o_day_0.h5" in left and "o_day_1.h5" not in left
    rep = preprocess_criteo(raw, run_dir / "o.h5", **kw)
    assert rep.dictionary_reused == rep.resumed == (dataset == "terabyte")
    assert not rep.skipped
    assert rep.parts_reused == (1 if dataset == "terabyte" else 0)
    assert listing(run_dir) == listing(ref_dir)
    for name in listing(ref_dir):
        assert file_contents(run_dir / name) == file_contents(ref_dir / name), name
    check_data(run_dir / "o.h5", naive(days if dataset == "terabyte" else days[:1]),
               rep.day_rows)


def test_rerun_same_options_does_nothing_force_redoes(tmp_path):
    days = make_days(tmp_path, rows=(20, 10, 5), gz_day=2)
    raw = str(tmp_path / "day")
    out = tmp_path / "o.h5"
    first = preprocess_criteo(raw, out, dataset="terabyte", days=3)
    stamps = {n: os.stat(tmp_path / n).st_mtime_ns for n in listing(tmp_path)}
    again = preprocess_criteo(raw, out, dataset="terabyte", days=3)
    assert again.skipped and not again.resumed
    assert (again.rows, again.table_sizes, again.day_rows) == (
        first.rows, first.table_sizes, first.day_rows)
    assert {n: os.stat(tmp_path / n).st_mtime_ns for n in listing(tmp_path)} == stamps
    forced = preprocess_criteo(raw, out, dataset="terabyte", days=3, force=True)
    assert not forced.skipped and not forced.resumed
    other = preprocess_criteo(raw, out, dataset="terabyte", days=3, frequency_threshold=2)
    assert not other.skipped and not other.dictionary_reused
    check_data(out, naive(days, threshold=2), (20, 10, 5))


def test_bad_arguments(tmp_path):
    raw = write_raw(tmp_path / "t.txt", make_lines(np.random.default_rng(4), 3))
    with pytest.raises(ValueError, match="max_ind_range > 0"):
        preprocess_criteo(raw, tmp_path / "o.h5", encoding="hash")
    with pytest.raises(ValueError, match="encoding must be"):
        preprocess_criteo(raw, tmp_path / "o.h5", encoding="bloom")
    with pytest.raises(ValueError, match="dataset must be"):
        preprocess_criteo(raw, tmp_path / "o.h5", dataset="avazu")
    with pytest.raises(ValueError, match="chunk_rows"):
        preprocess_criteo(raw, tmp_path / "o.h5", chunk_rows=0)
    with pytest.raises(ValueError, match="is one of the raw files"):
        preprocess_criteo(raw, raw)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        preprocess_criteo(tmp_path / "nope.txt", tmp_path / "o.h5")


def test_empty_input_and_int64_tables(tmp_path):
    raw = tmp_path / "empty.txt"
    raw.write_bytes(b"")
    with pytest.raises(ValueError, match="holds no rows"):  # issue 9: refused, not 0 rows
        preprocess_criteo(raw, tmp_path / "e.h5")
    assert not (tmp_path / "e.h5").exists()
    lines = make_lines(np.random.default_rng(5), 4)
    raw = write_raw(tmp_path / "t.txt", lines)
    rep = preprocess_criteo(raw, tmp_path / "big.h5", encoding="hash", max_ind_range=2**31)
    with h5py.File(tmp_path / "big.h5", "r") as f:
        assert f["sparse/0"].dtype == np.int64
    check_data(tmp_path / "big.h5", naive([lines], "hash", 2**31), splits.equal_days(4, 7))


def test_progress_callback(tmp_path):
    make_days(tmp_path, rows=(30, 20, 10), gz_day=0)
    calls = []
    preprocess_criteo(str(tmp_path / "day"), tmp_path / "o.h5", dataset="terabyte", days=3,
                      block_bytes=700, progress=lambda *a: calls.append(a))
    total = sum(os.path.getsize(tmp_path / n) for n in ("day_0.gz", "day_1", "day_2"))
    for stage in ("dictionary", "write"):
        got = [c for c in calls if c[0] == stage]
        assert len(got) > 3 and all(c[3] == total for c in got)
        assert [c[1] for c in got] == sorted(c[1] for c in got) and got[-1][1] == 60
        assert [c[2] for c in got] == sorted(c[2] for c in got) and got[-1][2] == total


# ---------------------------------------------------------------- the reader's checks
def test_open_processed_refuses_other_files(tmp_path):
    text = tmp_path / "x.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not an npdlrm processed Criteo file"):
        open_processed(text)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(ValueError, match="is not an npdlrm processed Criteo file"):
        open_processed(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        open_processed(tmp_path / "missing.h5")
    days = make_days(tmp_path, rows=(5, 6, 7), gz_day=-1)
    out = tmp_path / "tb.h5"
    preprocess_criteo(str(tmp_path / "day"), out, dataset="terabyte", days=3)
    with open_processed(out) as data:
        for start, stop in ((-1, 3), (3, 2), (0, 19)):
            with pytest.raises(ValueError, match="out of range"):
                data.read(start, stop)
        assert data.read(4, 6)[2].tolist() == naive(days)[2][4:6].tolist()
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(ValueError, match="format version 2, this npdlrm reads 1"):
        open_processed(out)
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 1
    os.remove(tmp_path / "tb_day_1.h5")
    with pytest.raises(ValueError, match="tb_day_1.h5"):
        open_processed(out)


# ---------------------------------------------------------------- CLI
def cli_args(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_runs_and_reports(tmp_path):
    lines = make_lines(np.random.default_rng(6), 25) + ["broken"]
    raw = write_raw(tmp_path / "train.txt", lines)
    out = str(tmp_path / "k.h5")
    err = io.StringIO()
    code = cli.run(cli_args("--raw-data-file", raw, "--processed-data-file", out,
                            "--max-ind-range", "10", "--chunk-rows", "5"), err=err)
    assert code == 0
    text = err.getvalue()
    assert "25 rows" in text and "malformed rows skipped: 1" in text and f"{raw}:26" in text
    check_data(out, naive([lines[:25]], max_ind_range=10), splits.equal_days(25, 7))
    err = io.StringIO()
    assert cli.run(cli_args("--raw-data-file", raw, "--processed-data-file", out,
                            "--max-ind-range", "10", "--chunk-rows", "5"), err=err) == 0
    assert "nothing to do" in err.getvalue()


def test_cli_memory_limit_and_hash_table_sizes(tmp_path):
    assert [cli.parse_bytes(t) for t in ("8G", "512m", "1.5GiB", "300K", "1000", "2MB")] == \
        [8 << 30, 512 << 20, 3 << 29, 300 << 10, 1000, 2 << 20]
    for bad in ("8X", "", "-1G", "G"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_bytes(bad)
    lines = make_lines(np.random.default_rng(8), 300, vocab=200)
    days = [write_raw(tmp_path / f"day_{i}", lines[i * 100:(i + 1) * 100]) for i in range(3)]
    base = ["--raw-data-file", str(tmp_path / "day"), "--data-set", "terabyte", "--days", "3"]
    err = io.StringIO()
    assert cli.run(cli_args(*base, "--processed-data-file", str(tmp_path / "a.h5"),
                            "--memory-limit", "20K"), err=err) == 0, err.getvalue()
    check_data(tmp_path / "a.h5", naive([lines[:100], lines[100:200], lines[200:]]),
               (100, 100, 100))
    assert days and not [n for n in listing(tmp_path) if n.startswith(".")]
    err = io.StringIO()
    assert cli.run(cli_args(*base, "--processed-data-file", str(tmp_path / "h.h5"),
                            "--encoding", "hash", "--max-ind-range", "77"), err=err) == 0
    assert "every table has max-ind-range = 77 rows" in err.getvalue()


@pytest.mark.parametrize("argv,message", [
    (["--encoding", "hash"], "max_ind_range > 0"),
    (["--workers", "0"], "workers must be >= 1"),
    (["--strict"], "train.txt:2:"),
    (["--raw-data-file", "/nonexistent/raw.txt"], "/nonexistent/raw.txt"),
])
def test_cli_bad_input_exit_code_2(tmp_path, argv, message):
    raw = write_raw(tmp_path / "train.txt", make_lines(np.random.default_rng(7), 1) + ["x"])
    err = io.StringIO()
    args = cli_args("--raw-data-file", raw, "--processed-data-file", str(tmp_path / "o.h5"),
                    *argv)
    assert cli.run(args, err=err) == 2
    assert message in err.getvalue() and "Traceback" not in err.getvalue()
    assert not (tmp_path / "o.h5").exists()


# ---------------------------------------------------------------- the real sample
def test_real_criteo_sample(tmp_path):
    if not os.path.exists(SAMPLE):
        pytest.skip(f"the Criteo sample {SAMPLE} is absent")
    with gzip.open(SAMPLE, "rt") as f:
        lines = f.read().splitlines()
    out = tmp_path / "sample.h5"
    rep = preprocess_criteo(SAMPLE, out, block_bytes=1 << 16)
    assert rep.malformed_rows == 0 and rep.rows == 10_000 == len(lines)
    expected = naive([lines])
    assert len(rep.table_sizes) == 26 and rep.table_sizes == expected[3]
    check_data(out, expected, splits.equal_days(10_000, 7))
    assert 2182 == int(expected[2].sum())


def test_changed_day_file_rebuilds_dictionary_and_stale_parts(tmp_path):
    days = make_days(tmp_path, rows=(40, 30, 20), gz_day=-1)
    kw = dict(dataset="terabyte", days=3, frequency_threshold=2)
    preprocess_criteo(str(tmp_path / "day"), tmp_path / "o.h5", **kw)
    days[2] = days[2] + days[0][:15]  # day 0's keys get more frequent: its ids change
    write_raw(tmp_path / "day_2", days[2])
    rep = preprocess_criteo(str(tmp_path / "day"), tmp_path / "o.h5", **kw)
    assert not rep.skipped and not rep.dictionary_reused
    check_data(tmp_path / "o.h5", naive(days, threshold=2), (40, 30, 35))


def test_part_with_same_table_sizes_but_new_ids_is_redone(tmp_path):
    def line(key):
        return "\t".join(["1"] + ["2"] * 13 + [key] * 26)
    days = [[line("a"), line("b")], [line("b")], [line("c"), line("c")]]
    for i, lines in enumerate(days):
        write_raw(tmp_path / f"day_{i}", lines)
    kw = dict(dataset="terabyte", days=3, frequency_threshold=2)
    first = preprocess_criteo(str(tmp_path / "day"), tmp_path / "o.h5", **kw)
    days[2] = [line("a"), line("c"), line("c")]  # a turns frequent: ids of day 0 change
    write_raw(tmp_path / "day_2", days[2])
    rep = preprocess_criteo(str(tmp_path / "day"), tmp_path / "o.h5", **kw)
    assert first.table_sizes == rep.table_sizes == (3,) * 26
    assert rep.parts_reused == 0  # a new dictionary: every part is redone
    check_data(tmp_path / "o.h5", naive(days, threshold=2), (2, 1, 3))


def test_processed_reader_reads_only_the_tables_asked(tmp_path):
    rng = np.random.default_rng(1)
    raw = write_raw(tmp_path / "train.txt", make_lines(rng, 60))
    out = tmp_path / "k.h5"
    preprocess_criteo(raw, out, chunk_rows=16)
    with open_processed(out) as data:
        dense, sparse, labels = data.read(5, 40)
        d2, some, l2 = data.read(5, 40, tables=[0, 25])
        _, none, _ = data.read(7, 7, tables=[2])
    assert np.array_equal(dense, d2) and np.array_equal(labels, l2)
    assert np.array_equal(some[0], sparse[0]) and np.array_equal(some[25], sparse[25])
    assert all(some[k] is None for k in range(1, 25))
    assert none[2].shape == (0,) and none[0] is None

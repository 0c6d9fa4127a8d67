"""Negative down-sampling of the training days (npdlrm.data.subsample, the preprocessing's
--data-sub-sample-rate)."""
import gzip
import pathlib

import numpy as np
import pytest

from npdlrm.cli import main
from npdlrm.data.h5data import open_processed
from npdlrm.data.preprocess import dense_from_ints, preprocess_criteo
from npdlrm.data.subsample import (day_rows_after, options_with, sample_sources,
                                   thin_lines)

FIX = pathlib.Path(__file__).parent / "fixtures/reference"
SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared/data/criteo_sample/train_10k.txt.gz"
needs_sample = pytest.mark.skipif(not SAMPLE.exists(),
                                  reason=f"the Criteo sample {SAMPLE} is absent")


def _row(label, value):
    return f"{label}\t{value}" + "\t1" * 12 + "\t0a" * 26 + "\n"


def test_thin_lines_drops_negatives_whose_draw_is_below_the_rate():
    lines = [_row(1, 0).encode(), _row(0, 1).encode(), _row("", 2).encode(),
             _row(0, 3).encode(), _row(1, 4).encode()]
    u = np.array([0.1, 0.1, 0.2, 0.9, 0.0])
    assert thin_lines(lines, u, 0.5) == [lines[0], lines[3], lines[4]]  # "" reads as 0
    assert thin_lines(lines, u, 0.0) == lines
    assert thin_lines(lines, u, 1.0) == [lines[0], lines[4]]


def _day_files(tmp_path, days=3, rows=400, seed=0):
    rng = np.random.default_rng(seed)
    files = []
    for d in range(days):
        p = tmp_path / f"day_{d}"
        p.write_text("".join(_row(int(rng.random() < 0.3), i) for i in range(rows)))
        files.append(str(p))
    return files


def test_terabyte_thins_every_day_but_the_last_with_one_stream_of_draws(tmp_path):
    files = _day_files(tmp_path)
    out, last = sample_sources(files, "terabyte", 3, 0.75, 9, str(tmp_path / "work"))
    assert last is None and out[-1] == files[-1] and len(out) == 3
    u = np.random.RandomState(9).uniform(0.0, 1.0, 800)  # one draw per line, day after day
    for d in range(2):
        lines = pathlib.Path(files[d]).read_bytes().splitlines(keepends=True)
        assert pathlib.Path(out[d]).read_bytes() == \
            b"".join(thin_lines(lines, u[400 * d:400 * (d + 1)], 0.75))
    again, _ = sample_sources(files, "terabyte", 3, 0.75, 9, str(tmp_path / "work2"))
    assert pathlib.Path(again[0]).read_bytes() == pathlib.Path(out[0]).read_bytes()
    assert sample_sources(files, "terabyte", 3, 0.0, 9, "unused") == (files, None)


def test_kaggle_keeps_its_last_day_and_counts_its_rows(tmp_path):
    src = tmp_path / "train.txt"
    src.write_text("".join(_row(0, i) for i in range(69)) + "bad line\n")  # 70 lines
    out, last = sample_sources([str(src)], "kaggle", 7, 1.0, 0, str(tmp_path / "w"))
    kept = pathlib.Path(out[0]).read_text().splitlines()
    assert len(kept) == 10 and kept[-1] == "bad line"  # the last day (10 lines) untouched
    assert last == 9  # its valid rows
    assert day_rows_after(9, 7, last) == (0, 0, 0, 0, 0, 0, 9)
    assert day_rows_after(70, 7, None) == (10,) * 7


def test_options_change_only_when_thinning():
    assert options_with({"a": 1}, 0.0, 5) == {"a": 1}
    assert options_with({"a": 1}, 0.5, 5) == {"a": 1, "sub_sample_rate": 0.5,
                                              "sub_sample_seed": 5}
    with pytest.raises(ValueError, match="sub_sample_rate"):
        sample_sources(["x"], "kaggle", 7, 1.5, 0, "w")


@needs_sample
def test_kaggle_training_rows_equal_the_references(tmp_path):
    # the reference's data_utils.getCriteoAdData (seed 123, rate 0.5) kept these rows of
    # days 0..5 of the first 1,400 sample rows (fixture); it also thins day 6, we do not
    with gzip.open(SAMPLE, "rb") as f:
        (tmp_path / "train.txt").write_bytes(b"".join(f.readlines()[:1400]))
    rep = preprocess_criteo(str(tmp_path / "train.txt"), str(tmp_path / "p.h5"),
                            sub_sample_rate=0.5, sub_sample_seed=123)
    ref = np.load(FIX / "kaggle_subsampled.npz")
    n = int(ref["total_per_file"][:-1].sum())
    assert rep.day_rows[-1] == 200 and sum(rep.day_rows[:-1]) == n == 713
    assert not (tmp_path / ".p.subsampled").exists()  # the thinned copy is removed
    with open_processed(tmp_path / "p.h5") as data:
        dense, _, labels = data.read(0, n)
        assert data.preprocessing["sub_sample_rate"] == 0.5
        assert data.split_ranges("test") == [(713, 813)]
        _, _, last = data.read(713, 913)
    np.testing.assert_array_equal(labels, ref["y"])
    np.testing.assert_array_equal(dense, dense_from_ints(ref["X_int"].astype(np.int64)))
    assert last.mean() == pytest.approx(35 / 200)  # the last day keeps its click rate
    # another rate is another file: not reused
    again = preprocess_criteo(str(tmp_path / "train.txt"), str(tmp_path / "p.h5"),
                              sub_sample_rate=0.25, sub_sample_seed=123)
    assert not again.skipped and sum(again.day_rows[:-1]) > n
    same = preprocess_criteo(str(tmp_path / "train.txt"), str(tmp_path / "p.h5"),
                             sub_sample_rate=0.25, sub_sample_seed=123)
    assert same.skipped


@needs_sample
def test_train_refuses_a_file_made_with_another_rate(tmp_path):
    with gzip.open(SAMPLE, "rb") as f:
        (tmp_path / "train.txt").write_bytes(b"".join(f.readlines()[:700]))
    base = ["train", "--data-generation", "dataset", "--raw-data-file",
            str(tmp_path / "train.txt"), "--processed-data-file", str(tmp_path / "p.h5"),
            "--arch-mlp-bot", "13-2", "--mini-batch-size", "100", "--log-file", "",
            "--threads", "1"]
    assert main(base + ["--data-sub-sample-rate", "0.5"]) == 0
    with open_processed(tmp_path / "p.h5") as data:
        assert data.preprocessing["sub_sample_rate"] == 0.5 and data.num_rows < 700
    assert main(base + ["--data-sub-sample-rate", "0.3"]) == 2

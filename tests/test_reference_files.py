"""The reference's processed files (npdlrm.data.reference_files): the fixtures were made
by the reference's own preprocessing from rows of the Criteo sample (see
tests/fixtures/reference/README.md); npdlrm's own preprocessing of the same rows must
read the same and train the same."""
import gzip
import json
import pathlib
import shutil

import numpy as np
import pytest

from npdlrm.cli import main
from npdlrm.data.h5data import open_processed
from npdlrm.data.loader import BlockLoader
from npdlrm.data.preprocess import preprocess_criteo
from npdlrm.data.reference_files import BinFiles, ProcessedNpz, ReorderedDays, sniff
from npdlrm.data.reference_locate import locate_reference, open_reference_file, to_processed

FIX = pathlib.Path(__file__).parent / "fixtures/reference"
KAGGLE, TB = FIX / "kaggle", FIX / "terabyte"
NPZ = KAGGLE / "kaggleAdDisplayChallenge_processed.npz"
SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared/data/criteo_sample/train_10k.txt.gz"
needs_sample = pytest.mark.skipif(not SAMPLE.exists(),
                                  reason=f"the Criteo sample {SAMPLE} is absent")


def _lines(lo, hi):
    with gzip.open(SAMPLE, "rb") as f:
        return f.readlines()[lo:hi]


@pytest.fixture(scope="module")
def own_kaggle(tmp_path_factory):
    """npdlrm's processed file of the rows the Kaggle fixture was made from (1..1400)."""
    d = tmp_path_factory.mktemp("own_kaggle")
    (d / "train.txt").write_bytes(b"".join(_lines(0, 1400)))
    preprocess_criteo(str(d / "train.txt"), str(d / "own.h5"), dataset="kaggle")
    return d / "own.h5"


@pytest.fixture(scope="module")
def own_terabyte(tmp_path_factory):
    """npdlrm's processed file of the Terabyte fixture's rows (1401..2000, 3 days of 200)."""
    d = tmp_path_factory.mktemp("own_terabyte")
    rows = _lines(1400, 2000)
    for day in range(3):
        (d / f"day_{day}").write_bytes(b"".join(rows[200 * day:200 * (day + 1)]))
    preprocess_criteo(str(d / "day"), str(d / "own.h5"), dataset="terabyte", days=3)
    return d / "own.h5"


def assert_same_rows(a, b):
    assert a.table_sizes == b.table_sizes and a.num_rows == b.num_rows
    for split in ("train", "test", "val"):
        assert a.split_ranges(split) == b.split_ranges(split)
    da, sa, ya = a.read(0, a.num_rows)
    db, sb, yb = b.read(0, b.num_rows)
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(ya, yb)
    for x, y in zip(sa, sb):
        np.testing.assert_array_equal(x, y)


@needs_sample
def test_kaggle_npz_reads_as_npdlrms_own_file(own_kaggle):
    with ProcessedNpz(NPZ, KAGGLE / "train_day_count.npz") as ref, \
            open_processed(own_kaggle) as own:
        assert ref.day_rows == own.day_rows == (200,) * 7
        assert_same_rows(ref, own)


@needs_sample
def test_terabyte_day_files_and_bin_files_read_as_npdlrms_own_file(own_terabyte):
    with open_processed(own_terabyte) as own:
        with ReorderedDays(str(TB / "day"), TB / "day_day_count.npz",
                           TB / "day_fea_count.npz") as days:
            assert_same_rows(days, own)
        with BinFiles(str(TB / "terabyte_processed"), TB / "day_fea_count.npz") as bins:
            assert bins.day_rows == (400, 100, 100)
            assert [bins.split_ranges(s) for s in ("train", "test", "val")] == \
                [[(0, 400)], [(400, 500)], [(500, 600)]]
            for split in ("train", "test", "val"):
                (lo, hi), = bins.split_ranges(split)
                (olo, ohi), = own.split_ranges(split)
                (db, sb, yb), (do, so, yo) = bins.read(lo, hi), own.read(olo, ohi)
                np.testing.assert_array_equal(db, do)
                np.testing.assert_array_equal(yb, yo)
                np.testing.assert_array_equal(np.stack(sb), np.stack(so))


def test_bin_files_round_trip_the_documented_layout(tmp_path):
    # rows of 40 int32: label, 13 counts, 26 ids; train = days 0..n-2, test / val = the
    # halves of the last day (the reference's converter wrote the fixture's files)
    with ReorderedDays(str(TB / "day"), TB / "day_day_count.npz",
                       TB / "day_fea_count.npz") as days:
        parts = [days._rows(*r) for r in ((0, 400), (400, 500), (500, 600))]
    for split, (x_int, x_cat, y) in zip(("train", "test", "val"), parts):
        rows = np.concatenate([y.reshape(-1, 1), x_int, x_cat], axis=1).astype(np.int32)
        rows.tofile(tmp_path / f"mine_{split}.bin")
        assert (tmp_path / f"mine_{split}.bin").read_bytes() == \
            (TB / f"terabyte_processed_{split}.bin").read_bytes()
    shutil.copy(TB / "day_fea_count.npz", tmp_path)
    with BinFiles(str(tmp_path / "mine"), tmp_path / "day_fea_count.npz") as mine, \
            BinFiles(str(TB / "terabyte_processed"), TB / "day_fea_count.npz") as ref:
        assert_same_rows(mine, ref)


def test_bin_loader_batches_are_file_blocks_shuffled_by_epoch():
    with BinFiles(str(TB / "terabyte_processed"), TB / "day_fea_count.npz") as bins:
        plain = BlockLoader(bins, 64, "train")
        shuffled = BlockLoader(bins, 64, "train", shuffle=True, seed=5)
        assert len(plain) == len(shuffled) == 7  # 400 rows: 6 blocks of 64 and one of 16
        blocks = [mb.labels for mb in plain.epoch(0)]
        assert [b.size for b in blocks] == [64] * 6 + [16]
        _, _, y = bins.read(0, 400)
        np.testing.assert_array_equal(np.concatenate(blocks), y)
        e0, e1 = shuffled.order(0), shuffled.order(1)
        assert sorted(e0) == list(range(7)) and list(e0) != list(e1)
        assert list(e0) == list(BlockLoader(bins, 64, "train", shuffle=True, seed=5).order(0))
        for i, mb in zip(e0[2:], shuffled.epoch(0, start_batch=2)):
            np.testing.assert_array_equal(mb.labels, blocks[i])


def test_max_ind_range_folds_ids_and_caps_tables():
    with ProcessedNpz(NPZ, KAGGLE / "train_day_count.npz") as full, \
            ProcessedNpz(NPZ, KAGGLE / "train_day_count.npz", max_ind_range=50) as cut:
        assert cut.table_sizes == tuple(min(n, 50) for n in full.table_sizes)
        for a, b in zip(full.read(0, 1400)[1], cut.read(0, 1400)[1]):
            np.testing.assert_array_equal(a % 50, b)


def test_locate_follows_the_references_names(tmp_path):
    assert sniff(NPZ) == "npz" and sniff(tmp_path / "none") is None
    ref = locate_reference(str(NPZ), str(tmp_path / "train.txt"), "kaggle")
    assert isinstance(ref, ProcessedNpz) and ref.day_rows == (200,) * 7
    days = locate_reference("", str(TB / "day"), "terabyte", memory_map=True)
    assert isinstance(days, ReorderedDays) and days.day_rows == (200, 200, 200)
    bins = locate_reference(str(TB / "terabyte_processed.npz"), str(TB / "day"), "terabyte",
                            bin_loader=True)
    assert isinstance(bins, BinFiles) and bins.num_rows == 600
    assert locate_reference(str(tmp_path / "x.h5"), "", "kaggle") is None  # npdlrm's own
    assert locate_reference("", str(tmp_path / "day"), "terabyte", memory_map=True) is None
    with pytest.raises(ValueError, match="t_train.bin does not exist"):
        locate_reference(str(tmp_path / "t.npz"), str(tmp_path / "day"), "terabyte",
                         bin_loader=True)
    shutil.copy(TB / "terabyte_processed_train.bin", tmp_path / "t_train.bin")
    with pytest.raises(ValueError, match="fea_count"):
        locate_reference(str(tmp_path / "t.npz"), str(tmp_path / "day"), "terabyte",
                         bin_loader=True)


def test_bad_reference_files_are_named(tmp_path):
    np.savez(tmp_path / "bad.npz", X_int=np.zeros((2, 13)))
    with pytest.raises(ValueError, match="lacks"):
        ProcessedNpz(tmp_path / "bad.npz")
    (tmp_path / "s_train.bin").write_bytes(b"\0" * 100)
    (tmp_path / "s_test.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="whole number"):
        BinFiles(str(tmp_path / "s"), TB / "day_fea_count.npz")
    with pytest.raises(ValueError, match="day counts"):
        ProcessedNpz(NPZ, dataset="terabyte")
    with pytest.raises(ValueError, match="not one of the reference"):
        open_reference_file(tmp_path / "s_test.bin")


def _losses(tmp_path, argv):
    log = tmp_path / f"log{len(list(tmp_path.glob('log*')))}.jsonl"
    assert main(["train", *argv, "--log-file", str(log), "--threads", "1"]) == 0
    records = [json.loads(r) for r in log.read_text().splitlines()]
    return ([r["loss"] for r in records if r.get("event") == "train"],
            [r["auc"] for r in records if r.get("event") == "eval"])


MODEL = ["--data-generation", "dataset", "--arch-sparse-feature-size", "4", "--arch-mlp-bot",
         "13-8-4", "--arch-mlp-top", "8-1", "--mini-batch-size", "64", "--loss-function", "bce",
         "--learning-rate", "0.1", "--test-freq", "5", "--print-freq", "1"]


@needs_sample
@pytest.mark.parametrize("randomize", ["none", "total"])
def test_training_on_the_kaggle_npz_equals_training_on_npdlrms_file(tmp_path, own_kaggle,
                                                                    randomize):
    flags = MODEL + ["--data-randomize", randomize]
    ref = _losses(tmp_path, flags + ["--processed-data-file", str(NPZ), "--raw-data-file",
                                     str(tmp_path / "train.txt")])
    own = _losses(tmp_path, flags + ["--processed-data-file", str(own_kaggle)])
    assert len(ref[0]) == 19 and len(ref[1]) >= 3
    assert ref == own


@needs_sample
@pytest.mark.parametrize("extra", [["--memory-map"],
                                   ["--mlperf-bin-loader", "--processed-data-file",
                                    str(TB / "terabyte_processed.npz")]])
def test_training_on_terabyte_files_equals_training_on_npdlrms_file(tmp_path, own_terabyte,
                                                                    extra):
    flags = MODEL + ["--data-set", "terabyte", "--data-randomize", "none"]
    ref = _losses(tmp_path, flags + ["--raw-data-file", str(TB / "day")] + extra)
    own = _losses(tmp_path, flags + ["--processed-data-file", str(own_terabyte)])
    assert len(ref[0]) == 7 and ref == own


@needs_sample
@pytest.mark.parametrize("source", [NPZ, TB / "day_0_reordered.npz",
                                    TB / "terabyte_processed_train.bin"])
def test_preprocess_from_reference_writes_npdlrms_file(tmp_path, own_kaggle, own_terabyte,
                                                       source):
    out = tmp_path / "conv.h5"
    data_set = "kaggle" if source == NPZ else "terabyte"
    assert main(["preprocess", "--from-reference", str(source), "--processed-data-file",
                 str(out), "--data-set", data_set]) == 0
    with open_processed(out) as conv, \
            open_processed(own_kaggle if source == NPZ else own_terabyte) as own:
        assert_same_rows(conv, own)
        assert conv.preprocessing["from_reference"] in ("npz", "days", "bin")


def test_bin_conversion_needs_the_validation_half(tmp_path):
    for split in ("train", "test"):
        shutil.copy(TB / f"terabyte_processed_{split}.bin", tmp_path / f"t_{split}.bin")
    with BinFiles(str(tmp_path / "t"), TB / "day_fea_count.npz") as bins:
        with pytest.raises(ValueError, match="_val.bin is missing"):
            to_processed(bins, tmp_path / "out.h5")

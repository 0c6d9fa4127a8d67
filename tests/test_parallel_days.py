"""Day files on several local worker processes: the same output as one process, and a
worker's error raised here with its type and message."""
import pytest

from npdlrm.data.criteo_tsv import MalformedRowError
from npdlrm.data.parallel_days import map_days
from npdlrm.data.preprocess import preprocess_criteo

from preprocess_digests import MODES, RECORDED, digest, write_sample
from test_criteo_sample import SAMPLE


def _square_or_fail(x):
    if x == 3:
        raise MalformedRowError("day_3", 7, "bad label")
    return x * x


def test_map_days_in_order_here():
    seen = []
    assert map_days(_square_or_fail, [(1,), (2,)], 1, on_done=lambda i, r: seen.append(r)) \
        == [1, 4]
    assert seen == [1, 4]
    with pytest.raises(MalformedRowError, match="day_3:7: malformed row: bad label"):
        map_days(_square_or_fail, [(1,), (3,), (2,)], workers=1)


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"the Criteo sample {SAMPLE} is absent")
def test_two_workers_write_the_recorded_output(tmp_path):
    write_sample(SAMPLE, str(tmp_path))
    mode = "dict_mir_t2"
    calls = []
    rep = preprocess_criteo(str(tmp_path / "day"), tmp_path / f"t_{mode}.h5",
                            dataset="terabyte", days=3, workers=2, memory_limit=300_000,
                            progress=lambda *a: calls.append(a), **MODES[mode])
    assert [digest(p) for p in [rep.path] + rep.part_paths] == RECORDED[f"terabyte/{mode}"]
    assert calls[-1][1] == 10_000 and calls[-1][2] == calls[-1][3]  # rows, all bytes


def test_a_workers_error_is_raised_here(tmp_path):  # pickled back with its type and fields
    good = "\t".join(["1"] + ["2"] * 13 + ["a"] * 26)
    for i, lines in enumerate([[good] * 3, [good, "2\tnope", good], [good]]):
        (tmp_path / f"day_{i}").write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedRowError) as e:
        preprocess_criteo(str(tmp_path / "day"), tmp_path / "o.h5", dataset="terabyte",
                          days=3, strict=True, workers=2)
    assert e.value.path.endswith("day_1") and e.value.line == 2
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"the Criteo sample {SAMPLE} is absent")
def test_two_mpi_ranks_write_the_recorded_output(tmp_path):
    from mpirun import run_mpi
    write_sample(SAMPLE, str(tmp_path))
    mode = "dict_t3"
    out = tmp_path / f"t_{mode}.h5"
    proc = run_mpi(2, ["-m", "npdlrm", "preprocess", "--raw-data-file", tmp_path / "day",
                       "--data-set", "terabyte", "--days", "3", "--processed-data-file", out,
                       "--frequency-threshold", "3"], timeout=120)
    assert proc.stderr.count("10,000 rows, day rows [4000, 3000, 3000]") == 1  # rank 0 only
    parts = [tmp_path / f"t_{mode}_day_{i}.h5" for i in range(3)]
    assert [digest(p) for p in [out] + parts] == RECORDED[f"terabyte/{mode}"]

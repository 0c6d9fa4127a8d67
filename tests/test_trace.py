"""The reference's trace formats, stack-distance profile and LRU replay (npdlrm.data.trace)."""
import pathlib

import numpy as np
import pytest

from npdlrm.data.trace import (StackProfile, check_profile, draw_distance, generate_lru,
                               profile_trace, read_profile, read_trace, table_profile_paths,
                               write_profile, write_trace)

TRACE_DIR = pathlib.Path(__file__).parent / "fixtures/reference/trace"


def test_profile_of_the_references_example_trace():
    # 1 2 3 4 5 are new (0); then 3 is 3 deep, 4 is 3 deep, 1 is 5 deep, 1 is 1 deep,
    # 6 is new, 3 is 4 deep: distances 0 x6, 1, 3 x2, 4, 5 over 11 accesses
    trace = read_trace(TRACE_DIR / "trace.log")
    assert trace.tolist() == [1, 2, 3, 4, 5, 3, 4, 1, 1, 6, 3]
    p = profile_trace(trace)
    assert p.unique_accesses == (1, 2, 3, 4, 5, 6)
    assert p.distances == (0, 1, 3, 4, 5)
    np.testing.assert_allclose(p.cumulative, np.cumsum([6, 1, 2, 1, 1]) / 11.0)
    # the reference's dist file of that trace holds the same profile, rounded
    ref = read_profile(TRACE_DIR / "dist_emb_0.log")
    assert ref.unique_accesses == p.unique_accesses and ref.distances == p.distances
    np.testing.assert_allclose(ref.cumulative, p.cumulative, atol=0.005)


def test_padding_adds_new_row_distances():
    plain = profile_trace([7, 7, 7, 7])          # distances 0, 1, 1, 1
    padded = profile_trace([7, 7, 7, 7], enable_padding=True)  # + ceil(4 / 1) zeros
    assert plain.cumulative[0] == pytest.approx(1 / 4)
    assert padded.cumulative[0] == pytest.approx(5 / 8)


def test_profile_and_trace_files_round_trip(tmp_path):
    p = profile_trace([3, 9, 3, 3, 12, 9])
    write_profile(tmp_path / "d.log", p)
    back = read_profile(tmp_path / "d.log")
    assert back.unique_accesses == p.unique_accesses and back.distances == p.distances
    assert back.cumulative == p.cumulative  # repr() keeps every bit
    for binary in (False, True):
        write_trace(tmp_path / "t", [5, 0, 2 ** 40], binary=binary)
        assert read_trace(tmp_path / "t", binary=binary).tolist() == [5, 0, 2 ** 40]


def test_generate_lru_new_rows_come_in_first_access_order():
    only_new = StackProfile((4, 8, 15), (0,), (1.0,))
    rows = generate_lru(only_new, 7, np.random.RandomState(0))
    assert rows.tolist() == [4, 8, 15, 4, 8, 15, 4]  # the LRU list cycles


def test_distances_stay_within_the_rows_seen_so_far():
    p = StackProfile(tuple(range(10)), (0, 1, 5, 10), (0.1, 0.4, 0.7, 1.0))
    rs = np.random.RandomState(3)
    for seen in range(10):
        for _ in range(50):
            assert draw_distance(rs, p, seen) <= seen


def test_padding_stops_new_rows_once_every_distance_is_possible():
    p = StackProfile((1, 2), (0, 2), (0.5, 1.0))
    rs = np.random.RandomState(1)
    assert all(draw_distance(rs, p, 2, enable_padding=True) == 2 for _ in range(100))
    assert {draw_distance(rs, p, 2) for _ in range(200)} == {0, 2}


def test_a_last_probability_below_one_gives_the_last_distance():
    p = StackProfile((1, 2, 3), (0, 1), (0.5, 0.9999))  # the reference returns None here
    rs = np.random.RandomState(0)
    assert {draw_distance(rs, p, 5) for _ in range(20000)} <= {0, 1}


@pytest.mark.parametrize("profile, words", [
    (StackProfile((), (0,), (1.0,)), "unique rows"),
    (StackProfile((1, 2), (0, 3), (0.5, 1.0)), "exceeds"),
    (StackProfile((1, 2), (1, 0), (0.5, 1.0)), "increasing"),
    (StackProfile((1, 2), (0, 1), (0.7, 0.5)), "non-decreasing"),
    (StackProfile((-1, 2), (0, 1), (0.5, 1.0)), ">= 0"),
])
def test_bad_profiles_are_refused(profile, words):
    with pytest.raises(ValueError, match=words):
        check_profile(profile)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_profile(tmp_path / "none.log")
    (tmp_path / "two.log").write_text("1, 2\n0, 1\n")
    with pytest.raises(ValueError, match="3 lines"):
        read_profile(tmp_path / "two.log")
    (tmp_path / "x.log").write_text("1, 2\n0, x\n0.5, 1.0\n")
    with pytest.raises(ValueError, match="line 2"):
        read_profile(tmp_path / "x.log")


def test_table_paths_replace_j_in_the_file_name_only():
    assert table_profile_paths("./input/dist_emb_j.log", 2) == ["./input/dist_emb_0.log",
                                                               "./input/dist_emb_1.log"]
    assert table_profile_paths("runs_j/jo/dist_j.log", 1) == ["runs_j/jo/dist_0.log"]

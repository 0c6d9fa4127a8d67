"""The reference's random / trace input stream (npdlrm.data.random_input): batch for batch
equal to what the reference's RandomDataset produced (fixture made by the reference
itself, see tests/fixtures/reference/README.md)."""
import json
import pathlib

import numpy as np
import pytest

from npdlrm.cli import main
from npdlrm.data.random_input import ReferenceStream, ReferenceStreamLoader
from npdlrm.data.trace import read_profile, table_profile_paths

FIX = pathlib.Path(__file__).parent / "fixtures/reference"
PROFILES = [read_profile(p) for p in table_profile_paths(FIX / "trace/dist_emb_j.log", 3)]
# name -> (table sizes, ReferenceStream settings) of random_batches.npz
CASES = {
    "uniform_var": ([50, 7, 300], dict(fixed_bag_size=False, dist="uniform")),
    "uniform_fixed": ([50, 7, 300], dict(fixed_bag_size=True, dist="uniform")),
    "gaussian_var": ([50, 47, 300], dict(fixed_bag_size=False, dist="gaussian", rand_min=2.0,
                                         rand_max=40.0, mu=-1.0, sigma=6.0)),
    "gaussian_fixed": ([50, 47, 300], dict(fixed_bag_size=True, dist="gaussian",
                                           rand_min=0.0, rand_max=30.0, mu=12.5, sigma=4.0)),
    "trace_var": ([50, 7, 300], dict(fixed_bag_size=False, dist="trace", profiles=PROFILES)),
    "trace_pad": ([50, 7, 300], dict(fixed_bag_size=True, dist="trace", profiles=PROFILES,
                                     enable_padding=True)),
}


def stream(name, n=10):
    sizes, kw = CASES[name]
    return ReferenceStream(4, sizes, n, bag_size=5, seed=7, **kw)


@pytest.mark.parametrize("name", sorted(CASES))
def test_batches_equal_the_references(name):
    ref = np.load(FIX / "random_batches.npz")
    batches = list(stream(name).batches(4))
    assert [mb.size for mb in batches] == [4, 4, 2]
    for b, mb in enumerate(batches):
        key = f"{name}/{b}"
        np.testing.assert_array_equal(mb.dense, ref[f"{key}/dense"])
        np.testing.assert_array_equal(mb.labels, ref[f"{key}/labels"])
        for k in range(3):
            # the reference's offsets are the bag starts; ours end with the total
            np.testing.assert_array_equal(mb.offsets[k][:-1], ref[f"{key}/offsets{k}"])
            assert mb.offsets[k][-1] == mb.indices[k].size
            np.testing.assert_array_equal(mb.indices[k], ref[f"{key}/indices{k}"])


def test_fixed_bags_drawn_at_once_equal_bags_drawn_one_by_one():
    for name in ("uniform_fixed", "gaussian_fixed"):
        s = stream(name, 64)
        fast = s.draw(np.random.RandomState(5), 64)
        s._bags_fixed = lambda rs, n, size, s=s: [s._bag(rs, None, size) for _ in range(n)]
        slow = s.draw(np.random.RandomState(5), 64)
        for a, b in zip(fast.indices + fast.offsets, slow.indices + slow.offsets):
            np.testing.assert_array_equal(a, b)


def test_bags_are_sorted_unique_rows_of_their_table():
    s = ReferenceStream(2, [3, 1000], 64, bag_size=8, dist="uniform", seed=1)
    for mb in s.batches(16):
        for k, size in enumerate([3, 1000]):
            for b in range(mb.size):
                bag = mb.indices[k][mb.offsets[k][b]:mb.offsets[k][b + 1]]
                assert bag.size >= 1 and np.all(np.diff(bag) > 0)
                assert bag.min() >= 0 and bag.max() < size


def test_gaussian_rows_stay_in_min_max():
    s = ReferenceStream(1, [100], 500, bag_size=4, dist="gaussian", rand_min=10,
                        rand_max=20, sigma=30.0, seed=2)
    rows = np.concatenate([mb.indices[0] for mb in s.batches(100)])
    assert rows.min() == 10 and rows.max() == 20  # sigma 30 hits both clips


def test_every_epoch_restarts_and_a_resume_matches():
    ld = ReferenceStreamLoader(stream("uniform_var", 40), 8)
    first, again = list(ld.epoch(0)), list(ld.epoch(3))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.dense, b.dense)
    resumed = list(ld.epoch(1, start_batch=3))
    assert len(resumed) == 2
    np.testing.assert_array_equal(resumed[0].labels, first[3].labels)


def test_ranks_get_their_rows_of_each_batch():
    whole = list(ReferenceStreamLoader(stream("trace_var", 12), 6).epoch())
    parts = [list(ReferenceStreamLoader(stream("trace_var", 12), 6, r, 2).epoch())
             for r in range(2)]
    for b, mb in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[b].dense for p in parts]), mb.dense)
        np.testing.assert_array_equal(
            np.concatenate([p[b].indices[2] for p in parts]), mb.indices[2])


@pytest.mark.parametrize("kw, words", [
    (dict(dist="gaussian", rand_max=7.0), "every table"),
    (dict(dist="gaussian", rand_min=-1.0), "every table"),
    (dict(dist="gaussian", rand_min=3.0, rand_max=2.0), "--rand-data-min"),
    (dict(dist="trace"), "one profile per table"),
    (dict(dist="zipf"), "index distribution"),
])
def test_bad_settings_are_named(kw, words):
    with pytest.raises(ValueError, match=words):
        ReferenceStream(2, [8, 7], 10, **kw)


def _losses(tmp_path, argv):
    log = tmp_path / f"log{len(list(tmp_path.iterdir()))}.jsonl"
    assert main(["train", *argv, "--log-file", str(log)]) == 0
    return [r["loss"] for r in map(json.loads, log.read_text().splitlines())
            if r.get("event") == "train"]


def test_cli_uses_the_reference_stream_only_when_asked(tmp_path):
    base = ["--arch-embedding-size", "20-30", "--arch-mlp-bot", "3-2", "--mini-batch-size",
            "8", "--num-batches", "4", "--threads", "1"]
    planted = _losses(tmp_path, base)
    uniform = _losses(tmp_path, base + ["--rand-data-dist", "uniform"])
    gaussian = _losses(tmp_path, base + ["--rand-data-dist", "gaussian", "--rand-data-max",
                                         "19", "--rand-data-sigma", "5"])
    assert len(planted) == len(uniform) == len(gaussian) == 4
    assert planted != uniform != gaussian
    trace = _losses(tmp_path, ["--data-generation", "synthetic", "--data-trace-file",
                               str(FIX / "trace/dist_emb_j.log")] + base)
    assert len(trace) == 4 and trace != uniform
    # evaluation rounds the stream's uniform labels to 0 / 1; training keeps them
    with_eval = _losses(tmp_path, base + ["--rand-data-dist", "uniform", "--test-freq", "2"])
    assert with_eval == uniform
    ld = ReferenceStreamLoader(stream("uniform_var"), 4, round_labels=True)
    assert {float(v) for mb in ld.epoch() for v in mb.labels} == {0.0, 1.0}
    assert main(["train", *base, "--rand-data-dist", "gaussian", "--rand-data-max", "25",
                 "--log-file", ""]) == 2  # row 25 is outside the 20-row table

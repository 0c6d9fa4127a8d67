"""Every mode's processed output on the Criteo sample is bitwise what the code before the
hash-table dictionary wrote (recorded digests), with and without a memory limit."""
import os

import pytest

from npdlrm.data import write_pass
from npdlrm.data.preprocess import preprocess_criteo

from preprocess_digests import MODES, RECORDED, digest, write_sample
from test_criteo_sample import SAMPLE

pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"the Criteo sample {SAMPLE} "
                                "is absent")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    write_sample(SAMPLE, str(folder))
    return folder


@pytest.mark.parametrize("memory_limit", [0, 100_000])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_outputs_match_the_recorded_digests(raw, tmp_path, monkeypatch, mode, memory_limit):
    groups = []
    real = write_pass.column_groups
    monkeypatch.setattr(write_pass, "column_groups",
                        lambda d, b: groups.append(real(d, b)) or groups[-1])
    import npdlrm.data.preprocess as pp
    monkeypatch.setattr(pp, "column_groups", write_pass.column_groups)
    kw = dict(MODES[mode], block_bytes=1 << 18, memory_limit=memory_limit)
    k = preprocess_criteo(str(raw / "train.txt"), tmp_path / f"k_{mode}.h5", **kw)
    assert digest(k.path) == RECORDED[f"kaggle/{mode}"]
    t = preprocess_criteo(str(raw / "day"), tmp_path / f"t_{mode}.h5", dataset="terabyte",
                          days=3, **kw)
    assert [digest(p) for p in [t.path] + t.part_paths] == RECORDED[f"terabyte/{mode}"]
    if memory_limit and mode.startswith("dict"):  # spilled, and written by column groups
        assert all(len(g) > 1 for g in groups), groups
    else:
        assert all(len(g) == 1 for g in groups), groups
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".")]
    assert not leftovers  # no spill folder or partial file left behind

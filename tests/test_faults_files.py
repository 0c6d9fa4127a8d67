"""Damaged files (issue 9): bytes flipped inside a stored table of a checkpoint (both
layouts) or of a processed data file, NaN weights, a short `dense`, a directory given as
a checkpoint, bad JSON in `train_state`. Each is refused with a clear ValueError naming
the file (and the tensor or dataset) before anything changes; `--no-verify` skips the
checkpoint's verification pass; files written before checksums existed still load."""
import json
import os

import h5py
import numpy as np
import pytest

from npdlrm import DLRM, DLRMConfig
from npdlrm import checkpoint as ckpt_mod
from npdlrm.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from npdlrm.cli import main
from npdlrm.data import h5data
from npdlrm.data.h5data import open_processed
from npdlrm.data.loader import BatchLoader
from npdlrm.data.preprocess import preprocess_criteo
from npdlrm.optimizers import Optimizer
from npdlrm.parallel import DistributedDLRM, LocalComm, uniform_plan
from npdlrm.parallel.checkpoint import load_sharded, save_sharded

SIZES = (50, 60, 7)
D = 4


def config(sizes=SIZES):
    return DLRMConfig(table_sizes=tuple(sizes), embedding_dim=D, bottom_mlp=(13, 8, D),
                      top_mlp=(8, 1))


def flip(path, offset, n=64, mask=0x01):
    """XOR `n` bytes of file `path` from `offset` with `mask` (0x01 keeps float32 weights
    of moderate size finite: only mantissa bits and a low exponent bit change)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(n))
        assert len(data) == n
        f.seek(offset)
        f.write(bytes(b ^ mask for b in data))


def contiguous_offset(path, name):
    """The file offset and size of contiguous dataset `name`."""
    with h5py.File(path, "r") as f:
        ds = f[name]
        assert ds.chunks is None and ds.id.get_offset() is not None
        return ds.id.get_offset(), ds.id.get_storage_size()


def chunk_offset(path, name, index):
    """The file offset and stored size of chunk `index` of chunked dataset `name`."""
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(index)
        return info.byte_offset, info.size


def state(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_state(model, expected):
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)


def sharded(seed=5):
    return DistributedDLRM(config(), LocalComm(), uniform_plan(1, SIZES, D, "row"), seed=seed)


def shard_dataset(path, table):
    """(shard file path, dataset name) of the weights of `table` in a sharded checkpoint."""
    info = read_checkpoint_info(path)
    with h5py.File(path, "r") as f:
        pieces = json.loads(f["pieces"].asstr()[()])
    _, _, _, i, group = next(p for p in pieces if p[0] == table)
    folder = os.path.dirname(path)
    return os.path.join(folder, info["sharded"]["shard_files"][i]), f"{group}/weight"


# ---- flipped bytes in a checkpoint -----------------------------------------------------
def test_flipped_bytes_in_a_table_of_a_checkpoint_are_refused(tmp_path):
    model = DLRM(config(), seed=3)
    path = str(tmp_path / "ck.h5")
    save_checkpoint(path, model, Optimizer("adagrad", lr=0.1), {"step": 1})
    offset, size = contiguous_offset(path, "params/embeddings.1.weight")
    flip(path, offset + size // 3)
    other = DLRM(config(), seed=4)
    before = state(other)
    with pytest.raises(ValueError, match=r"ck\.h5: tensor embeddings\.1\.weight .*fails its "
                                         r"CRC-32 checksum.*corrupted"):
        load_checkpoint(path, model=other)
    assert_state(other, before)  # nothing changed
    with pytest.raises(ValueError, match="CRC-32"):
        load_checkpoint(path, with_optimizer=False)
    # verify=False (--no-verify) skips the pass: the flipped (finite) values load
    got, saved = load_checkpoint(path, verify=False).model.state_dict(), model.state_dict()
    assert not np.array_equal(got["embeddings.1.weight"], saved["embeddings.1.weight"])
    np.testing.assert_array_equal(got["embeddings.0.weight"], saved["embeddings.0.weight"])


def test_flipped_bytes_in_a_sharded_checkpoint_name_the_shard_file(tmp_path):
    model = sharded()
    path = str(tmp_path / "ck.h5")
    save_sharded(path, model)
    shard, name = shard_dataset(path, 1)
    offset, size = contiguous_offset(shard, name)
    flip(shard, offset + 8)
    target = sharded(seed=9)
    before = state(target.local)
    with pytest.raises(ValueError, match=rf"weight of table 1 .* in {os.path.basename(shard)}"
                                         r".*fails its CRC-32 checksum"):
        load_sharded(path, target)
    assert_state(target.local, before)
    with pytest.raises(ValueError, match="CRC-32"):  # into a whole model too
        load_checkpoint(path)
    load_sharded(path, target, verify=False)


def test_checkpoints_without_checksums_still_load(tmp_path):
    model = DLRM(config(), seed=3)
    opt = Optimizer("adagrad", lr=0.1)
    path = str(tmp_path / "old.h5")
    save_checkpoint(path, model, opt)
    with h5py.File(path, "a") as f:  # what a file of an older npdlrm looks like
        found = []
        attr = ckpt_mod.CHECKSUM_ATTR
        f.visititems(lambda n, o: found.append(o) if attr in o.attrs else None)
        assert len(found) >= len(model.state_dict())
        for ds in found:
            del ds.attrs[attr]
    assert_state(load_checkpoint(path).model, state(model))


# ---- NaN weights ---------------------------------------------------------------------
def test_nan_weights_are_refused_before_anything_changes(tmp_path):
    model = DLRM(config(), seed=3)
    model.embeddings.tables[1].weight[3:5] = np.nan  # 2 rows of 4: 8 values
    path = str(tmp_path / "nan.h5")
    save_checkpoint(path, model)
    other = DLRM(config(), seed=4)
    before = state(other)
    msg = r"nan\.h5: tensor embeddings\.1\.weight holds 8 non-finite values \(NaN or inf\)"
    with pytest.raises(ValueError, match=msg):
        load_checkpoint(path, model=other, with_optimizer=False)
    assert_state(other, before)
    with pytest.raises(ValueError, match=msg + ".*after reading"):
        load_checkpoint(path, verify=False)


def test_inf_in_an_mlp_and_nan_in_a_sharded_checkpoint_are_refused(tmp_path):
    model = DLRM(config(), seed=3)
    name = model.params.names[0]
    model.params.views[name].flat[:3] = np.inf
    save_checkpoint(str(tmp_path / "inf.h5"), model)
    with pytest.raises(ValueError, match=rf"tensor {name} holds 3 non-finite"):
        load_checkpoint(str(tmp_path / "inf.h5"))

    dist = sharded()
    dist.local.embeddings.tables[2].weight[0, 1] = np.nan
    path = str(tmp_path / "ck.h5")
    save_sharded(path, dist)
    target = sharded(seed=9)
    before = state(target.local)
    with pytest.raises(ValueError, match=r"weight of table 2 .* holds 1 non-finite"):
        load_sharded(path, target)
    assert_state(target.local, before)
    with pytest.raises(ValueError, match=r"embeddings\.2\.weight holds 1 non-finite.*after"):
        load_sharded(path, target, verify=False)


# ---- processed data files --------------------------------------------------------------
def raw_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return ["\t".join([str(i % 2)] + [str(j + i % 5) for j in range(13)] +
                      [f"{rng.integers(0, 40):08x}" for _ in range(26)]) for i in range(n)]


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A processed file of 300 rows in chunks of 64, and a checkpoint of a model for it."""
    folder = tmp_path_factory.mktemp("data")
    raw = folder / "raw.txt"
    raw.write_text("\n".join(raw_rows(300)) + "\n")
    h5 = str(folder / "d.h5")
    preprocess_criteo(str(raw), h5, chunk_rows=64)
    with open_processed(h5) as data:
        sizes = data.table_sizes
    ck = str(folder / "ck.h5")
    save_checkpoint(ck, DLRM(config(sizes), seed=1))
    return h5, ck, sizes


def copy_of(path, folder, name):
    out = os.path.join(folder, name)
    with open(path, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read())
    return out


def test_flipped_bytes_in_processed_data_name_the_file_and_dataset(processed, tmp_path, capsys):
    h5 = copy_of(processed[0], tmp_path, "bad.h5")
    offset, size = chunk_offset(h5, "sparse/3", 1)
    flip(h5, offset + 16)
    with open_processed(h5) as data:  # opening reads no chunk
        loader = BatchLoader(data, 50, "all", shuffle=False, prefetch=2)  # a loader thread
        with pytest.raises(ValueError, match=r"bad\.h5: cannot read rows \[\d+, \d+\) of "
                                             r"dataset sparse/3: a chunk fails its "
                                             r"Fletcher-32 checksum"):
            list(loader.epoch(0))
        data.read(0, 64)  # the other chunks still read
    out = str(tmp_path / "p.npy")
    assert main(["predict", "--load-model", processed[1], "--processed-data-file", h5,
                 "-o", out]) == 2
    err = capsys.readouterr().err
    assert "bad.h5" in err and "sparse/3" in err and "Fletcher-32" in err
    assert not os.path.exists(out)


def test_processed_files_without_checksums_still_load(tmp_path):
    path = str(tmp_path / "old.h5")
    n, sizes = 10, [5] * 26
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:  # the layout before the Fletcher-32 filter
        h5data.write_root_attrs(f, "kaggle", sizes, [n], 4, [], {"max_ind_range": -1})
        f["dense"] = rng.random((n, 13), dtype=np.float32)
        f["labels"] = np.ones(n, np.float32)
        for k in range(26):
            f[f"sparse/{k}"] = rng.integers(0, 5, n).astype(np.int32)
    with open_processed(path) as data:
        dense, sparse, labels = data.read(0, n)
    assert dense.shape == (n, 13) and labels.shape == (n,) and sparse[25].shape == (n,)


def test_a_short_dense_dataset_is_refused_when_opening(processed, tmp_path):
    h5 = copy_of(processed[0], tmp_path, "short.h5")
    with h5py.File(h5, "a") as f:
        f["dense"].resize((250, 13))
    with pytest.raises(ValueError, match=r"short\.h5: dataset dense has 250 rows, labels 300"):
        open_processed(h5)


# ---- predict and train on damaged checkpoints ---------------------------------------------
def test_predict_keeps_the_previous_output_on_a_nan_checkpoint(processed, tmp_path, capsys):
    h5, _, sizes = processed
    model = DLRM(config(sizes), seed=1)
    model.embeddings.tables[0].weight[:] = np.nan
    ck = str(tmp_path / "nan.h5")
    save_checkpoint(ck, model)
    out = tmp_path / "p.txt"
    out.write_text("previous\n")
    for extra in ([], ["--no-verify"]):
        assert main(["predict", "--load-model", ck, "--processed-data-file", h5,
                     "-o", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert "embeddings.0.weight holds" in err and "non-finite" in err
        assert out.read_text() == "previous\n"


def test_predict_no_verify_skips_the_checksum(processed, tmp_path, capsys):
    h5, ck, _ = processed
    bad = copy_of(ck, tmp_path, "bad.h5")
    offset, size = contiguous_offset(bad, "params/embeddings.2.weight")
    flip(bad, offset)
    out = str(tmp_path / "p.npy")
    assert main(["predict", "--load-model", bad, "--processed-data-file", h5, "-o", out]) == 2
    assert "embeddings.2.weight" in capsys.readouterr().err
    assert main(["predict", "--load-model", bad, "--processed-data-file", h5, "-o", out,
                 "--no-verify"]) == 0
    assert np.load(out).shape == (300,)


TRAIN = ("train --data-generation synthetic --arch-embedding-size 30-40-5 "
         "--arch-sparse-feature-size 4 --arch-mlp-bot 13-8-4 --arch-mlp-top 8-1 "
         "--mini-batch-size 32 --num-batches 2 --print-freq 2 --test-data-size 64 "
         "--test-mini-batch-size 64 --progress False --log-file").split() + [""]


def test_train_refuses_a_directory_and_a_flipped_table(tmp_path, capsys):
    assert main([*TRAIN, "--load-model", str(tmp_path), "--inference-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"npdlrm train: error: {tmp_path} is a directory, not a checkpoint file"
    ck = str(tmp_path / "ck.h5")
    assert main([*TRAIN, "--save-model", ck]) == 0
    offset, size = contiguous_offset(ck, "params/embeddings.1.weight")
    flip(ck, offset + 40)
    assert main([*TRAIN, "--load-model", ck, "--inference-only"]) == 2
    assert "embeddings.1.weight" in capsys.readouterr().err
    assert main([*TRAIN, "--load-model", ck, "--inference-only", "--no-verify"]) == 0


# ---- bad JSON --------------------------------------------------------------------------
def test_bad_json_in_train_state_names_the_file(tmp_path):
    path = str(tmp_path / "ck.h5")
    save_checkpoint(path, DLRM(config(), seed=3), train_state={"step": 3})
    with h5py.File(path, "a") as f:
        del f["train_state"]
        f["train_state"] = '{"step": 3,'
    for load in (load_checkpoint, read_checkpoint_info):
        with pytest.raises(ValueError, match=r"ck\.h5: dataset train_state is not valid JSON"):
            load(path)

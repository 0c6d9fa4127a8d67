"""Memory-mapped embedding tables (npdlrm.mmap_tables): mapping HDF5 datasets, the
training working copy (exact: the same numbers as in memory), checkpoints from and into
mapped tables, mapped scoring of checkpoints and serving files, and the CLI flags."""
import os

import h5py
import numpy as np
import pytest

from npdlrm import DLRM, Optimizer
from npdlrm.checkpoint import load_checkpoint, save_checkpoint
from npdlrm.cli import main
from npdlrm.config import DLRMConfig
from npdlrm.data.synthetic import SyntheticData
from npdlrm.inference import InferenceModel
from npdlrm.mmap_tables import (TableFiles, build_mapped_model, is_mapped,
                                load_checkpoint_mapped, map_dataset, map_model_tables)
from npdlrm.serve_file import load_for_inference, save_serving

SIZES = (300, 2000, 50)
CONFIG = DLRMConfig.from_arch([13, 8, 4], "8-1", SIZES, 4, loss="bce")


def batches(n, B=32, seed=1, bag=3):
    data = SyntheticData(13, SIZES, n * B, distribution="power-law", bag_size=bag,
                         fixed_bag_size=False, seed=seed)
    return [data.batch(i, B) for i in range(n)]


def step_all(model, opt, mbs):
    return [model.train_step(mb.dense, mb.indices, mb.offsets, mb.labels, opt) for mb in mbs]


def assert_same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert np.array_equal(sa[name], sb[name]), name
    oa, ob = a.optimizer_state(), b.optimizer_state()
    assert oa.keys() == ob.keys()
    for key in oa:
        assert np.array_equal(oa[key], ob[key]), key


def test_map_dataset_reads_the_bytes_hdf5_reads_and_refuses_what_it_cannot_map(tmp_path):
    path = str(tmp_path / "t.h5")
    a = np.random.default_rng(0).random((1000, 7)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("x/plain", data=a)
        f.create_dataset("chunked", data=a, chunks=(100, 7))
        f.create_dataset("gzip", data=a, compression="gzip")
        f.create_dataset("empty", shape=(10, 7), dtype=np.float32)
        f.create_dataset("big_endian", data=a.astype(">f4"))
        f.create_dataset("external", data=a, external=[(str(tmp_path / "ext.bin"), 0, a.nbytes)])
    with h5py.File(path, "r") as f:
        m = map_dataset(f["x/plain"])
        assert type(m) is np.ndarray and is_mapped(m) and not m.flags.writeable
        assert np.array_equal(m, a)
        for name, words in (("chunked", "contiguous"), ("gzip", "contiguous"),
                            ("external", "external"),
                            ("empty", "no data"), ("big_endian", "dtype")):
            with pytest.raises(ValueError, match=words):
                map_dataset(f[name])


def test_table_files_are_zeroed_writable_and_leave_nothing_behind(tmp_path):
    files = TableFiles(tmp_path)
    a = files.zeros((1000, 16), np.float32)
    assert a.dtype == np.float32 and a.shape == (1000, 16) and a.flags.writeable
    assert is_mapped(a) and not a.any()
    a[3] = 1.5
    assert a.sum() == 24
    assert files.nbytes == 64000
    assert os.listdir(tmp_path) == []  # unlinked at once: gone with the process
    with pytest.raises(ValueError, match="no such folder"):
        TableFiles(tmp_path / "missing")


def test_a_working_copy_that_does_not_fit_fails_at_once(tmp_path, monkeypatch):
    import errno
    from npdlrm.diskspace import DiskFullError

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DiskFullError, match="no space left"):
        build_mapped_model(CONFIG, tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rwsadagrad"])
def test_training_with_mapped_tables_equals_training_in_memory(tmp_path, optimizer):
    ram = DLRM(CONFIG, seed=5)
    mapped = build_mapped_model(CONFIG, tmp_path, seed=5)
    assert all(is_mapped(t.weight) for t in mapped.embeddings.tables)
    assert not any(is_mapped(t.weight) for t in ram.embeddings.tables)
    assert_same_model(ram, mapped)  # the initial values, bit for bit
    mbs = batches(6)
    o1, o2 = Optimizer(optimizer, lr=0.1), Optimizer(optimizer, lr=0.1)
    losses_ram, losses_mapped = step_all(ram, o1, mbs), step_all(mapped, o2, mbs)
    assert losses_ram == losses_mapped
    assert_same_model(ram, mapped)
    if optimizer != "sgd":  # the tables' optimizer state lives in the working copy too
        assert all(is_mapped(t.state) for t in mapped.embeddings.tables)
    assert os.listdir(tmp_path) == []


def test_checkpoints_of_mapped_tables_are_ordinary_and_resume_exactly(tmp_path):
    mbs = batches(8)
    ram, o1 = DLRM(CONFIG, seed=2), Optimizer("adagrad", lr=0.05)
    mapped, o2 = build_mapped_model(CONFIG, tmp_path, seed=2), Optimizer("adagrad", lr=0.05)
    step_all(ram, o1, mbs[:4])
    step_all(mapped, o2, mbs[:4])
    save_checkpoint(tmp_path / "ram.h5", ram, o1, {"step": 4})
    save_checkpoint(tmp_path / "mapped.h5", mapped, o2, {"step": 4})
    with h5py.File(tmp_path / "ram.h5", "r") as a, h5py.File(tmp_path / "mapped.h5", "r") as b:
        for group in ("params", "optimizer/tables"):
            for name in a[group]:
                assert np.array_equal(a[group][name][...], b[group][name][...]), name
                assert a[group][name].attrs["crc32"] == b[group][name].attrs["crc32"]
    # resume into a mapped model: weights and adagrad state land in the working copy
    resumed = map_model_tables(DLRM(CONFIG, init="none"), TableFiles(tmp_path))
    ckpt = load_checkpoint(tmp_path / "mapped.h5", model=resumed)
    assert all(is_mapped(t.weight) and is_mapped(t.state) for t in resumed.embeddings.tables)
    assert step_all(resumed, ckpt.optimizer, mbs[4:]) == step_all(ram, o1, mbs[4:])
    assert_same_model(ram, resumed)


def test_scoring_a_mapped_checkpoint_equals_scoring_it_in_memory(tmp_path):
    model, opt = DLRM(CONFIG, seed=3), Optimizer("adagrad", lr=0.1)
    step_all(model, opt, batches(3))
    save_checkpoint(tmp_path / "c.h5", model, opt)
    mapped = load_checkpoint_mapped(str(tmp_path / "c.h5"))
    assert all(is_mapped(t.weight) and not t.weight.flags.writeable
               for t in mapped.embeddings.tables)
    assert all(t.state is None for t in mapped.embeddings.tables)
    for mb in batches(3, B=100, seed=9):
        assert np.array_equal(model.predict(mb.dense, mb.indices, mb.offsets),
                              mapped.predict(mb.dense, mb.indices, mb.offsets))
    # the checkpoint's checks still run: a corrupted table is refused before mapping
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        ds = f["params/embeddings.1.weight"]
        ds[7, 2] = ds[7, 2] + 1
    with pytest.raises(ValueError, match="CRC-32"):
        load_checkpoint_mapped(str(tmp_path / "c.h5"))


@pytest.mark.parametrize("bits", [32, 8, 4])
def test_scoring_a_mapped_serving_file_equals_scoring_it_in_memory(tmp_path, bits):
    model = DLRM(CONFIG, seed=4)
    save_serving(str(tmp_path / "s.h5"), InferenceModel.from_model(model, bits, 8))
    ram = load_for_inference(str(tmp_path / "s.h5"))
    mapped = load_for_inference(str(tmp_path / "s.h5"), mmap=True)
    assert all(is_mapped(t.rows) for t in mapped.tables)
    assert not any(is_mapped(t.rows) for t in ram.tables)
    for mb in batches(2, B=100, seed=8):
        assert np.array_equal(ram.predict(mb.dense, mb.indices, mb.offsets),
                              mapped.predict(mb.dense, mb.indices, mb.offsets))


def test_mapped_loads_refuse_what_they_cannot_do(tmp_path):
    model = DLRM(CONFIG, seed=4)
    save_checkpoint(tmp_path / "c.h5", model)
    with pytest.raises(ValueError, match="serving file"):
        load_for_inference(str(tmp_path / "c.h5"), emb_bits=8, mmap=True)
    qr = DLRMConfig.from_arch([13, 8, 4], "8-1", SIZES, 4, qr_flag=True, qr_threshold=100)
    with pytest.raises(ValueError, match="plain tables"):
        build_mapped_model(qr, tmp_path)


SMALL = ("--data-generation synthetic --arch-embedding-size 300-2000-50 "
         "--arch-sparse-feature-size 4 --arch-mlp-bot 13-8-4 --arch-mlp-top 8-1 "
         "--loss-function bce --mini-batch-size 32 --num-batches 9 --print-freq 4 "
         "--test-data-size 500 --test-mini-batch-size 100 --progress False "
         "--log-file ''").split()


def cli_params(path):
    with h5py.File(path, "r") as f:
        out = {f"params/{n}": f["params"][n][...] for n in f["params"]}
        out.update({f"state/{n}": f["optimizer/tables"][n][...] for n in f["optimizer/tables"]})
    return out


def test_cli_train_and_predict_with_mmap_embeddings(tmp_path, capsys):
    argv = [a if a != "''" else "" for a in SMALL] + ["--optimizer", "adagrad", "--test-freq", "5"]
    assert main(["train", *argv, "--save-model", str(tmp_path / "ram.h5")]) == 0
    work = tmp_path / "work"
    work.mkdir()
    assert main(["train", *argv, "--save-model", str(tmp_path / "mm.h5"), "--mmap-embeddings",
                 "--mmap-dir", str(work)]) == 0
    a, b = cli_params(tmp_path / "ram.h5"), cli_params(tmp_path / "mm.h5")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert os.listdir(work) == []
    # resume with mapped tables from the in-memory run's checkpoint
    assert main(["train", *argv, "--load-model", str(tmp_path / "ram.h5"), "--nepochs", "2",
                 "--save-model", str(tmp_path / "mm2.h5"), "--mmap-embeddings"]) == 0
    assert main(["train", *argv, "--load-model", str(tmp_path / "ram.h5"), "--nepochs", "2",
                 "--save-model", str(tmp_path / "ram2.h5")]) == 0
    a, b = cli_params(tmp_path / "ram2.h5"), cli_params(tmp_path / "mm2.h5")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    capsys.readouterr()  # the refusals are one line, exit code 2
    assert main(["train", *argv, "--mmap-dir", str(work)]) == 2
    assert "--mmap-dir needs --mmap-embeddings" in capsys.readouterr().err


def test_cli_predict_with_mmap_embeddings_equals_predict_in_memory(tmp_path, capsys):
    from npdlrm.data import h5data
    sizes = [20 + 17 * k for k in range(26)]
    cfg = DLRMConfig.from_arch([13, 8, 4], "8-1", sizes, 4, loss="bce")
    model = DLRM(cfg, seed=6)
    save_checkpoint(tmp_path / "c.h5", model)
    rng = np.random.default_rng(3)
    n = 700
    dense = rng.random((n, 13)).astype(np.float32)
    ids = (rng.random((n, 26)) * np.array(sizes)).astype(np.int64)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    with h5data.atomic_h5(str(tmp_path / "d.h5")) as f:
        w = h5data.RowWriter(f, sizes, 256)
        w.append(dense, ids, labels)
        w.close()
        h5data.write_root_attrs(f, "kaggle", sizes, [n], 256, [], {})
    out = {}
    for flag in ([], ["--mmap-embeddings"]):
        path = str(tmp_path / f"p{len(flag)}.npy")
        assert main(["predict", "--load-model", str(tmp_path / "c.h5"), "--processed-data-file",
                     str(tmp_path / "d.h5"), "--test-mini-batch-size", "128", "-o", path,
                     *flag]) == 0
        out[len(flag)] = np.load(path)
    assert "memory-mapped" in capsys.readouterr().out
    assert out[0].shape == (n,) and np.array_equal(out[0], out[1])
    assert main(["predict", "--load-model", str(tmp_path / "c.h5"), "--processed-data-file",
                 str(tmp_path / "d.h5"), "-o", str(tmp_path / "x.npy"), "--mmap-embeddings",
                 "--quantize-emb-with-bit", "8"]) == 2
    assert "serving file" in capsys.readouterr().err

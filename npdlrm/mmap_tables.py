"""Embedding tables kept in files and paged in by the operating system (`--mmap-embeddings`).

A mapped table is a plain NumPy array over a memory map of a file: the kernels take it
as they take an array in RAM, and only the pages of the rows a batch touches are read;
the kernel evicts them again when memory runs short (they are file pages, not the
process's own memory), so tables larger than the memory limit work.

Two sources:

* Scoring (`npdlrm predict --mmap-embeddings`): the table datasets of a checkpoint
  (`params/embeddings.<k>.weight`) or of a serving file (`tables/<k>`) mapped read-only
  where they lie in the HDF5 file (`map_dataset`). Only contiguous, uncompressed,
  unfiltered datasets can be mapped, which is how npdlrm writes them; anything else is
  refused with the reason.
* Training (`npdlrm train --mmap-embeddings`): the weights and the optimizer state of
  every table live in a writable working copy (`TableFiles`): one file per array in
  `--mmap-dir`, created, allocated on disk (a full disk fails at the start, not with a
  SIGBUS in the middle of a step), mapped and at once unlinked, so that they vanish with
  the process whatever way it ends. The steps write the updated rows into the mapping;
  a checkpoint is the ordinary atomic, CRC-checked file, written from the mapping by
  HDF5 as from an array in RAM. The MLPs and their optimizer state stay in RAM.

The arrays are exactly those of the in-RAM model (same dtype, shape and C order), so
the numbers are the same bit for bit.
"""
import contextlib
import errno
import mmap
import os
import tempfile

import numpy as np

from .diskspace import DiskFullError, free_bytes

ADVICE = {"random": getattr(mmap, "MADV_RANDOM", None),
          "normal": getattr(mmap, "MADV_NORMAL", None)}


def map_file(fileobj, offset, dtype, shape, writable=False, advice="random"):
    """A C-order array (shape, dtype) over the bytes of open file `fileobj` (anything with
    fileno()) from byte `offset`, shared with the file (writes go to it). advice:
    'random' (read only the page a row lies in: the access of embedding lookups) or
    'normal' (the kernel reads ahead)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype)
    if advice not in ADVICE:
        raise ValueError(f"mmap advice must be one of {sorted(ADVICE)}, got {advice!r}")
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
    m = mmap.mmap(fileobj.fileno(), nbytes + (offset - start), access=access, offset=start)
    if ADVICE[advice] is not None and hasattr(m, "madvise"):
        m.madvise(ADVICE[advice])
    a = np.frombuffer(m, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset - start)
    return a.reshape(shape)


def dataset_location(ds):
    """(file offset, dtype, shape) of h5py dataset `ds` when its bytes can be mapped as
    they are; ValueError saying why not otherwise."""
    import h5py
    what = f"dataset {ds.name} of {ds.file.filename}"
    plist = ds.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CONTIGUOUS:
        raise ValueError(f"{what} is not stored contiguously (chunked or compact): it cannot "
                         f"be memory-mapped; load it into memory instead")
    if plist.get_nfilters() or plist.get_external_count():
        raise ValueError(f"{what} is compressed, filtered or external: it cannot be "
                         f"memory-mapped; load it into memory instead")
    dtype = ds.dtype
    if dtype.kind not in "fiu" or not dtype.isnative:
        raise ValueError(f"{what} has dtype {dtype}: only native numbers can be mapped")
    offset = ds.id.get_offset()
    if offset is None:  # never written: HDF5 allocated no space
        raise ValueError(f"{what} holds no data (never written): it cannot be mapped")
    return int(offset), dtype, tuple(ds.shape)


def map_dataset(ds, advice="random"):
    """Read-only array over h5py dataset `ds`'s bytes in its file (dataset_location).
    Its first and last rows are compared with what HDF5 reads, to catch a wrong offset."""
    offset, dtype, shape = dataset_location(ds)
    with open(ds.file.filename, "rb") as f:
        a = map_file(f, offset, dtype, shape, writable=False, advice=advice)
    if a.size and not (np.array_equal(a[:1], ds[:1], equal_nan=True)
                       and np.array_equal(a[-1:], ds[-1:], equal_nan=True)):
        raise ValueError(f"dataset {ds.name} of {ds.file.filename}: the mapped bytes differ "
                         f"from what HDF5 reads (offset {offset}); load it into memory instead")
    return a


class TableFiles:
    """The writable working copy of mapped training tables: zeroed arrays, each over a
    file of its own in `folder`, allocated on disk, mapped and unlinked at once."""

    def __init__(self, folder, advice="random"):
        self.folder = os.path.abspath(os.fspath(folder))
        if not os.path.isdir(self.folder):
            raise ValueError(f"--mmap-dir {folder}: no such folder (the working copy of the "
                             f"mapped tables goes there)")
        if advice not in ADVICE:
            raise ValueError(f"mmap advice must be one of {sorted(ADVICE)}, got {advice!r}")
        self.advice = advice
        self.nbytes = 0  # bytes of the arrays made so far

    def zeros(self, shape, dtype):
        """A zeroed, writable (shape, dtype) array over a new file; np.zeros's signature."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes == 0:
            return np.zeros(shape, dtype)
        with tempfile.TemporaryFile(dir=self.folder, prefix="npdlrm-table-") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, nbytes)  # zeros; fails now if it will not fit
            except OSError as e:
                if e.errno != errno.ENOSPC and e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                    f.truncate(nbytes)  # no fallocate here: a sparse file (no reservation)
                else:
                    raise DiskFullError(os.path.join(self.folder, "npdlrm-table-*"), nbytes,
                                        free_bytes(self.folder)) from e
            a = map_file(f, 0, dtype, shape, writable=True, advice=self.advice)
        self.nbytes += nbytes
        return a


def is_mapped(a):
    """True when array `a` lies in a memory map (a view of one included)."""
    return _mapping_of(a) is not None


def _mapping_of(a):
    """The mmap.mmap array `a` lies in, or None."""
    while a is not None and not isinstance(a, mmap.mmap):
        a = a.obj if isinstance(a, memoryview) else getattr(a, "base", None)
    return a


@contextlib.contextmanager
def sequential_access(array, flush=False):
    """While a whole mapped table is streamed (a checkpoint save or load, a checksum),
    let the kernel read ahead (MADV_SEQUENTIAL): with the lookups' MADV_RANDOM every page
    would be a read of its own, 20x slower under memory pressure. Then MADV_RANDOM again.
    flush: after a whole table was written, write it back (msync) at once, so that the
    steps do not start with gigabytes of dirty pages whose writeback throttles their
    writes. Nothing for an array in RAM."""
    m = _mapping_of(array)
    if m is None:
        yield
        return
    seq, rand = getattr(mmap, "MADV_SEQUENTIAL", None), ADVICE["random"]
    advise = seq is not None and rand is not None and hasattr(m, "madvise")
    if advise:
        m.madvise(seq)
    try:
        yield
        if flush:
            m.flush()
    finally:
        if advise:
            m.madvise(rand)


def flush_tables(model):
    """Write back (msync) every mapped table and optimizer state of `model`."""
    for t in model.embeddings.tables:
        for a in (t.weight, t.state):
            m = _mapping_of(a)
            if m is not None:
                m.flush()


def _check_mappable_model(config, model=None):
    if getattr(config, "has_embedding_variants", False):
        raise ValueError("--mmap-embeddings supports plain tables only, not quotient-remainder, "
                         "mixed-dimension or learned-weight embeddings")
    if model is not None and not getattr(model.embeddings, "whole", False):
        raise ValueError("--mmap-embeddings runs in one process (a distributed model's shards "
                         "stay in memory)")


def map_model_tables(model, files):
    """Put every table of DLRM `model` and its later optimizer state into `files` (a
    TableFiles): the weights become zeroed mapped arrays (fill them: initialise or load),
    and EmbeddingTable.new_state makes the state there. Any state held is dropped."""
    _check_mappable_model(model.config, model)
    for t in model.embeddings.tables:
        shape, dtype = t.weight.shape, t.weight.dtype
        t.weight = None  # free the in-memory array first
        t.weight = files.zeros(shape, dtype)
        t.state, t.state_kind = None, None
        t.new_state = files.zeros
    return model


def working_folder(args):
    """Where `npdlrm train --mmap-embeddings` keeps its working copy: --mmap-dir, else the
    folder of --save-model, else the current folder."""
    if args.mmap_dir:
        return args.mmap_dir
    if args.save_model:
        return os.path.dirname(os.path.abspath(args.save_model))
    return os.getcwd()


def build_mapped_model(config, folder, seed=123, init="reference", advice="random"):
    """A DLRM whose tables (and their optimizer state) live in a working copy in
    `folder` (TableFiles), initialised as DLRM(config, seed, init) would be: the same
    values bit for bit (init 'none': zeros, to be loaded)."""
    from .init import initialize
    from .model import DLRM
    _check_mappable_model(config)
    model = DLRM(config, seed=seed, init="none")  # tables: untouched np.empty, never paged in
    map_model_tables(model, TableFiles(folder, advice))
    initialize(model.embeddings.init_targets(), model.bottom.layers(), model.top.layers(),
               seed, init)
    if init != "none":
        flush_tables(model)  # start clean (sequential_access's flush)
    return model


def load_checkpoint_mapped(path, verify=True, advice="random"):
    """A DLRM for scoring whose tables are the checkpoint's own datasets, mapped
    read-only (the MLPs are read into memory). verify: the checks of load_checkpoint,
    the CRC-32 pass over every tensor included (it reads the tables once, in blocks);
    verify=False skips it, and the mapped tables are then not scanned for non-finite
    values either."""
    from .checkpoint import open_checkpoint
    from .checkpoint_checks import check_array
    from .config import DLRMConfig
    from .model import DLRM
    with open_checkpoint(path) as stored:
        if stored.sharded:
            raise ValueError(f"{path} is a sharded checkpoint: --mmap-embeddings maps a "
                             f"single-file checkpoint (or a serving file)")
        config = DLRMConfig.from_dict(stored.config)
        _check_mappable_model(config)
        model = DLRM(config, init="none")
        stored.check(model, None, with_optimizer=False, verify=verify)
        params = stored.dense["params"]
        for name in model.params.names:
            target = model.params.views[name]
            if target.size:
                params[name].read_direct(target)
            if not verify and not np.isfinite(target).all():
                raise ValueError(f"{path}: tensor {name} holds non-finite values")
        for t in model.embeddings.tables:
            ds = params[t.name]
            check_array(ds, t.weight.shape, t.weight.dtype, f"tensor {t.name}", path)
            t.weight = None
            t.weight = map_dataset(ds, advice)
    return model

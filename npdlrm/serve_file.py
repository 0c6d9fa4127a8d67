"""The serving file: a compact inference checkpoint (`npdlrm quantize`), read by
`npdlrm predict` and `npdlrm export-onnx`.

Layout (HDF5, format "npdlrm-serve", version 1):

    /                    attrs format, format_version, npdlrm_version, created (UTC ISO
                         8601), emb_format (float32 | float16 | int8 | int4), mlp_bits
                         (32 | 16 | 8), source (the checkpoint it was made from)
    /config              JSON string: DLRMConfig.to_dict()
    /tables/<k>          table k's stored rows, (V, row_bytes) uint8 in the layout of
                         emb_format (npdlrm/quantize.py), a contiguous dataset; attr dim
    /mlp/<name>.weight   float32 / float16 / int8 (m, n), for {bottom,top}_mlp.<i>
    /mlp/<name>.scale    (m,) float32, int8 weights only
    /mlp/<name>.bias     (m,) float32

Every dataset carries attribute crc32 (zlib.crc32 of its bytes, as in checkpoints); a
load verifies it (and finite values) before building the model, unless verify=False.
The table datasets are contiguous and uncompressed, so their bytes lie at one offset of
the file (`h5py Dataset.id.get_offset()`): a memory-mapped mode can map them as they are.
The write is atomic (npdlrm.atomic): a temporary file, fsynced, renamed onto the target.
"""
import datetime
import json
import os

import h5py
import numpy as np

from . import __version__
from .atomic import atomic_h5
from .checkpoint_checks import CHECKSUM_ATTR, array_crc32, short_error, verify_dataset
from .config import DLRMConfig
from .diskspace import h5_size
from .inference import InferenceModel, mlp_names
from .quantize import QuantizedTable, table_format
from .signals import check_interrupt

FORMAT = "npdlrm-serve"
FORMAT_VERSION = 1


def _arrays(model):
    """[(dataset path, array)] of everything the file holds."""
    out = [(f"tables/{k}", t.rows) for k, t in enumerate(model.tables)]
    for name, stored in model.mlp.items():
        if name.endswith(".weight"):
            out += [(f"mlp/{name[:-len('.weight')]}.{key}", a) for key, a in stored.items()]
        else:
            out.append((f"mlp/{name}", stored))
    return out


def save_serving(path, model, source=""):
    """Write InferenceModel `model` to `path` atomically; returns the bytes of its arrays."""
    arrays = _arrays(model)
    nbytes = sum(a.nbytes for _, a in arrays)
    with atomic_h5(path, h5_size(nbytes, len(arrays) + 1)) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["npdlrm_version"] = __version__
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        f.attrs["emb_format"] = table_format(model.emb_bits).name
        f.attrs["mlp_bits"] = int(model.mlp_bits)
        f.attrs["source"] = str(source)
        f.create_dataset("config", data=json.dumps(model.config.to_dict()))
        for name, a in arrays:
            check_interrupt()
            a = np.ascontiguousarray(a)
            ds = f.create_dataset(name, data=a)
            ds.attrs[CHECKSUM_ATTR] = np.int64(array_crc32(a))
            if name.startswith("tables/"):
                ds.attrs["dim"] = int(model.tables[int(name.split("/")[1])].dim)
    return nbytes


def is_serving_file(path):
    """True when `path` is an HDF5 file of this format (any version)."""
    try:
        with h5py.File(os.fspath(path), "r") as f:
            return f.attrs.get("format") == FORMAT
    except (OSError, ValueError):
        return False


def _open(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no serving file at {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not an HDF5 file ({short_error(e)})") from None
    fmt, version = f.attrs.get("format"), f.attrs.get("format_version")
    if fmt != FORMAT or version != FORMAT_VERSION:
        f.close()
        raise ValueError(f"{path}: not an npdlrm serving file version {FORMAT_VERSION} "
                         f"(format {fmt!r}, version {version})")
    return f


def load_serving(path, verify=True, mmap=False):
    """The InferenceModel stored at `path`; every check runs before it is built.
    mmap: the tables stay in the file, mapped read-only (npdlrm.mmap_tables)."""
    with _open(path) as f:
        try:
            config = DLRMConfig.from_dict(json.loads(f["config"].asstr()[()]))
            emb_format = table_format(str(f.attrs["emb_format"]))
            mlp_bits = int(f.attrs["mlp_bits"])
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: bad header ({short_error(e)})") from None
        need = [f"tables/{k}" for k in range(config.num_tables)]
        for prefix, n in mlp_names(config):
            for i in range(n):
                need += [f"mlp/{prefix}.{i}.weight", f"mlp/{prefix}.{i}.bias"]
                if mlp_bits == 8:
                    need.append(f"mlp/{prefix}.{i}.scale")
        missing = [n for n in need if n not in f]
        if missing:
            raise ValueError(f"{path}: dataset {missing[0]} is missing")
        if verify:
            for name in need:
                verify_dataset(f[name], name, path)
        read = {}
        for name in need:
            check_interrupt()
            if mmap and name.startswith("tables/"):
                from .mmap_tables import map_dataset
                read[name] = map_dataset(f[name])  # not scanned for non-finite values
            else:
                read[name] = f[name][...]
        if not verify:
            bad = [n for n, a in read.items() if a.dtype.kind == "f" and not
                   (mmap and n.startswith("tables/")) and not np.isfinite(a).all()]
            if bad:
                raise ValueError(f"{path}: {bad[0]} holds non-finite values")
    tables = [QuantizedTable(read[f"tables/{k}"], config.embedding_dim, emb_format,
                             f"{path}: table {k}") for k in range(config.num_tables)]
    mlp = {}
    for prefix, n in mlp_names(config):
        for i in range(n):
            name = f"{prefix}.{i}"
            stored = {"weight": read[f"mlp/{name}.weight"]}
            if mlp_bits == 8:
                stored["scale"] = read[f"mlp/{name}.scale"]
            mlp[f"{name}.weight"] = stored
            mlp[f"{name}.bias"] = read[f"mlp/{name}.bias"]
    try:
        return InferenceModel(config, tables, mlp, emb_format.bits, mlp_bits)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def load_for_inference(path, emb_bits=None, mlp_bits=None, verify=True, mmap=False):
    """A model to score with from a training checkpoint or a serving file.

    Training checkpoint: the DLRM itself when no bits are given, else its InferenceModel
    (emb_bits and mlp_bits default to 32). Serving file: its model; bits other than the
    stored ones are refused (quantize again from the training checkpoint).
    mmap: the tables stay in the file, mapped read-only (npdlrm.mmap_tables); a training
    checkpoint's then only as they are stored (float32 tables and MLPs)."""
    if is_serving_file(path):
        model = load_serving(path, verify, mmap)
        for what, asked, have in (("tables", emb_bits, model.emb_bits),
                                  ("MLP weights", mlp_bits, model.mlp_bits)):
            if asked is not None and asked != have:
                raise ValueError(f"{path} holds {what} in {have} bits, {asked} were asked "
                                 f"for: quantize again from the training checkpoint")
        return model
    if mmap:
        from .mmap_tables import load_checkpoint_mapped
        if emb_bits not in (None, 32) or mlp_bits not in (None, 32):
            raise ValueError(f"{path} is a training checkpoint: its tables are mapped as they "
                             f"are stored (float32); to score mapped quantized tables, write "
                             f"a serving file with npdlrm quantize and map that")
        return load_checkpoint_mapped(path, verify)
    from .checkpoint import load_checkpoint
    model = load_checkpoint(path, with_optimizer=False, verify=verify).model
    if emb_bits is None and mlp_bits is None:
        return model
    return InferenceModel.from_model(model, 32 if emb_bits is None else emb_bits,
                                     32 if mlp_bits is None else mlp_bits)

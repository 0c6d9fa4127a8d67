"""Where the reference's processed files are, from its flags or one file name, and
their conversion to npdlrm's processed HDF5 (the readers are in reference_files)."""
import os
import re

import numpy as np

from .reference_files import BinFiles, ProcessedNpz, ReorderedDays, sniff


def _beside(folder, suffix):
    """The one file `*{suffix}` in folder, or None (none or several)."""
    try:
        names = [n for n in os.listdir(folder or ".") if n.endswith(suffix)]
    except OSError:
        return None
    return os.path.join(folder, names[0]) if len(names) == 1 else None


def _raw_names(raw_data_file, dataset):
    """(folder, stem) the reference derives its file names from: Kaggle's train.txt ->
    (dir, 'train'); Terabyte's day prefix /data/day -> ('/data', 'day')."""
    folder, name = os.path.split(os.fspath(raw_data_file))
    return folder, (name.split(".")[0] if dataset == "kaggle" else name)


def locate_reference(processed_data_file="", raw_data_file="", dataset="kaggle",
                     memory_map=False, bin_loader=False, max_ind_range=-1):
    """The reader of the reference's processed files these (reference) flags name, or None
    when they name an npdlrm file (or nothing yet). Names follow the reference:

    - bin_loader: `<processed stem>_{train,test,val}.bin`, `<raw>_fea_count.npz`;
    - memory_map with `<prefix>_0_reordered.npz` present (Kaggle prefix `<dir>/<stem>_day`,
      Terabyte `<raw>`): the day files, `<dir>/<stem>_day_count.npz`, `_fea_count.npz`;
    - processed_data_file an npz: that file, with `<dir>/<stem>_day_count.npz`.
    Count files not found under the raw name are looked for beside the data (one match)."""
    processed = os.fspath(processed_data_file or "")
    folder, stem = _raw_names(raw_data_file, dataset) if raw_data_file else ("", "")
    raw_base = os.path.join(folder, stem) if raw_data_file else ""

    def count_file(suffix, beside):
        if raw_base and os.path.isfile(raw_base + suffix):
            return raw_base + suffix
        return _beside(beside, suffix)

    if bin_loader:
        if not processed:
            raise ValueError("--mlperf-bin-loader needs --processed-data-file (the binary "
                             "files are <its name without extension>_train.bin, _test.bin)")
        d, name = os.path.split(processed)
        bin_stem = os.path.join(d, name.split(".")[0])
        if not os.path.isfile(bin_stem + "_train.bin"):
            raise ValueError(f"--mlperf-bin-loader: {bin_stem}_train.bin does not exist (the "
                             f"reference writes it from its day files with --mlperf-logging "
                             f"--memory-map; npdlrm reads the files it wrote)")
        counts = count_file("_fea_count.npz", d)
        if counts is None:
            raise ValueError(f"--mlperf-bin-loader: no table sizes: neither "
                             f"{raw_base or '<raw-data-file>'}_fea_count.npz nor one "
                             f"*_fea_count.npz beside {bin_stem}_train.bin")
        return BinFiles(bin_stem, counts, dataset, max_ind_range)
    if memory_map and raw_data_file and sniff(processed) != "hdf5":
        prefix = raw_base + "_day" if dataset == "kaggle" else os.fspath(raw_data_file)
        if os.path.isfile(f"{prefix}_0_reordered.npz"):
            d = os.path.dirname(prefix)
            days, counts = count_file("_day_count.npz", d), count_file("_fea_count.npz", d)
            if days is None or counts is None:
                raise ValueError(f"--memory-map: the day files {prefix}_*_reordered.npz need "
                                 f"{raw_base}_day_count.npz and {raw_base}_fea_count.npz")
            return ReorderedDays(prefix, days, counts, dataset, max_ind_range)
    if processed and sniff(processed) == "npz":
        days = count_file("_day_count.npz", os.path.dirname(processed))
        return ProcessedNpz(processed, days, dataset, max_ind_range)
    return None


def open_reference_file(path, raw_data_file="", dataset="kaggle", max_ind_range=-1):
    """The reader of one named reference file: `<stem>_train.bin` (its _test/_val.bin
    beside), `<prefix>_0_reordered.npz` (every day of that prefix) or a processed npz.
    Count files: `<raw>_fea_count.npz` / `_day_count.npz`, else the one beside it."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    raw_base = os.path.join(*_raw_names(raw_data_file, dataset)) if raw_data_file else ""

    def count_file(suffix):
        if raw_base and os.path.isfile(raw_base + suffix):
            return raw_base + suffix
        found = _beside(folder, suffix)
        if found is None:
            raise ValueError(f"{path}: no {suffix[1:]} (give --raw-data-file as the reference "
                             f"had it, or keep exactly one *{suffix} beside the data)")
        return found

    if path.endswith("_train.bin"):
        return BinFiles(path[:-len("_train.bin")], count_file("_fea_count.npz"), dataset,
                        max_ind_range)
    match = re.fullmatch(r"(.*)_\d+_reordered\.npz", path)
    if match:
        return ReorderedDays(match.group(1), count_file("_day_count.npz"),
                             count_file("_fea_count.npz"), dataset, max_ind_range)
    if sniff(path) != "npz":
        raise ValueError(f"{path} is not one of the reference's processed files (an npz, a "
                         f"*_N_reordered.npz day file or a *_train.bin)")
    days = (raw_base + "_day_count.npz" if raw_base and
            os.path.isfile(raw_base + "_day_count.npz") else _beside(folder, "_day_count.npz"))
    return ProcessedNpz(path, days, dataset, max_ind_range)


def to_processed(data, out, chunk_rows=32768, block_rows=1 << 20):
    """Write a reference reader's rows into npdlrm's processed HDF5 file `out` (atomic:
    written beside and renamed when complete); returns the day rows written."""
    from . import h5data
    day_rows = data.day_rows
    if data.kind == "bin":
        names = dict(zip(data._splits, day_rows))
        if "val" not in names:
            raise ValueError(f"{data.files['val']} is missing: npdlrm's file keeps the "
                             f"reference's test and validation halves of the last day")
        if names["test"] != (names["test"] + names["val"] + 1) // 2:
            raise ValueError(f"test ({names['test']} rows) and val ({names['val']} rows) are "
                             f"not the two halves of one day")
        day_rows = (names["train"], names["test"] + names["val"])
    with h5data.atomic_h5(out) as f:
        writer = h5data.RowWriter(f, data.table_sizes, int(chunk_rows))
        for lo in range(0, data.num_rows, int(block_rows)):
            dense, sparse, labels = data.read(lo, min(lo + int(block_rows), data.num_rows))
            writer.append(dense, np.stack(sparse, axis=1), labels)
        writer.close()
        h5data.write_root_attrs(f, dataset=data.dataset, table_sizes=data.table_sizes,
                                day_rows=day_rows, chunk_rows=int(chunk_rows), parts=[],
                                preprocessing=data.preprocessing)
    return day_rows

"""`npdlrm preprocess --from-reference FILE`: the reference's processed files -> npdlrm's
processed HDF5, once (no second pass over the raw data)."""


def add_arguments(p):
    p.add_argument("--from-reference", default="", metavar="FILE",
                   help="convert the reference's processed files instead of raw TSV: "
                        "kaggleAdDisplayChallenge_processed.npz (or terabyte_processed.npz), "
                        "a day file <prefix>_0_reordered.npz (all its days), or an MLPerf "
                        "<stem>_train.bin (with _test.bin and _val.bin). Table and day "
                        "counts come from <raw-data-file>_fea_count.npz / _day_count.npz, "
                        "else from the one such file beside FILE")


def run(args, err):
    """Convert; returns the exit code (2 on bad input, with one line on `err`)."""
    from ..data.reference_locate import open_reference_file, to_processed
    try:
        with open_reference_file(args.from_reference, args.raw_data_file, args.data_set,
                                 args.max_ind_range) as data:
            day_rows = to_processed(data, args.processed_data_file, args.chunk_rows)
            sizes = data.table_sizes
    except (ValueError, OSError) as e:
        print(f"npdlrm preprocess: error: {e}", file=err)
        return 2
    print(f"{args.processed_data_file}: {sum(day_rows):,} rows, day rows {list(day_rows)} "
          f"(from the reference's {args.from_reference})", file=err)
    print(f"table sizes: {list(sizes)}", file=err)
    return 0

"""`npdlrm train`'s embedding-variant flags (the reference's QR, MD and weighted pooling)
and the DLRMConfig fields they set."""


def add_embedding_flags(parser):
    """Their argument group, on `parser` (build_parser's)."""
    e = parser.add_argument_group("embedding variants (the reference's; not with MPI)")
    e.add_argument("--qr-flag", action="store_true",
                   help="quotient-remainder tables for the tables above --qr-threshold rows: "
                        "row i is composed of row i // c of a quotient table and row i %% c of "
                        "a remainder table (c: --qr-collisions)")
    e.add_argument("--qr-threshold", type=int, default=200,
                   help="tables of more rows than this become QR tables (default 200)")
    e.add_argument("--qr-operation", choices=["mult", "add", "concat"], default="mult",
                   help="how the quotient and remainder vectors combine: mult, add, or concat "
                        "(2D wide: --arch-mlp-bot must end in 2D, and every table must be "
                        "above the threshold)")
    e.add_argument("--qr-collisions", type=int, default=4,
                   help="c: rows sharing a quotient row (the remainder table's rows)")
    e.add_argument("--qr-init", choices=["symmetric", "reference"], default="symmetric",
                   help="npdlrm only: QR tables start uniform in +-sqrt(1/n) (symmetric, what "
                        "the reference documents) or in [sqrt(1/n), 1) (reference, what its "
                        "code draws)")
    e.add_argument("--md-flag", action="store_true",
                   help="mixed-dimension tables: the reference's solver gives each table "
                        "above --md-threshold rows a width d <= D, projected to D")
    e.add_argument("--md-threshold", type=int, default=200,
                   help="tables of more rows than this get mixed dimensions (default 200)")
    e.add_argument("--md-temperature", type=float, default=0.3,
                   help="alpha of the solver: d_k = D * (n_min / n_k) ** alpha (default 0.3)")
    e.add_argument("--md-round-dims", action="store_true",
                   help="round the solver's widths to powers of two")
    e.add_argument("--weighted-pooling", choices=["fixed", "learned"], default=None,
                   help="scale each row in its bag by a weight per row: fixed (ones) or "
                        "learned (starts at ones, trained)")


def check_embedding_variants(args):
    """The embedding-variant flags alone and together (the table sizes are checked with
    the model's config, once the data gives them)."""
    if args.qr_collisions < 1:
        raise ValueError(f"--qr-collisions must be at least 1, got {args.qr_collisions}")
    if not args.md_temperature >= 0:
        raise ValueError(f"--md-temperature must be >= 0, got {args.md_temperature}")
    if args.weighted_pooling is not None and (args.qr_flag or args.md_flag):
        flag = "--qr-flag" if args.qr_flag else "--md-flag"
        raise ValueError(f"--weighted-pooling {args.weighted_pooling} with {flag} is not "
                         f"supported (the reference refuses it too)")
    if args.qr_flag and args.md_flag:
        raise ValueError("--qr-flag with --md-flag is not supported: the reference hands its "
                         "QR tables the list of mixed dimensions and fails; choose one")


def embedding_variants(args):
    """The DLRMConfig fields of the embedding-variant flags."""
    return dict(qr_flag=args.qr_flag, qr_threshold=args.qr_threshold,
                qr_operation=args.qr_operation, qr_collisions=args.qr_collisions,
                md_flag=args.md_flag, md_threshold=args.md_threshold,
                md_temperature=args.md_temperature, md_round_dims=args.md_round_dims,
                weighted_pooling=args.weighted_pooling)

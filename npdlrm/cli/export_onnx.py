"""`npdlrm export-onnx`: the model of a checkpoint or serving file as an ONNX graph."""


def add_arguments(p):
    p.description = ("Write the model of a training checkpoint (or of a serving file made "
                     "by npdlrm quantize: its dequantized weights) as an ONNX graph: inputs "
                     "dense_x (B, n), offsets_k (B,) bag starts and indices_k (nnz,) per "
                     "table; output pred (B,), the click probability. Needs the onnx "
                     "package (pip install 'npdlrm[onnx]').")
    p.add_argument("--load-model", required=True,
                   help="checkpoint written by npdlrm train, or a serving file")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the CRC-32 pass over the file before loading it")
    p.add_argument("-o", "--output", required=True, help="the ONNX file to write")


def run(args, say=print):
    from ..onnx_export import export_onnx, require_onnx
    from ..serve_file import load_for_inference
    require_onnx()
    model = load_for_inference(args.load_model, verify=not args.no_verify)
    export_onnx(model, args.output)
    say(f"Wrote {args.output} (ONNX opset 17) from {args.load_model}")
    return 0


def check_save_onnx(args, local):
    """`npdlrm train --save-onnx`: refuse, before any work, what could not be written."""
    if not args.save_onnx:
        return
    from ..onnx_export import require_onnx
    require_onnx("--save-onnx")
    if not local:
        raise ValueError("--save-onnx runs in one process: export the saved checkpoint with "
                         "npdlrm export-onnx")


def save_onnx_at_end(args, model, say):
    """`npdlrm train --save-onnx FILE`: the model (as evaluated) written as ONNX."""
    if not args.save_onnx:
        return
    from ..onnx_export import export_onnx
    export_onnx(model, args.save_onnx)
    say(f"Wrote the model as ONNX to {args.save_onnx}")

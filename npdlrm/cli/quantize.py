"""`npdlrm quantize`: a compact inference checkpoint (serving file) from a checkpoint."""
from ..quantize import EMB_BITS, MLP_BITS


def add_arguments(p):
    p.description = ("Write a serving file: the model of a training checkpoint with its "
                     "embedding tables (and optionally its MLP weights) stored in fewer "
                     "bits, for `npdlrm predict` and `npdlrm export-onnx`.")
    p.add_argument("--load-model", required=True, help="checkpoint written by npdlrm train")
    p.add_argument("--bits", "--quantize-emb-with-bit", dest="bits", type=int,
                   choices=EMB_BITS, required=True,
                   help="tables: 4 or 8 (row-wise int4 / int8, a scale and bias per row), "
                        "16 (float16) or 32 (float32)")
    p.add_argument("--mlp-bits", "--quantize-mlp-with-bit", dest="mlp_bits", type=int,
                   choices=MLP_BITS, default=32,
                   help="MLP weights: 8 (int8 per output channel), 16 (float16) or 32 "
                        "(default); they are multiplied in float32")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the CRC-32 pass over the checkpoint before loading it")
    p.add_argument("-o", "--output", required=True, help="the serving file to write (.h5)")


def run(args, say=print):
    from ..checkpoint import load_checkpoint
    from ..inference import InferenceModel
    from ..serve_file import save_serving
    model = load_checkpoint(args.load_model, with_optimizer=False,
                            verify=not args.no_verify).model
    before = sum(t.weight.nbytes for t in model.embeddings.tables)
    served = InferenceModel.from_model(model, args.bits, args.mlp_bits)
    del model
    save_serving(args.output, served, source=args.load_model)
    say(f"Wrote {args.output}: {served.describe()}; the float32 tables were "
        f"{before:,} bytes ({served.table_bytes / max(before, 1):.1%}); MLPs "
        f"{served.mlp_bytes:,} bytes")
    return 0


def quantized_for_eval(args, model, local, say):
    """`npdlrm train --inference-only --quantize-*-with-bit`: the model to evaluate
    (`model` itself when both are 32). local: False in a distributed run (refused)."""
    if args.quantize_emb_with_bit == 32 and args.quantize_mlp_with_bit == 32:
        return model
    if not local:
        raise ValueError("--quantize-emb-with-bit / --quantize-mlp-with-bit run in one "
                         "process: evaluate without mpirun")
    from ..inference import InferenceModel
    served = InferenceModel.from_model(model, args.quantize_emb_with_bit,
                                       args.quantize_mlp_with_bit)
    say(f"Evaluating with {served.describe()}")
    return served

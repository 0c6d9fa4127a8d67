"""Accuracy and size of every inference format against float32 (issue 10, section 1):
table bytes, the change in AUC and log loss, and the largest per-sample probability
difference, for float16 / int8 / int4 tables and int8 MLP weights.

usage: quantized_accuracy.py CKPT criteo PROCESSED.h5 SPLIT
       quantized_accuracy.py CKPT synthetic -- <the npdlrm train flags of the run>

(the figures in docs/inference.md: a model trained by `npdlrm train --save-model CKPT`
on the Criteo sample, then `quantized_accuracy.py CKPT criteo criteo.h5 all`)
"""
import sys
import time

import numpy as np

from npdlrm.checkpoint import load_checkpoint
from npdlrm.inference import InferenceModel
from npdlrm.metrics import evaluate
from npdlrm.trainer import predict_all

ckpt, kind = sys.argv[1], sys.argv[2]
model = load_checkpoint(ckpt, with_optimizer=False).model
if kind == "criteo":
    from npdlrm.data.h5data import open_processed
    from npdlrm.data.loader import BatchLoader
    data = open_processed(sys.argv[3])
    loader = BatchLoader(data, 4096, sys.argv[4], shuffle=False)
    about = f"Criteo sample {sys.argv[3]} split {sys.argv[4]}"
else:
    from npdlrm.cli.train import synthetic_loaders
    from npdlrm.cli.train_flags import parse_train_args
    args = parse_train_args(sys.argv[4:])
    args.test_mini_batch_size = 4096
    _, loader, _, about = synthetic_loaders(args)
    about = f"synthetic held-out data ({args.test_data_size} samples)"

y, p32, _ = predict_all(model, loader)
base = evaluate(y, p32)
f32 = sum(t.weight.nbytes for t in model.embeddings.tables)
print(f"{about}: {y.size} samples; float32: AUC {base['auc']:.5f}, log loss "
      f"{base['log_loss']:.5f}, tables {f32:,} bytes")
print("| tables | MLP | table bytes | of float32 | AUC | dAUC | log loss | dlog loss | "
      "max abs dp | predict s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for emb, mlp in ((32, 32), (16, 32), (8, 32), (4, 32), (32, 16), (32, 8), (8, 8), (4, 8)):
    q = InferenceModel.from_model(model, emb, mlp)
    t0 = time.perf_counter()
    _, pq, _ = predict_all(q, loader)
    dt = time.perf_counter() - t0
    m = evaluate(y, pq)
    names = {4: "int4", 8: "int8", 16: "float16", 32: "float32"}
    print(f"| {names[emb]} | {names[mlp]} | {q.table_bytes:,} | {q.table_bytes / f32:.3f} | "
          f"{m['auc']:.5f} | {m['auc'] - base['auc']:+.6f} | {m['log_loss']:.5f} | "
          f"{m['log_loss'] - base['log_loss']:+.6f} | {np.abs(pq - p32).max():.2e} | "
          f"{dt:.2f} |")

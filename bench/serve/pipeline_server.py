"""Reference 1: what a Python user deploys: the model directory in transformers'
text-classification pipeline behind a minimal HTTP server (common.py).

    python pipeline_server.py MODEL_DIR PORT THREADS [MAX_LENGTH]

The pipeline is called the way the Hugging Face inference toolkit calls it: pipeline(inputs),
no batch_size (PIPE_BATCH_SIZE=N in the environment passes batch_size=N instead).
PIPE_QUANTIZE=int8: the best a Python user does on a CPU, torch's dynamic int8 quantisation of
every nn.Linear (torch.ao.quantization.quantize_dynamic, fbgemm), as txcat's TXCAT_SERVE_PRECISION=int8."""

import os
import sys

import torch

model_dir, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
max_length = int(sys.argv[4]) if len(sys.argv) > 4 else 512
torch.set_num_threads(threads)
torch.set_grad_enabled(False)

from transformers import pipeline  # noqa: E402  (after the thread count)

from common import serve  # noqa: E402

clf = pipeline("text-classification", model=model_dir, device="cpu")
if os.environ.get("PIPE_QUANTIZE") == "int8":
    clf.model = torch.ao.quantization.quantize_dynamic(clf.model, {torch.nn.Linear}, dtype=torch.qint8)
kwargs = {"truncation": True, "max_length": max_length}
if os.environ.get("PIPE_BATCH_SIZE"):
    kwargs["batch_size"] = int(os.environ["PIPE_BATCH_SIZE"])
clf("warm up", **kwargs)


def predict(texts):
    return [{"label": r["label"], "score": float(r["score"])} for r in clf(texts, **kwargs)]


serve(predict, port)

"""Accuracy, size and speed of an exported model dir, on the machine it runs on.

Latency is the median over single-text requests (batch 1, what an interactive caller sees);
throughput is examples/s at batch 64 over the dev set (what a batch job or a batching server
sees). Both run with torch using every core of this machine.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillray.inference import Classifier, load_for_inference


def dir_size_bytes(path: str | Path) -> int:
    """Bytes of the weight files (what a deployment ships), not of tokenizer/config files."""
    from distillray.models import resolve_model_dir

    return sum(f.stat().st_size for f in resolve_model_dir(str(path)).iterdir() if f.suffix in (".safetensors", ".bin"))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    f1s = []
    for c in range(num_labels):
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        fp = float(np.sum((y_pred == c) & (y_true != c)))
        fn = float(np.sum((y_pred != c) & (y_true == c)))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def measure_speed(clf: Classifier, texts: list[str], latency_samples: int = 100,
                  throughput_batch: int = 64, min_seconds: float = 2.0) -> dict[str, float]:
    """latency_ms (median, batch 1) and throughput (examples/s at batch 64)."""
    sample = texts[:latency_samples]
    clf.predict(sample[:4], batch_size=1)  # warm-up
    lat = []
    for t in sample:
        t0 = time.perf_counter()
        clf.predict([t], batch_size=1)
        lat.append((time.perf_counter() - t0) * 1000)
    clf.predict(texts[:throughput_batch], batch_size=throughput_batch)
    done, t0 = 0, time.perf_counter()
    while True:
        clf.predict(texts, batch_size=throughput_batch)
        done += len(texts)
        if time.perf_counter() - t0 >= min_seconds:
            break
    return {"latency_ms": statistics.median(lat), "latency_p95_ms": float(np.percentile(lat, 95)),
            "throughput": done / (time.perf_counter() - t0)}


def evaluate_dir(model_dir: str | Path, texts: list[str], labels: np.ndarray, label_names: list[str] | None = None,
                 quantize: bool = False, max_length: int | None = None, speed: bool = True,
                 threads: int | None = None) -> dict[str, Any]:
    """Everything the report and `jobs/evaluate.py` show about one model dir."""
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    clf = load_for_inference(model_dir, max_length=max_length, quantize=quantize)
    if label_names is not None and clf.labels != list(label_names):
        from distillray.errors import ModelError

        raise ModelError(f"{model_dir}: the model's labels {clf.labels} differ from the dataset's "
                         f"{list(label_names)}; fix: evaluate it on the data it was trained for")
    t0 = time.perf_counter()
    pred = clf.predict(texts)
    eval_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "model_dir": str(model_dir),
        "quantized": quantize,
        "accuracy": float(np.mean(pred == labels)),
        "rows": len(texts),
        "params": clf.num_params,
        "size_bytes": dir_size_bytes(model_dir) if not quantize else _quantized_size(clf),
        "layers": clf.model.config.num_hidden_layers,
        "eval_seconds": eval_s,
    }
    if len(clf.labels) > 2:
        out["macro_f1"] = macro_f1(labels, pred, len(clf.labels))
    if speed:
        out.update(measure_speed(clf, texts))
    return out


def _quantized_size(clf: Classifier) -> int:
    import io

    buf = io.BytesIO()
    torch.save(clf.model.state_dict(), buf)
    return buf.tell()

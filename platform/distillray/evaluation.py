"""Accuracy, size and speed of an exported model dir, on the machine it runs on.

Latency is the median over single-text requests (batch 1, what an interactive caller sees);
throughput is examples/s at batch 64 over dev texts (what a batch job or a batching server sees),
the median of several rounds. Both run with torch (or ONNX Runtime, for ONNX exports) using every
core of this machine; models that are compared (teacher, student, int8 student, ONNX variants) are
timed in alternation, never one after the other.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillray.inference import Predictor, load_for_inference
from distillray.inference_onnx import OnnxPredictor, load_onnx_for_inference


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


def paired_comparison(pred: np.ndarray, baseline_pred: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Is one model's accuracy above another's beyond chance, on the same examples? Counts the
    examples only one of them gets right, and the exact two-sided McNemar p-value: the chance of a
    split at least this uneven if each such example were a fair coin between the two models."""
    a = int(np.sum((pred == labels) & (baseline_pred != labels)))
    b = int(np.sum((pred != labels) & (baseline_pred == labels)))
    n = a + b
    p = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(a, b) + 1)) / 2 ** n) if n else 1.0
    return {"only_this_right": a, "only_baseline_right": b, "mcnemar_p": p}


def measure_speed(clfs: dict[str, Predictor | OnnxPredictor], texts: list[str], rounds: int = 5,
                  round_texts: int = 256, latency_samples: int = 100, throughput_batch: int = 64,
                  seed: int = 0) -> dict[str, dict[str, Any]]:
    """latency_ms (median, batch 1) and throughput (examples/s at batch 64) of each model, measured
    side by side so that they can be compared on a shared, noisy machine.

    The models take turns: each latency sample times every model on the same text, and each of
    `rounds` throughput rounds runs every model (in a rotated order) over the same `round_texts`
    texts. A slow spell of the machine then hits all models alike instead of one model's only
    window, and `throughput` is the median over rounds (all rounds are in `throughput_rounds`).
    """
    names = list(clfs)
    rng = np.random.default_rng(seed)
    for clf in clfs.values():  # warm-up: first calls pay one-off allocation costs
        clf.predict(texts[:4], batch_size=1)
        clf.predict(texts[:throughput_batch], batch_size=throughput_batch)
    lat: dict[str, list[float]] = {n: [] for n in names}
    for i, t in enumerate(texts[:latency_samples]):
        for n in rotated(names, i):
            t0 = time.perf_counter()
            clfs[n].predict([t], batch_size=1)
            lat[n].append((time.perf_counter() - t0) * 1000)
    thr: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        batch = texts if len(texts) <= round_texts else [texts[j] for j in rng.choice(len(texts), round_texts, replace=False)]
        for n in rotated(names, r):
            t0 = time.perf_counter()
            clfs[n].predict(batch, batch_size=throughput_batch)
            thr[n].append(len(batch) / (time.perf_counter() - t0))
    return {n: {"latency_ms": statistics.median(lat[n]), "latency_p95_ms": float(np.percentile(lat[n], 95)),
                "throughput": statistics.median(thr[n]), "throughput_rounds": [round(x, 1) for x in thr[n]]}
            for n in names}


def rotated(names: list, k: int) -> list:
    """`names` started at position k (mod its length): over len(names) turns, every item takes every place."""
    k %= len(names)
    return names[k:] + names[:k]


def evaluate_dirs(models: dict[str, str | Path], texts: list, labels: np.ndarray,
                  label_names: list[str] | None = None, quantized: tuple[str, ...] = (),
                  max_length: int | None = None, speed: bool = True, threads: int | None = None,
                  compare_to: str | None = None, onnx: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Everything the report and `jobs/evaluate.py` show about each model dir (`name -> dir`; the
    names in `quantized` are loaded with torch int8 dynamic quantisation, those in `onnx` run
    their ONNX export of that variant, e.g. {"student_onnx": "fp32"}, in ONNX Runtime). Speeds
    are measured side by side (`measure_speed`), so their ratios are fair. With `compare_to` (one
    of the names), every other model gets `vs_<that name>`: `paired_comparison` of their predictions.
    `texts` are strings, or (text, text_pair) tuples for a sentence-pair model; binary tasks also
    get `f1`, the positive class's (label id 1)."""
    from distillray.tasks.classification import positive_f1, split_items

    pairs = split_items(texts[:1])[1] is not None
    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    onnx = onnx or {}
    clfs: dict[str, Predictor | OnnxPredictor] = {}
    out, preds = {}, {}
    for name, model_dir in models.items():
        quantize = name in quantized
        if name in onnx:
            clf = clfs[name] = load_onnx_for_inference(model_dir, onnx[name], max_length, threads)
        else:
            clf = clfs[name] = load_for_inference(model_dir, max_length=max_length, quantize=quantize)
        if label_names is not None and clf.labels != list(label_names):
            from distillray.errors import ModelError

            raise ModelError(f"{model_dir}: the model's labels {clf.labels} differ from the dataset's "
                             f"{list(label_names)}; fix: evaluate it on the data it was trained for")
        task = getattr(clf, "task", "single")
        if (task == "pair") != pairs:
            from distillray.errors import ModelError

            raise ModelError(f"{model_dir}: the model was trained for data.task={task} but the data is "
                             f"{'sentence pairs' if pairs else 'single texts'}; fix: set data.task={task} "
                             "(and data.text_pair_column for pairs), or evaluate another model")
        t0 = time.perf_counter()
        pred = preds[name] = clf.predict(texts)
        eval_s = time.perf_counter() - t0
        out[name] = {
            "model_dir": str(model_dir),
            "backend": f"onnx-{onnx[name]}" if name in onnx else ("torch-int8" if quantize else "torch"),
            "quantized": quantize or onnx.get(name, "fp32") != "fp32",
            "accuracy": float(np.mean(pred == labels)),
            "rows": len(texts),
            "params": clf.num_params,
            "size_bytes": _size_bytes(clf, model_dir, quantize),
            "layers": clf.config.num_hidden_layers,
            "eval_seconds": eval_s,
        }
        if len(clf.labels) > 2:
            out[name]["macro_f1"] = macro_f1(labels, pred, len(clf.labels))
        elif len(clf.labels) == 2:
            out[name]["f1"] = positive_f1(labels, pred)
    if compare_to is not None:
        for name in [n for n in models if n != compare_to]:
            out[name][f"vs_{compare_to}"] = paired_comparison(preds[name], preds[compare_to], labels)
    if speed:
        for name, measured in measure_speed(clfs, texts).items():
            out[name].update(measured)
    return out


def _size_bytes(clf: Predictor | OnnxPredictor, model_dir: str | Path, quantize: bool) -> int:
    """Bytes a deployment ships: the weight files, the .onnx file, or the int8 state dict."""
    if isinstance(clf, OnnxPredictor):
        from distillray.models.onnx import onnx_path

        return onnx_path(model_dir, clf.variant).stat().st_size
    if not quantize:
        return dir_size_bytes(model_dir)
    import io

    buf = io.BytesIO()
    torch.save(clf.model.state_dict(), buf)
    return buf.tell()


class QAAnswerer:
    """A loaded QA model dir that answers (question, context) items, so `measure_speed` times the
    whole request path (windowing, forward passes, span decoding) as it times classifiers."""

    def __init__(self, model_dir: str | Path, quantize: bool, **decoding: int) -> None:
        from distillray.inference import quantize_int8
        from distillray.models import load_tokenizer
        from distillray.tasks.qa import load_qa_model

        self.model = load_qa_model(model_dir).eval()
        if quantize:
            self.model = quantize_int8(self.model)
        self.tokenizer = load_tokenizer(model_dir)
        self.decoding = decoding

    def predict(self, items: list[tuple[str, str]], batch_size: int = 32) -> list[dict]:
        from distillray.tasks.qa_decode import answer_questions

        return answer_questions(self.model, self.tokenizer, [q for q, _ in items], [c for _, c in items],
                                batch_size=batch_size, **self.decoding)


class OnnxQAAnswerer:
    """`QAAnswerer` through a QA model dir's ONNX export (variant: fp32, int8-dynamic,
    int8-static) in ONNX Runtime: the same windows and span decoding, the logits from the graph."""

    def __init__(self, model_dir: str | Path, variant: str, threads: int | None = None, **decoding: int) -> None:
        import functools

        from distillray.models import load_tokenizer
        from distillray.models.onnx import onnx_param_count, onnx_session, onnx_window_logits, require_onnx

        path = require_onnx(model_dir, variant)
        self.session = onnx_session(path, threads or len(os.sched_getaffinity(0)))
        self.logits = functools.partial(onnx_window_logits, self.session)
        self.path, self.tokenizer, self.decoding = path, load_tokenizer(model_dir), decoding
        self.num_params = onnx_param_count(path)

    def predict(self, items: list[tuple[str, str]], batch_size: int = 32) -> list[dict]:
        from distillray.tasks.qa_decode import answer_with

        return answer_with(self.logits, self.tokenizer, [q for q, _ in items], [c for _, c in items],
                           batch_size=batch_size, **self.decoding)


QA_THROUGHPUT_BATCH = 32  # windows per forward pass when QA throughput is timed (SQuAD's usual eval batch)


def evaluate_qa_dirs(models: dict[str, str | Path], dev: Any, quantized: tuple[str, ...] = (),
                     max_length: int = 384, doc_stride: int = 128, n_best: int = 20,
                     max_answer_length: int = 30, speed: bool = True,
                     threads: int | None = None, compare_to: str | None = None,
                     onnx: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """`evaluate_dirs` for extractive QA: the official SQuAD v1.1 exact_match and f1 (as
    fractions) over every dev question (`dev`: a `tasks.qa.QADataset`), decoded over all its
    windows; params, size, and latency / throughput (questions/s, windows batched by 32) of
    every model measured side by side. With `compare_to`, every other model gets
    `vs_<that name>`: `paired_comparison` of which questions each answers exactly. The names in
    `onnx` run their ONNX export of that variant in ONNX Runtime, as in `evaluate_dirs`."""
    from distillray.inference import count_params
    from distillray.tasks.squad_metric import exact_match_score, max_over_ground_truths, squad_scores

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    decoding = dict(max_length=max_length, doc_stride=doc_stride, n_best=n_best, max_answer_length=max_answer_length)
    items = [(ex.question, ex.context) for ex in dev.examples]
    onnx = onnx or {}
    answerers: dict[str, QAAnswerer | OnnxQAAnswerer] = {}
    out: dict[str, dict[str, Any]] = {}
    exact: dict[str, np.ndarray] = {}
    for name, model_dir in models.items():
        quantize = name in quantized
        if name in onnx:
            qa = answerers[name] = OnnxQAAnswerer(model_dir, onnx[name], threads, **decoding)
        else:
            qa = answerers[name] = QAAnswerer(model_dir, quantize, **decoding)
        t0 = time.perf_counter()
        answers = qa.predict(items, QA_THROUGHPUT_BATCH)
        eval_s = time.perf_counter() - t0
        scores = squad_scores({ex.id: a["answer"] for ex, a in zip(dev.examples, answers)}, dev.gold())
        exact[name] = np.array([bool(max_over_ground_truths(exact_match_score, a["answer"], ex.answers))
                                for ex, a in zip(dev.examples, answers)])
        if isinstance(qa, OnnxQAAnswerer):
            size, params, backend = qa.path.stat().st_size, qa.num_params, f"onnx-{onnx[name]}"
            quantize = onnx[name] != "fp32"
        else:
            size, params, backend = dir_size_bytes(model_dir), count_params(qa.model), "torch"
            if quantize:
                import io

                buf = io.BytesIO()
                torch.save(qa.model.state_dict(), buf)
                size, backend = buf.tell(), "torch-int8"
        from distillray.models import model_config

        out[name] = {"model_dir": str(model_dir), "backend": backend,
                     "quantized": quantize, "exact_match": scores["exact_match"] / 100, "f1": scores["f1"] / 100,
                     "rows": len(items), "params": params, "size_bytes": size,
                     "layers": model_config(model_dir).num_hidden_layers, "eval_seconds": eval_s,
                     "throughput_batch": QA_THROUGHPUT_BATCH}
    if compare_to is not None:
        for name in [n for n in models if n != compare_to]:
            out[name][f"vs_{compare_to}"] = paired_comparison(exact[name], exact[compare_to], np.ones(len(items), bool))
    if speed:
        for name, measured in measure_speed(answerers, items, throughput_batch=QA_THROUGHPUT_BATCH).items():
            out[name].update(measured)
    return out

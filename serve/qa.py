"""The QuestionAnswerer deployment: one exported extractive-QA model dir (architecture
`*ForQuestionAnswering`) behind dynamic batching (`@serve.batch`) across concurrent requests. As
the Classifier, no HTTP here: the `Api` ingress validates `POST /v1/answer` and calls `answer`
through a deployment handle.

Each (question, context) is read in windows of `max_length` tokens overlapping by `doc_stride` (a
context longer than one window is read in several), and the best span over all its windows is
decoded (`tasks.qa_decode.answer_questions`, after Hugging Face's `run_qa` post-processing); the
sizes come in `settings["qa"]` (`tasks.qa.answering_windows`, checked in serve/app.py). With
serve.backend=onnx the dir's export runs in ONNX Runtime (int8-dynamic with serve.quantize=true);
windows and decoding are the same code.

No `from __future__ import annotations` here: Serve pickles the decorated class by value.
"""

import functools
import logging
from typing import Any

from ray import serve

from distillray import storage
from serve.batching import split_like
from serve.classifier import provenance

logger = logging.getLogger("ray.serve")


@serve.deployment(name="QuestionAnswerer", health_check_period_s=5, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=5)
class QuestionAnswerer:
    def __init__(self, settings: dict) -> None:
        import torch
        from ray.util.metrics import Histogram

        from distillray.inference import count_params, pick_device, quantize_int8
        from distillray.models import content_hash, load_tokenizer
        from distillray.tasks.qa import load_qa_model

        threads = max(1, int(settings["cpus_per_replica"]))
        torch.set_num_threads(threads)
        path = settings["model"]
        backend = settings.get("backend", "torch")
        self.device = pick_device(settings.get("use_gpu", False))
        if backend == "onnx":  # ONNX Runtime on the dir's export; serve/app.py checked that it exists
            from distillray.models.onnx import onnx_param_count, onnx_session, onnx_window_logits, require_onnx

            export = require_onnx(path, "int8-dynamic" if settings["quantize"] else "fp32")
            self.logits = functools.partial(onnx_window_logits, onnx_session(export, threads))
            params = onnx_param_count(export)
        else:
            from distillray.tasks.qa_decode import window_logits

            model = load_qa_model(path).eval()
            if settings["quantize"]:
                if self.device.type != "cpu":
                    raise ValueError("int8 dynamic quantisation runs on CPU only; set workers.use_gpu=false")
                model = quantize_int8(model)
            model = model.to(self.device)
            self.logits = functools.partial(window_logits, model)
            params = count_params(model)
        self.tokenizer = load_tokenizer(path)
        self.windows = dict(settings["qa"])  # max_length, doc_stride, max_answer_length, n_best
        self.model_id = (f"{storage.split(path)[1]}@{content_hash(path)[:12]}" + ("+onnx" if backend == "onnx" else "")
                         + ("+int8" if settings["quantize"] else ""))
        self.info = {"model": self.model_id, "path": str(path), "labels": [], "task": "qa",
                     "params": params, "max_length": self.windows["max_length"],
                     "doc_stride": self.windows["doc_stride"], "max_answer_length": self.windows["max_answer_length"],
                     "quantized": settings["quantize"], "backend": backend, **provenance(path)}
        # windows per forward pass: each is up to max_length tokens, so fewer than a classifier's texts
        on_gpu = backend == "torch" and self.device.type == "cuda"
        self.chunk = settings.get("forward_chunk") or (settings["max_batch_size"] if on_gpu else 8)
        self.batch_size = Histogram("distillray_serve_batch_size", "texts per forward pass",
                                    boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256], tag_keys=("model",))
        self.answer_batch.set_max_batch_size(settings["max_batch_size"])
        self.answer_batch.set_batch_wait_timeout_s(settings["model_batch_wait_timeout_s"])
        self._forward([("warm up?", "warm up")])  # one-off costs (and the fast-tokenizer check), not the first client's
        logger.info("serving %s (question answering, %d params)", self.model_id, self.info["params"])

    def model_info(self) -> dict:
        return self.info

    async def answer(self, items: list) -> list:
        """{answer, score, start, end} for each (question, context) (batched with other concurrent calls)."""
        return await self.answer_batch(items)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def answer_batch(self, requests: list) -> list:
        """One pass over every question of every call queued when the model is free: on the event
        loop, as the Classifier's, so that calls arriving meanwhile form the next batch."""
        flat = [item for items in requests for item in items]
        self.batch_size.observe(len(flat), tags={"model": self.model_id})
        return split_like(requests, self._forward(flat))

    def _forward(self, items: list) -> list[dict[str, Any]]:
        from distillray.tasks.qa_decode import answer_with

        return answer_with(self.logits, self.tokenizer, [q for q, _ in items], [c for _, c in items],
                           batch_size=self.chunk, **self.windows)

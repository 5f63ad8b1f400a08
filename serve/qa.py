"""The QuestionAnswerer deployment: one exported extractive-QA model dir (architecture
`*ForQuestionAnswering`) behind dynamic batching (`@serve.batch`) across concurrent requests. As
the Classifier, no HTTP here: the `Api` ingress validates `POST /v1/answer` and calls `answer`
through a deployment handle.

Each (question, context) is read in windows of `window` tokens overlapping by `stride` (a context
longer than one window is read in several), and the best span over all its windows is decoded
(`tasks.qa_decode.answer_questions`, after Hugging Face's `run_qa` post-processing).

No `from __future__ import annotations` here: Serve pickles the decorated class by value.
"""

import logging
from typing import Any

from ray import serve

from distillray import storage
from serve.batching import split_like
from serve.classifier import provenance

logger = logging.getLogger("ray.serve")

WINDOW = 384  # tokens per window (run_qa's max_seq_length), or the model's position limit if lower
MAX_ANSWER_LENGTH = 30  # tokens (run_qa's max_answer_length)


def window_sizes(max_positions: int) -> tuple[int, int]:
    """(window, stride) for a model of `max_positions` positions: 384 / 128 as run_qa (stride a
    third of the window), smaller windows for smaller models."""
    window = min(WINDOW, max_positions)
    return window, window // 3


@serve.deployment(name="QuestionAnswerer", health_check_period_s=5, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=5)
class QuestionAnswerer:
    def __init__(self, settings: dict) -> None:
        import torch
        from ray.util.metrics import Histogram

        from distillray.inference import count_params, pick_device, quantize_int8
        from distillray.models import content_hash, load_tokenizer
        from distillray.tasks.qa import load_qa_model

        torch.set_num_threads(max(1, int(settings["cpus_per_replica"])))
        path = settings["model"]
        self.device = pick_device(settings.get("use_gpu", False))
        model = load_qa_model(path).eval()
        if settings["quantize"]:
            if self.device.type != "cpu":
                raise ValueError("int8 dynamic quantisation runs on CPU only; set workers.use_gpu=false")
            model = quantize_int8(model)
        self.model = model.to(self.device)
        self.tokenizer = load_tokenizer(path)
        self.window, self.stride = window_sizes(model.config.max_position_embeddings)
        self.model_id = f"{storage.split(path)[1]}@{content_hash(path)[:12]}" + ("+int8" if settings["quantize"] else "")
        self.info = {"model": self.model_id, "path": str(path), "labels": [], "task": "qa",
                     "params": count_params(self.model), "max_length": self.window, "doc_stride": self.stride,
                     "max_answer_length": MAX_ANSWER_LENGTH, "quantized": settings["quantize"], **provenance(path)}
        # windows per forward pass: each is up to `window` tokens, so fewer than a classifier's texts
        self.chunk = settings.get("forward_chunk") or (settings["max_batch_size"] if self.device.type == "cuda" else 8)
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
        from distillray.tasks.qa_decode import answer_questions

        return answer_questions(self.model, self.tokenizer, [q for q, _ in items], [c for _, c in items],
                                max_length=self.window, doc_stride=self.stride,
                                max_answer_length=MAX_ANSWER_LENGTH, batch_size=self.chunk)

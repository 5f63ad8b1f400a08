"""The Classifier deployment: one exported model dir (student or teacher) behind dynamic batching
(`@serve.batch`) across concurrent requests. No HTTP here: the `Api` ingress (serve/api.py)
validates requests and calls `classify` through a deployment handle, so it can resend a request
to another replica when this one dies mid-request.

No `from __future__ import annotations` here: Serve pickles the decorated class by value.
"""

import json
import logging
from typing import Any

from ray import serve

from distillray import storage
from serve.batching import split_like

logger = logging.getLogger("ray.serve")


def provenance(model_dir: Any) -> dict:
    """Teacher, retention and speedup from the run that made this model, when it was distillray's."""
    from distillray import storage

    out: dict = {}
    marker = storage.join(model_dir, "distillray.json")
    if storage.is_file(marker):
        m = json.loads(storage.read_bytes(marker))
        out.update(distilled_from=m.get("teacher"), retention=m.get("retention"), speedup=m.get("speedup"))
    parent, name = storage.split(model_dir)
    report = storage.join(parent, "report.json")
    if name == "student" and storage.is_file(report):
        r = json.loads(storage.read_bytes(report))
        out.update(retention=r.get("retention"), speedup=r.get("speedup"),
                   student_accuracy=r.get("student", {}).get("accuracy"),
                   teacher_accuracy=r.get("teacher", {}).get("accuracy"))
        out.setdefault("distilled_from", r.get("config", {}).get("teacher", {}).get("model"))
    return out


@serve.deployment(name="Classifier", health_check_period_s=5, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=5)
class Classifier:
    def __init__(self, settings: dict) -> None:
        import torch
        from ray.util.metrics import Histogram

        from distillray.inference import load_for_inference
        from distillray.models import content_hash

        threads = max(1, int(settings["cpus_per_replica"]))
        torch.set_num_threads(threads)
        path = settings["model"]
        backend = settings.get("backend", "torch")
        if backend == "onnx":  # ONNX Runtime on the dir's export; serve/app.py checked that it exists
            from distillray.inference_onnx import load_onnx_for_inference

            self.clf = load_onnx_for_inference(path, "int8-dynamic" if settings["quantize"] else "fp32",
                                               threads=threads)
        else:
            self.clf = load_for_inference(path, quantize=settings["quantize"], use_gpu=settings.get("use_gpu", False))
        # the dir's name (an s3:// URI's query string is not part of it), its content hash, its form
        self.model_id = (f"{storage.split(path)[1]}@{content_hash(path)[:12]}" + ("+onnx" if backend == "onnx" else "")
                         + ("+int8" if settings["quantize"] else ""))
        self.info = {"model": self.model_id, "path": str(path), "labels": self.clf.labels, "task": self.clf.task,
                     "params": self.clf.num_params, "max_length": self.clf.max_length,
                     "quantized": settings["quantize"], "backend": backend, **provenance(path)}
        on_gpu = backend == "torch" and self.clf.device.type == "cuda"
        self.chunk = settings.get("forward_chunk") or (settings["max_batch_size"] if on_gpu else 8)
        self.batch_size = Histogram("distillray_serve_batch_size", "texts per forward pass",
                                    boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256], tag_keys=("model",))
        self.classify_batch.set_max_batch_size(settings["max_batch_size"])
        self.classify_batch.set_batch_wait_timeout_s(settings["model_batch_wait_timeout_s"])
        self.clf.predict([("warm", "up")] if self.clf.task == "pair" else ["warm up"])  # one-off costs, not the first client's
        logger.info("serving %s (%d params, labels %s)", self.model_id, self.clf.num_params, self.clf.labels)

    def model_info(self) -> dict:
        return self.info

    async def classify(self, texts: list) -> list:
        """Probabilities per label for each text, or (text, text_pair) pair (batched with other
        concurrent calls)."""
        return await self.classify_batch(texts)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def classify_batch(self, requests: list) -> list:
        """One forward pass over every text of every call queued when the model is free.

        By default no wait for the batch to fill (serve.model_batch_wait_timeout_s=0): the `Api`
        already waited serve.batch_wait_timeout_s to gather requests into each call, and while a
        forward pass runs, new calls queue and form the next batch. With a 5 ms wait here too, the
        gap between two forward passes had a median of ~24 ms and the student's replica sat idle
        18% of the time under 32 clients (10% for the teacher); with none, 6-14 ms and 4-11%.
        """
        flat = [t for texts in requests for t in texts]
        self.batch_size.observe(len(flat), tags={"model": self.model_id})
        # On the replica's event loop, not a worker thread: while a forward pass runs, new requests
        # wait in Serve's queue and all join the next batch. (From a thread, the forward contended
        # with the loop for the GIL and batches stayed at 1-3 texts under 32 concurrent clients.)
        return split_like(requests, self._forward(flat))

    def _forward(self, texts: list) -> list:
        return self.clf.predict_proba(texts, batch_size=self.chunk).tolist()

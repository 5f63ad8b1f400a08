"""Classification through a model dir's ONNX export in ONNX Runtime (CPU): `OnnxPredictor` has
`inference.Predictor`'s interface, so evaluation and the benchmarks time either side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from distillray.inference import softmax
from distillray.models import load_tokenizer, model_config
from distillray.models.onnx import onnx_logits, onnx_param_count, onnx_session, require_onnx
from distillray.tasks.classification import model_task, tokenize


@dataclass
class OnnxPredictor:
    """A model dir's ONNX export (`distillray.models.onnx`) in ONNX Runtime on CPU, with
    `Predictor`'s interface, so that evaluation and the benchmarks can use either."""

    session: Any  # onnxruntime.InferenceSession
    tokenizer: PreTrainedTokenizerBase
    config: PretrainedConfig
    max_length: int
    path: str
    variant: str
    num_params: int

    @property
    def labels(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.config.num_labels)]

    @property
    def task(self) -> str:
        """single or pair (recorded in the model's config): a pair export also takes token_type_ids."""
        return model_task(self.config)

    def predict_proba(self, texts: list, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (rows, num_labels) for raw texts, or (text, text_pair) pairs: the
        same tokenisation and length-sorted, padded-to-the-longest batches as `Predictor.predict_proba`."""
        seqs, types = tokenize(self.tokenizer, texts, self.max_length)
        logits = onnx_logits(self.session, seqs, batch_size, self.tokenizer.pad_token_id or 0, types)
        return softmax(logits)

    def predict(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Predicted label ids (rows,)."""
        return self.predict_proba(texts, batch_size).argmax(-1)



def load_onnx_for_inference(model_dir: str | Path, variant: str = "fp32", max_length: int | None = None,
                            threads: int | None = None) -> OnnxPredictor:
    """Load a model dir's ONNX export (variant: fp32, int8-dynamic, int8-static) in ONNX Runtime,
    with `threads` intra-op threads (default: every core this process may use)."""
    path = require_onnx(model_dir, variant)
    session = onnx_session(path, threads or len(os.sched_getaffinity(0)))
    cfg = model_config(model_dir)
    params = onnx_param_count(path)
    limit = max_length or min(getattr(cfg, "max_position_embeddings", 512), 512)
    return OnnxPredictor(session=session, tokenizer=load_tokenizer(model_dir), config=cfg, max_length=limit,
                          path=str(model_dir), variant=variant, num_params=params)

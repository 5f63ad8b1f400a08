"""DistilBERT-style students: the teacher's width and embeddings, a subset of its layers.

The student is a fresh model of the teacher's architecture with `len(layers)` encoder layers,
whose weights are copied from the teacher: embeddings, the chosen encoder layers (student layer
j <- teacher layer layers[j]), and everything else (pooler, classifier head). This works for the
BERT family (BERT, RoBERTa, DistilBERT, ELECTRA, MiniLM...) whose encoder layers are named
`....layer.<i>.`.
"""

from __future__ import annotations

import copy
import re

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from distillray.errors import ConfigError, ModelError

_LAYER_KEY = re.compile(r"^(?P<pre>.*\.layer\.)(?P<idx>\d+)(?P<post>\..*)$")


def default_layers(num_teacher_layers: int) -> list[int]:
    """Every other layer, starting at 0: [0, 2, 4] of 6, as DistilBERT took from BERT."""
    return list(range(0, num_teacher_layers, 2))


def check_layers(layers: list[int], num_teacher_layers: int) -> None:
    if len(layers) > num_teacher_layers:
        raise ConfigError(
            f"config error: student.layers={layers} has {len(layers)} layers but the teacher has "
            f"only {num_teacher_layers}; fix: pick at most {num_teacher_layers}, e.g. "
            f"student.layers={default_layers(num_teacher_layers)}"
        )
    bad = [i for i in layers if not 0 <= i < num_teacher_layers]
    if bad:
        raise ConfigError(
            f"config error: student.layers={layers}: index {bad[0]} is outside the teacher's "
            f"layers 0..{num_teacher_layers - 1}; fix: e.g. "
            f"student.layers={default_layers(num_teacher_layers)}"
        )


def layer_map(layers: list[int]) -> dict[int, int]:
    """teacher layer index -> student layer index."""
    return {t: s for s, t in enumerate(layers)}


def build_student(teacher: PreTrainedModel, layers: list[int] | None = None,
                  auto_class: type = AutoModelForSequenceClassification) -> PreTrainedModel:
    """A student initialised from `teacher`'s embeddings, chosen layers and head; `auto_class`
    names the head (e.g. AutoModelForQuestionAnswering for a QA teacher)."""
    n = teacher.config.num_hidden_layers
    layers = default_layers(n) if layers is None else list(layers)
    check_layers(layers, n)
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = len(layers)
    cfg.architectures = [type(teacher).__name__]
    student = auto_class.from_config(cfg)
    mapping = layer_map(layers)
    src = teacher.state_dict()
    dst = student.state_dict()
    new_state = {}
    for key, value in src.items():
        m = _LAYER_KEY.match(key)
        if m:
            t_idx = int(m["idx"])
            if t_idx not in mapping:
                continue
            key = f"{m['pre']}{mapping[t_idx]}{m['post']}"
        if key in dst:
            new_state[key] = value.detach().clone()
    missing = [k for k in dst if k not in new_state]
    if missing:
        raise ModelError(
            f"cannot build a student from {type(teacher).__name__}: {len(missing)} student weights "
            f"have no teacher source (e.g. {missing[0]}); only BERT-family models whose layers are "
            "named '...layer.<i>.' are supported"
        )
    with torch.no_grad():
        student.load_state_dict(new_state, strict=True)
    return student


def freeze_word_embeddings(model: PreTrainedModel) -> None:
    """Stop training the word-embedding matrix (vocab x hidden, the teacher's copy in a student):
    no gradient, so no optimizer state and no clipping or ZeRO bookkeeping for it. Position and
    token-type embeddings still train."""
    model.get_input_embeddings().weight.requires_grad_(False)

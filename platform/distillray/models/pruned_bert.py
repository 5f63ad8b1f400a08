"""A BERT whose layers may have different numbers of attention heads and FFN neurons: what
structured pruning (`distillray.models.prune`) leaves behind, saved as a genuinely smaller model.

transformers 5.x dropped `config.pruned_heads` and `PreTrainedModel.prune_heads`, so a plain
`BertForSequenceClassification` always builds `num_attention_heads` heads of
`hidden_size / num_attention_heads` dims in every layer and cannot load a checkpoint whose Linear
layers were shrunk. `PrunedBertConfig` (model_type "pruned_bert") records the per-layer sizes and
`PrunedBertForSequenceClassification` builds those shapes; both are registered with `AutoConfig`
and `AutoModelForSequenceClassification` when `distillray.models` is imported, so
`AutoModelForSequenceClassification.from_pretrained(dir)` loads a head-pruned dir after
`import distillray.models` (`PrunedBertForQuestionAnswering` and `AutoModelForQuestionAnswering`
likewise for a span model). A dir whose layers are all alike (FFN-only pruning with one fraction
per layer) is saved as a plain BERT instead and needs nothing from distillray.

BERT's self-attention reshapes with `view(..., -1, head_size)`, so fewer heads need no change to
its forward: only the Linear shapes differ.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
)

MODEL_TYPE = "pruned_bert"


@strict
class PrunedBertConfig(BertConfig):
    """BertConfig plus per-layer sizes: `layer_heads[i]` heads (of hidden_size /
    num_attention_heads dims each) and `layer_intermediate[i]` FFN neurons in layer i."""

    model_type = MODEL_TYPE

    layer_heads: list[int] | None = None
    layer_intermediate: list[int] | None = None


def resize_layer(layer: nn.Module, heads: int, intermediate: int, head_size: int) -> None:
    """Give one BertLayer `heads` heads and `intermediate` FFN neurons: fresh Linear layers of
    those shapes, whose weights a checkpoint (or the pruned model's state dict) then fills."""
    att, hidden = layer.attention.self, layer.attention.output.dense.out_features
    width = heads * head_size
    dev, dt = att.query.weight.device, att.query.weight.dtype
    for name in ("query", "key", "value"):
        setattr(att, name, nn.Linear(hidden, width, device=dev, dtype=dt))
    att.num_attention_heads, att.all_head_size = heads, width
    layer.attention.output.dense = nn.Linear(width, hidden, device=dev, dtype=dt)
    layer.intermediate.dense = nn.Linear(hidden, intermediate, device=dev, dtype=dt)
    layer.output.dense = nn.Linear(intermediate, hidden, device=dev, dtype=dt)


def resize_encoder(model: nn.Module, config: PrunedBertConfig) -> None:
    """Give each layer of `model.bert` the head and FFN sizes `config` lists for it."""
    head_size = config.hidden_size // config.num_attention_heads
    n = config.num_hidden_layers
    heads = config.layer_heads or [config.num_attention_heads] * n
    inter = config.layer_intermediate or [config.intermediate_size] * n
    with torch.no_grad():
        for layer, h, m in zip(model.bert.encoder.layer, heads, inter):
            if h != config.num_attention_heads or m != config.intermediate_size:
                resize_layer(layer, h, m, head_size)


class PrunedBertForSequenceClassification(BertForSequenceClassification):
    """BertForSequenceClassification with per-layer head and FFN sizes from `PrunedBertConfig`."""

    config_class = PrunedBertConfig

    def __init__(self, config: PrunedBertConfig) -> None:
        super().__init__(config)
        resize_encoder(self, config)


class PrunedBertForQuestionAnswering(BertForQuestionAnswering):
    """BertForQuestionAnswering (start/end span head) with per-layer sizes from `PrunedBertConfig`."""

    config_class = PrunedBertConfig

    def __init__(self, config: PrunedBertConfig) -> None:
        super().__init__(config)
        resize_encoder(self, config)


def register() -> None:
    """Make the Auto classes know model_type "pruned_bert" (idempotent)."""
    AutoConfig.register(MODEL_TYPE, PrunedBertConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(PrunedBertConfig, PrunedBertForSequenceClassification, exist_ok=True)
    AutoModelForQuestionAnswering.register(PrunedBertConfig, PrunedBertForQuestionAnswering, exist_ok=True)

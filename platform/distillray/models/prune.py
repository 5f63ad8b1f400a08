"""Pruning BERT classifiers and span (QA) models: structured (whole attention heads and FFN neurons, physically
removed, so the model is smaller and faster) and unstructured (single weights zeroed, for
comparison). Pure torch / transformers: nothing here knows about Ray.

Head importance follows Michel et al. 2019, "Are Sixteen Heads Really Better than One?" (and
HF's examples/research_projects/bertology/run_bertology.py): |dL/d gate| for a gate of 1 on each
head's output, summed over batches, then L2-normalised within each layer. transformers 5.x
removed BERT's `head_mask` argument, so the gate is applied by a forward hook on each
self-attention module (multiplying each head's context vectors) instead of through `head_mask`.
FFN neuron importance is the same first-order Taylor score with a gate on each intermediate
neuron's activation, i.e. |sum over tokens of activation * dL/d activation| (Molchanov et al. 2017).
L is the task loss, as Michel et al. use: cross-entropy on the labels, or for extractive QA the
mean of the start and end cross-entropies on the gold positions (the fine-tuning loss).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, PreTrainedModel

from distillray.errors import ConfigError, ModelError
from distillray.models.pruned_bert import (
    PrunedBertConfig,
    PrunedBertForQuestionAnswering,
    PrunedBertForSequenceClassification,
    resize_layer,
)

logger = logging.getLogger(__name__)

SCOPES = ("global", "layer")


@dataclass(frozen=True)
class Importance:
    """heads: (layers, heads) Michel et al. scores; ffn: one (neurons,) score vector per layer."""

    heads: torch.Tensor
    ffn: list[torch.Tensor]


def check_fraction(name: str, fraction: float) -> None:
    """A pruning fraction must be in [0, 1): 1 would remove everything."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"{name} must be a fraction in [0, 1) of what to remove, got {fraction!r}; "
                          f"fix: e.g. {name}=0.5")


def _layers(model: PreTrainedModel) -> nn.ModuleList:
    bert = getattr(model, "bert", None)
    if bert is None or not hasattr(bert, "encoder"):
        raise ModelError(f"structured pruning supports BERT classifiers and span models (model_type bert), got "
                         f"{type(model).__name__}; fix: prune a BERT-family model dir")
    return bert.encoder.layer


def head_size(model: PreTrainedModel) -> int:
    return model.config.hidden_size // model.config.num_attention_heads


def layer_sizes(model: PreTrainedModel) -> tuple[list[int], list[int]]:
    """(heads per layer, FFN neurons per layer) of a possibly pruned BERT."""
    layers = _layers(model)
    d = head_size(model)
    return ([lyr.attention.self.query.out_features // d for lyr in layers],
            [lyr.intermediate.dense.out_features for lyr in layers])


def importance_scores(model: PreTrainedModel, batches: Iterable[dict[str, torch.Tensor]]) -> Importance:
    """Head and FFN-neuron importance of a classifier on labelled batches (input_ids,
    attention_mask, labels), from the cross-entropy on the hard labels (a KD loss against the
    model's own teacher logits would have a zero gradient at the unpruned model); of a span
    model on QA window batches (`collate_qa`: token_type_ids, answer_mask, start/end_positions),
    from the start/end cross-entropy over [CLS] and the context tokens."""
    layers = _layers(model)
    d = head_size(model)
    heads, inter = layer_sizes(model)
    head_gates = [torch.ones(h, requires_grad=True) for h in heads]
    ffn_gates = [torch.ones(m, requires_grad=True) for m in inter]

    def gate_heads(i: int):
        def hook(_mod, _inp, out):
            ctx = out[0]  # (batch, seq, heads * head_size)
            gated = (ctx.view(*ctx.shape[:-1], -1, d) * head_gates[i].view(-1, 1)).view(ctx.shape)
            return (gated, *out[1:])
        return hook

    def gate_ffn(i: int):
        return lambda _mod, _inp, out: out * ffn_gates[i]  # (batch, seq, neurons)

    hooks = [h for i, lyr in enumerate(layers) for h in (
        lyr.attention.self.register_forward_hook(gate_heads(i)),
        lyr.intermediate.register_forward_hook(gate_ffn(i)))]
    was_training = model.training
    needs_grad = {p: p.requires_grad for p in model.parameters()}
    head_acc = torch.zeros(len(heads), max(heads))
    ffn_acc = [torch.zeros(m) for m in inter]
    n = 0
    try:
        model.eval()  # no dropout: the score is of the model as deployed
        for p in model.parameters():
            p.requires_grad_(False)  # only the gates need gradients
        for batch in batches:
            loss = task_loss(model, batch)
            grads = torch.autograd.grad(loss, head_gates + ffn_gates)
            for i, h in enumerate(heads):
                head_acc[i, :h] += grads[i].abs()
            for i, g in enumerate(grads[len(heads):]):
                ffn_acc[i] += g.abs()
            n += 1
    finally:
        for h in hooks:
            h.remove()
        for p, req in needs_grad.items():
            p.requires_grad_(req)
        model.train(was_training)
    if n == 0:
        raise ValueError("importance_scores needs at least one batch")
    # Michel et al.: normalise each layer's scores to unit L2 norm, so layers compare globally
    head_acc = head_acc / (head_acc.norm(dim=1, keepdim=True) + 1e-20)
    ffn_acc = [f / (f.norm() + 1e-20) for f in ffn_acc]
    return Importance(heads=head_acc, ffn=ffn_acc)


def task_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss the model was fine-tuned with, on one batch: label CE, or (QA windows) the start
    and end CE on the gold positions (`losses.qa_distill_loss` with hard labels only)."""
    if "start_positions" in batch:
        from distillray.losses import LossWeights, qa_distill_loss

        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"])
        return qa_distill_loss(out.start_logits, out.end_logits, batch["start_positions"], batch["end_positions"],
                               LossWeights.hard_labels(), mask=batch["answer_mask"])[0]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=batch.get("token_type_ids"))
    return nn.functional.cross_entropy(out.logits, batch["labels"])


def lowest(scores: list[torch.Tensor], fraction: float, scope: str, name: str = "fraction") -> list[list[int]]:
    """Indexes to remove per layer: the `fraction` lowest-scoring units, over all layers
    (`global`) or in each layer (`layer`), always keeping at least one unit per layer."""
    check_fraction(name, fraction)
    if scope not in SCOPES:
        raise ConfigError(f"pruning scope must be one of {SCOPES}, got {scope!r}; fix: e.g. prune.scope=global")
    if scope == "layer":
        return [sorted(torch.argsort(s)[:min(round(fraction * len(s)), len(s) - 1)].tolist()) for s in scores]
    total = sum(len(s) for s in scores)
    want = round(fraction * total)
    flat = sorted(((float(v), i, j) for i, s in enumerate(scores) for j, v in enumerate(s.tolist())))
    left = [len(s) for s in scores]
    out: list[list[int]] = [[] for _ in scores]
    for _, i, j in flat:
        if want == 0:
            break
        if left[i] > 1:
            out[i].append(j)
            left[i] -= 1
            want -= 1
    return [sorted(x) for x in out]


def _keep(n: int, drop: list[int]) -> torch.Tensor:
    gone = set(drop)
    return torch.tensor([i for i in range(n) if i not in gone], dtype=torch.long)


def _rows(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(lin.in_features, len(idx), device=lin.weight.device, dtype=lin.weight.dtype)
    new.weight.data.copy_(lin.weight.data[idx])
    new.bias.data.copy_(lin.bias.data[idx])
    return new


def _cols(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(idx), lin.out_features, device=lin.weight.device, dtype=lin.weight.dtype)
    new.weight.data.copy_(lin.weight.data[:, idx])
    new.bias.data.copy_(lin.bias.data)
    return new


@torch.no_grad()
def prune_heads_(model: PreTrainedModel, drop: list[list[int]]) -> PreTrainedModel:
    """Remove heads in place: `drop[i]` lists layer i's head indexes. Query, key and value lose
    those heads' output rows, the attention output dense their input columns."""
    layers, d = _layers(model), head_size(model)
    heads, _ = layer_sizes(model)
    for lyr, h, gone in zip(layers, heads, drop):
        if not gone:
            continue
        keep_heads = _keep(h, gone)
        if len(keep_heads) == 0:
            raise ValueError("prune_heads_ would remove every head of a layer; keep at least one")
        idx = (keep_heads[:, None] * d + torch.arange(d)).reshape(-1)
        att = lyr.attention.self
        att.query, att.key, att.value = _rows(att.query, idx), _rows(att.key, idx), _rows(att.value, idx)
        att.num_attention_heads, att.all_head_size = len(keep_heads), len(idx)
        lyr.attention.output.dense = _cols(lyr.attention.output.dense, idx)
    model.config = pruned_config(model)
    return model


@torch.no_grad()
def prune_ffn_(model: PreTrainedModel, drop: list[list[int]]) -> PreTrainedModel:
    """Remove FFN neurons in place: `drop[i]` lists layer i's intermediate neuron indexes."""
    _, inter = layer_sizes(model)
    for lyr, m, gone in zip(_layers(model), inter, drop):
        if not gone:
            continue
        idx = _keep(m, gone)
        if len(idx) == 0:
            raise ValueError("prune_ffn_ would remove every FFN neuron of a layer; keep at least one")
        lyr.intermediate.dense = _rows(lyr.intermediate.dense, idx)
        lyr.output.dense = _cols(lyr.output.dense, idx)
    model.config = pruned_config(model)
    return model


def pruned_config(model: PreTrainedModel) -> BertConfig:
    """The config that rebuilds this model's shapes: a plain BertConfig when every layer has all
    its heads and the same FFN width, else a PrunedBertConfig with per-layer sizes."""
    cfg = model.config
    full = cfg.hidden_size // head_size(model)
    heads, inter = layer_sizes(model)
    base = {k: v for k, v in cfg.to_dict().items()
            if k not in ("model_type", "transformers_version", "layer_heads", "layer_intermediate", "architectures")}
    base.update(num_attention_heads=full, intermediate_size=max(inter))
    if all(h == full for h in heads) and len(set(inter)) == 1:
        return BertConfig(**base)
    return PrunedBertConfig(**base, layer_heads=heads, layer_intermediate=inter)


def rebuild(model: PreTrainedModel) -> PreTrainedModel:
    """The pruned model as an instance of the class its config names (plain
    BertForSequenceClassification / BertForQuestionAnswering, or their Pruned* twins), weights copied
    strictly: what `save_pretrained` then writes reloads with the Auto classes."""
    cfg = pruned_config(model)
    if isinstance(model, BertForQuestionAnswering):
        cls = PrunedBertForQuestionAnswering if isinstance(cfg, PrunedBertConfig) else BertForQuestionAnswering
    else:
        cls = PrunedBertForSequenceClassification if isinstance(cfg, PrunedBertConfig) else BertForSequenceClassification
    out = cls(cfg)
    out.load_state_dict(model.state_dict(), strict=True)
    return out.train(model.training)


def prune_structured(model: PreTrainedModel, importance: Importance, heads: float = 0.0, ffn: float = 0.0,
                     scope: str = "global") -> PreTrainedModel:
    """Remove the `heads` fraction of attention heads and the `ffn` fraction of FFN neurons with
    the lowest importance; returns a rebuilt model ready to save."""
    check_fraction("prune.heads", heads)
    check_fraction("prune.ffn", ffn)
    if heads:
        per_layer = [importance.heads[i, :h] for i, h in enumerate(layer_sizes(model)[0])]
        prune_heads_(model, lowest(per_layer, heads, scope, "prune.heads"))
    if ffn:
        prune_ffn_(model, lowest(importance.ffn, ffn, scope, "prune.ffn"))
    return rebuild(model)


# ---------------------------------------------------------------------------------------------
# Unstructured magnitude pruning (for comparison: dense kernels run no faster with it)


def prunable_weights(model: PreTrainedModel) -> list[tuple[nn.Linear, str]]:
    """Every encoder and pooler Linear weight (not the embeddings or the classifier)."""
    base = getattr(model, model.base_model_prefix, model)
    return [(m, "weight") for name, m in base.named_modules()
            if isinstance(m, nn.Linear) and not name.startswith("embeddings")]


def prune_unstructured_(model: PreTrainedModel, fraction: float) -> PreTrainedModel:
    """Global L1 magnitude pruning: zero the `fraction` smallest-magnitude weights over all
    encoder Linear layers, made permanent (no masks left: a plain dense model with zeros)."""
    from torch.nn.utils import prune

    check_fraction("unstructured fraction", fraction)
    params = prunable_weights(model)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=fraction)
    for module, name in params:
        prune.remove(module, name)
    return model


def sparsity(model: PreTrainedModel) -> float:
    """Fraction of zeros over the weights `prune_unstructured_` prunes."""
    ws = [m.weight for m, _ in prunable_weights(model)]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def sparse_bytes(model: PreTrainedModel) -> int:
    """Bytes of the model with its prunable weights stored as CSR (values in their dtype, int32
    column indexes, int32 row pointers) and every other tensor dense. At 50% sparsity with
    fp32 values CSR is no smaller than dense: each kept weight costs 4 bytes of index."""
    sparse = {id(m.weight) for m, _ in prunable_weights(model)}
    total = 0
    for p in model.state_dict(keep_vars=True).values():
        if id(p) in sparse:
            nnz = int((p != 0).sum())
            total += nnz * (p.element_size() + 4) + (p.shape[0] + 1) * 4
        else:
            total += p.numel() * p.element_size()
    return total

"""Structured and unstructured pruning on tiny random BERTs: exact parameter counts, reloadable
smaller dirs, sane importance ordering, sparsity, and refusals of bad fractions."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import make_tiny_bert
from transformers import AutoModelForSequenceClassification

from distillray.config import ConfigError, load_config
from distillray.inference import count_params
from distillray.models import load_classifier, load_tokenizer, save_model_dir
from distillray.models.prune import (
    importance_scores,
    layer_sizes,
    lowest,
    prune_ffn_,
    prune_heads_,
    prune_structured,
    prune_unstructured_,
    rebuild,
    sparse_bytes,
    sparsity,
)

HIDDEN, HEADS, LAYERS = 32, 4, 4
D = HIDDEN // HEADS  # head size


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("prune") / "bert", layers=LAYERS, hidden=HIDDEN, heads=HEADS)


def ids_and_mask(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """8 rows of 12 random token ids; the first 4 rows padded after 9 tokens."""
    ids = torch.randint(1000, 5000, (8, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[:4, 9:] = 0
    return ids, mask


def batches(n: int = 3, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids, mask = ids_and_mask(g)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (8,), generator=g)})
    return out


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_head_pruning_removes_exactly_the_heads_weights(tiny_dir):
    model = load_classifier(tiny_dir)
    before = count_params(model)
    pruned = prune_structured(model, importance_scores(model, batches()), heads=0.5)
    heads, inter = layer_sizes(pruned)
    assert sum(heads) == LAYERS * HEADS // 2 and min(heads) >= 1 and inter == [2 * HIDDEN] * LAYERS
    # each head: its D rows of query/key/value (weights and biases) and its D columns of the output dense
    assert before - count_params(pruned) == (LAYERS * HEADS // 2) * (4 * D * HIDDEN + 3 * D)
    assert pruned.config.model_type == "pruned_bert" and pruned.config.layer_heads == heads


def test_ffn_pruning_per_layer_gives_a_plain_bert(tiny_dir, tmp_path):
    model = load_classifier(tiny_dir)
    before = count_params(model)
    pruned = prune_structured(model, importance_scores(model, batches()), ffn=0.25, scope="layer")
    assert layer_sizes(pruned) == ([HEADS] * LAYERS, [48] * LAYERS)
    assert before - count_params(pruned) == LAYERS * 16 * (2 * HIDDEN + 1)
    save_model_dir(pruned, load_tokenizer(tiny_dir), tmp_path / "ffn")
    cfg = json.loads((tmp_path / "ffn" / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["intermediate_size"] == 48
    assert cfg["architectures"] == ["BertForSequenceClassification"]


def test_pruned_dir_is_smaller_and_reloads_with_the_same_predictions(tiny_dir, tmp_path):
    model = load_classifier(tiny_dir)
    pruned = prune_structured(model, importance_scores(model, batches()), heads=0.5, ffn=0.5)
    out = tmp_path / "pruned"
    save_model_dir(pruned, load_tokenizer(tiny_dir), out)
    weights = lambda d: sum(f.stat().st_size for f in d.glob("*.safetensors"))  # noqa: E731
    assert weights(out) < weights(tiny_dir) - 4 * (LAYERS * HEADS // 2) * 4 * D * HIDDEN
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)  # registered by import distillray.models
    assert type(reloaded).__name__ == "PrunedBertForSequenceClassification"
    assert layer_sizes(reloaded) == layer_sizes(pruned)
    for b in batches(2, seed=1):
        torch.testing.assert_close(logits(reloaded, b), logits(pruned, b), rtol=0, atol=1e-6)


def test_removing_heads_equals_gating_them_to_zero(tiny_dir):
    """The physically smaller model computes what the full one does with those heads switched off."""
    full = load_classifier(tiny_dir).eval()
    drop = [[0, 2], [1], [], [0, 1, 3]]
    gates = [torch.tensor([0.0 if h in d else 1.0 for h in range(HEADS)]) for d in drop]
    hooks = [lyr.attention.self.register_forward_hook(
        lambda _m, _i, out, g=g: ((out[0].view(*out[0].shape[:-1], HEADS, D) * g.view(-1, 1)).flatten(-2), *out[1:]))
        for lyr, g in zip(full.bert.encoder.layer, gates)]
    b = batches(1, seed=2)[0]
    want = logits(full, b)
    for h in hooks:
        h.remove()
    pruned = rebuild(prune_heads_(load_classifier(tiny_dir), drop))
    assert layer_sizes(pruned)[0] == [2, 3, 4, 1]
    torch.testing.assert_close(logits(pruned, b), want, rtol=0, atol=1e-5)
    assert not torch.allclose(logits(load_classifier(tiny_dir), b), want)  # the heads did matter


def test_importance_ranks_a_dead_head_and_dead_neurons_lowest(tiny_dir):
    model = load_classifier(tiny_dir)
    with torch.no_grad():  # layer 1, head 2 gets zero values: its output is 0 whatever its gate
        att = model.bert.encoder.layer[1].attention.self
        att.value.weight[2 * D:3 * D] = 0
        att.value.bias[2 * D:3 * D] = 0
        inter = model.bert.encoder.layer[2].intermediate.dense  # neurons 5 and 9: GELU(0) = 0
        inter.weight[[5, 9]] = 0
        inter.bias[[5, 9]] = 0
    scores = importance_scores(model, batches())
    assert scores.heads.shape == (LAYERS, HEADS) and (scores.heads >= 0).all()
    assert int(scores.heads[1].argmin()) == 2 and float(scores.heads[1, 2]) < 1e-6
    assert set(torch.argsort(scores.ffn[2])[:2].tolist()) == {5, 9}
    torch.testing.assert_close(scores.heads.norm(dim=1), torch.ones(LAYERS))  # Michel et al.'s per-layer norm
    assert lowest(list(scores.heads.unbind(0)), 0.25, "layer")[1] == [2]
    assert all(p.requires_grad for p in model.parameters())  # scoring restores the model


def test_global_selection_keeps_a_head_in_every_layer():
    scores = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([5.0, 6.0, 7.0])]
    assert lowest(scores, 0.5, "global") == [[0, 1], [0]]  # layer 0 keeps its best head
    assert lowest(scores, 0.9, "global") == [[0, 1], [0, 1]]
    assert lowest(scores, 0.4, "layer") == [[0], [0]]


def test_unstructured_reaches_its_sparsity_without_masks(tiny_dir):
    model = load_classifier(tiny_dir)
    dense = sparse_bytes(model)
    params = count_params(model)
    prune_unstructured_(model, 0.5)
    assert sparsity(model) == pytest.approx(0.5, abs=1e-3)
    assert count_params(model) == params  # same dense shapes: zeros, not removed weights
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in model.named_parameters())
    assert not any(n.endswith("_mask") for n, _ in model.named_buffers())
    assert sparse_bytes(model) > dense * 0.9  # CSR at 50% fp32 is not smaller: 4 bytes of index per value
    prune_unstructured_(load_classifier(tiny_dir), 0.9)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_bad_fractions_are_refused(tiny_dir, bad):
    model = load_classifier(tiny_dir)
    scores = importance_scores(model, batches(1))
    with pytest.raises(ConfigError, match=r"prune\.heads must be a fraction in \[0, 1\)"):
        prune_structured(model, scores, heads=bad)
    with pytest.raises(ConfigError, match="fraction"):
        prune_unstructured_(model, bad)
    with pytest.raises(ConfigError, match="prune.heads"):
        load_config(None, [f"prune.heads={bad}"])


def test_a_non_bert_model_is_refused_with_the_fix():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from distillray.errors import ModelError

    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2,
                                                                 hidden_dim=64))
    with pytest.raises(ModelError, match="supports BERT classifiers.*fix"):
        importance_scores(model, batches(1))


def qa_batches(n: int = 3, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """QA windows as `collate_qa` gives them: a 4-token question (segment 0), then the context."""
    from distillray.tasks.qa import answer_mask_from_types

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids, mask = ids_and_mask(g)
        types = torch.zeros_like(ids)
        types[:, 4:] = 1
        start = torch.randint(4, 8, (8,), generator=g)
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": types * mask,
                    "answer_mask": answer_mask_from_types(types * mask, mask),
                    "start_positions": start, "end_positions": start + 1})
    return out


def test_a_span_model_is_scored_on_its_start_end_loss_and_reloads_pruned(tmp_path):
    """QA: importance from the start/end CE on the gold positions; the pruned span model (fewer
    heads per layer: PrunedBertForQuestionAnswering) saves, and reloads through
    AutoModelForQuestionAnswering with the same start and end logits."""
    from transformers import AutoModelForQuestionAnswering

    from distillray.tasks.qa import is_qa_model, load_qa_model
    from tiny import make_tiny_qa_bert

    src = make_tiny_qa_bert(tmp_path / "qa", layers=LAYERS, hidden=HIDDEN, heads=HEADS)
    model = load_qa_model(src)
    before = count_params(model)
    scores = importance_scores(model, qa_batches())
    assert scores.heads.shape == (LAYERS, HEADS) and bool((scores.heads > 0).all())
    pruned = prune_structured(model, scores, heads=0.5, ffn=0.25)
    heads, inter = layer_sizes(pruned)
    assert sum(heads) == LAYERS * HEADS // 2 and sum(inter) == round(0.75 * LAYERS * 2 * HIDDEN)
    assert type(pruned).__name__ == "PrunedBertForQuestionAnswering" and count_params(pruned) < before
    out = save_model_dir(pruned, load_tokenizer(src), tmp_path / "pruned")
    assert is_qa_model(out)
    again = AutoModelForQuestionAnswering.from_pretrained(out).eval()
    b = qa_batches(1, seed=1)[0]
    inputs = {k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        want, got = pruned.eval()(**inputs), again(**inputs)
    assert torch.allclose(want.start_logits, got.start_logits, atol=1e-6)
    assert torch.allclose(want.end_logits, got.end_logits, atol=1e-6)
    # what the train loop does after recovering it: its architecture, the trained state dict
    from distillray.models import export_model

    export = export_model(out, again.state_dict(), str(tmp_path / "recovered"))
    assert type(AutoModelForQuestionAnswering.from_pretrained(export)).__name__ == "PrunedBertForQuestionAnswering"
